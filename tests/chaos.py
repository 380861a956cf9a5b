"""A seeded random-fault campaign: real runs, each struck once at a random instant of its life.

    python -m tests.chaos --runs 2000 --seed 7          # the whole campaign (make chaos)
    python -m tests.chaos --replay 7:413                # strike 413 of seed 7 again, alone
    python -m tests.chaos --runs 500 --first 500 --seed 7   # strikes 500-999 of seed 7 (a part)

Every strike starts a real run of one kind (a local run, an asynchronous API run and its keeper,
a local sweep, a git project through the cache, a uv environment built anew, a run tracked on a
real `mlflow server`), measures nothing about it, and strikes once at an instant drawn uniformly
from the whole life that kind of run was measured to have (resolving, cloning, building, locking,
starting the command, the command, the ends being recorded): SIGINT, SIGINT twice 50 ms apart,
SIGTERM, SIGHUP, SIGKILL of the runner, SIGKILL of the command's whole group, the tracking server
stopped (and started again 0.5-3 s later), or the disk filling (the run's MLPROJECT_HOME and store
on a small tmpfs). Then a later command reconciles (as any user's next command does), and the
invariants are checked:

- the runner (and a keeper it started) exited within 10 s of the strike plus the grace period;
- no run is left SCHEDULED or RUNNING, in the ledger or in the MLflow store;
- the ledger and the store agree on every run's status, and the ledger knows tracking has it;
- no process of any run is left (the run's marker in the environment: see runner.launch);
- no lock in MLPROJECT_HOME is held;
- the next run of the same project succeeds (no half-made environment or checkout is reused),
  and a uv project then has exactly one environment;
- a sweep resumed after the strike has each trial FINISHED exactly once;
- the exit code and the recorded status match the strike: 128+N means KILLED, 0 means FINISHED,
  a crash or a failure is FAILED with a reason.

Each strike's choices come from `Random(f"{seed}:{index}")`, so `--replay SEED:INDEX` strikes
the same kind of run with the same fault at the same instant of its life (the machine's load
still moves the phase a little: a violation found once is replayed deterministically by a
regression test through the runner's fault hook, runner/faults.py).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from procs import default_signals  # noqa: E402
from trackingproxy import FaultyProxy  # noqa: E402

PYTHON = sys.executable
MARKER = b"MLPROJECT_RUN_ID="
GRACE = 2.0  # MLPROJECT_KILL_GRACE of every struck run
EXIT_WITHIN = 10.0  # the invariant: a runner exits within this of the strike, plus the grace
FAULTS = ("SIGINT", "SIGINT*2", "SIGTERM", "SIGHUP", "SIGKILL", "KILL_GROUP", "TRACKING_DOWN", "DISK_FULL",
          "SLURMD_KILLED", "SLURMCTLD_RESTARTED")
QUICK_KINDS = ("local", "keeper", "sweep", "git", "uv")
CLUSTER_KINDS = ("slurm", "slurm-sweep")
ALL_KINDS = (*QUICK_KINDS, "server", "conda", "docker", *CLUSTER_KINDS, "ray")
# A kind's own faults, and those it is not struck with (see draw).
ONLY = {"TRACKING_DOWN": ("server",), "SLURMD_KILLED": CLUSTER_KINDS, "SLURMCTLD_RESTARTED": CLUSTER_KINDS}
NO_SMALL_DISK = ("uv", "server", "conda", "docker", *CLUSTER_KINDS, "ray")  # (what does not fit 24 MB, or is not ours)
TERMINAL = ("FINISHED", "FAILED", "KILLED")


@dataclass(frozen=True)
class Strike:
    seed: int
    index: int
    kind: str
    fault: str
    fraction: float  # where in the kind's measured life the strike lands, 0..1.05

    @property
    def replay(self) -> str:
        return f"{self.seed}:{self.index}"


@dataclass
class Outcome:
    strike: Strike
    at: float = 0.0  # seconds after the start
    landed: bool = True  # False: the run had ended (or its target did not exist) at the instant
    exit_code: int | None = None
    violations: list[str] = field(default_factory=list)


def draw(seed: int, index: int, kinds: tuple[str, ...], faults: tuple[str, ...]) -> Strike:
    rng = random.Random(f"{seed}:{index}")
    kind = rng.choice(kinds)
    usable = [f for f in faults if kind in ONLY.get(f, (kind,))]
    if kind in NO_SMALL_DISK:
        usable = [f for f in usable if f != "DISK_FULL"]
    return Strike(seed, index, kind, rng.choice(usable), rng.uniform(0.0, 1.05))


# -- the projects -------------------------------------------------------------------------
SHELL_PROJECT = "name: chaos\nentry_points:\n  main:\n    parameters:\n      x: {type: float, default: 0}\n" \
                "    command: \"echo begin {x}; sleep 0.6; echo end\"\n"
UV_PROJECT = ("name: chaos-uv\npython_env: python_env.yaml\nentry_points:\n  main:\n"
              # (SIGINT's default action: a Python traceback here would be the command's, not ours)
              "    command: \"python -c 'import signal, six, time; signal.signal(signal.SIGINT, signal.SIG_DFL);"
              " time.sleep(0.3); print(six.__version__)'\"\n")
UV_ENV = "python: '{python}'\ndependencies: [six==1.16.0]\n"


CONDA_PROJECT = ("name: chaos-conda\nconda_env: conda.yaml\nentry_points:\n  main:\n"
                 "    command: \"python -c 'import signal, pyhello, time; signal.signal(signal.SIGINT, signal.SIG_DFL);"
                 " time.sleep(0.3); print(pyhello.greet(1))'\"\n")
CONDA_ENV = "channels: [conda-forge]\ndependencies: [python=3.11, pyhello]\n"
DOCKER_PROJECT = ("name: chaos-docker\ndocker_env:\n  image: {image}\nentry_points:\n  main:\n"
                  "    command: \"echo begin; sleep 0.6; echo end\"\n")


def _write_projects(root: Path) -> dict[str, str]:
    shell = root / "shell"
    shell.mkdir(parents=True)
    (shell / "MLproject").write_text(SHELL_PROJECT)
    uv = root / "uv"
    uv.mkdir()
    (uv / "MLproject").write_text(UV_PROJECT)
    (uv / "python_env.yaml").write_text(UV_ENV.format(python=f"{sys.version_info.major}.{sys.version_info.minor}"))
    repo = root / "repo.git"
    work = root / "repo-work"
    shutil.copytree(shell, work)
    git = ["git", "-c", "user.name=chaos", "-c", "user.email=chaos@localhost", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "chaos"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(repo)], check=True)
    conda = root / "conda"
    conda.mkdir()
    (conda / "MLproject").write_text(CONDA_PROJECT)
    (conda / "conda.yaml").write_text(CONDA_ENV)
    docker = root / "docker"
    docker.mkdir()
    from dockerd import BASE_IMAGE

    (docker / "MLproject").write_text(DOCKER_PROJECT.format(image=BASE_IMAGE))
    return {"shell": str(shell), "uv": str(uv), "git": f"file://{repo}", "conda": str(conda), "docker": str(docker)}


@dataclass
class Components:
    """The real services some kinds of run need, started once for the campaign."""

    server: str | None = None  # an mlflow server's URL
    condarc: str | None = None  # a .condarc whose channel_alias is a local channel
    docker_host: str | None = None
    slurm: Any = None  # a tests.slurmcluster.SlurmCluster
    ray: Any = None  # a tests.raycluster.RayCluster
    slurm_lock: threading.Lock = field(default_factory=threading.Lock)  # one cluster-wide strike at a time


# -- one worker: its own home, store and projects -------------------------------------------------
class Worker:
    def __init__(self, root: Path, number: int, template_db: Path, components: Components):
        self.root = root / f"worker{number}"
        self.projects = _write_projects(self.root / "projects")
        self.home = self.root / "home"
        self.cwd = self.root / "cwd"
        self.cwd.mkdir(parents=True)
        shutil.copyfile(template_db, self.cwd / "mlflow.db")
        self.template_db = template_db
        self.full = self.root / "full"  # a small tmpfs: the disk that fills
        self.full.mkdir()
        self.components = components
        self.proxy = FaultyProxy(components.server) if components.server else None
        self.life: dict[str, float] = {}
        # MLflow runs found stuck by an earlier strike's check: the store outlives strikes, and a
        # run left behind once is that strike's violation, not every later one's.
        self.stuck_before: set[str] = set()

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        _unmount(self.full)

    # -- what a kind runs --------------------------------------------------------------
    def _env(self, home: Path, kind: str) -> dict[str, str]:
        env = {**os.environ, "MLPROJECT_HOME": str(home), "MLPROJECT_KILL_GRACE": f"{GRACE:g}",
               "MLPROJECT_TRACKING_RETRY_SECONDS": "1"}
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID",
                     "MLPROJECT_FAULT_AT", "MLPROJECT_RUN_ID"):
            env.pop(name, None)
        if kind == "server":
            env["MLFLOW_TRACKING_URI"] = self.proxy.url  # type: ignore[union-attr]
        if self.components.condarc:
            env["CONDARC"] = self.components.condarc
        if self.components.docker_host:
            env["DOCKER_HOST"] = self.components.docker_host
        if self.components.slurm is not None:
            env.update(self.components.slurm.env)
        env["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def argv(self, kind: str, x: int) -> list[str]:
        run = [PYTHON, "-m", "runner", "run"]
        if kind in ("local", "server"):
            return [*run, self.projects["shell"], "--env-manager", "local", "-P", f"x={x}"]
        if kind == "git":
            return [*run, self.projects["git"], "--env-manager", "local", "-P", f"x={x}"]
        if kind == "uv":
            return [*run, self.projects["uv"], "--env-manager", "uv"]
        if kind == "conda":
            return [*run, self.projects["conda"], "--env-manager", "conda"]
        if kind == "docker":
            return [*run, self.projects["docker"]]
        if kind == "slurm":
            return [*run, self.projects["shell"], "-b", "slurm", "-c", "{}", "--env-manager", "local", "-P", f"x={x}"]
        if kind == "ray":
            config = json.dumps({"address": self.components.ray.address})
            return [*run, self.projects["shell"], "-b", "ray", "-c", config, "--env-manager", "local", "-P", f"x={x}"]
        if kind == "slurm-sweep":
            return [PYTHON, "-m", "runner", "sweep", self.projects["shell"], "-P", f"x={x}.1,{x}.2,{x}.3",
                    "--max-parallel", "2", "--env-manager", "local", "-b", "slurm", "-c", "{}"]
        if kind == "sweep":
            return [PYTHON, "-m", "runner", "sweep", self.projects["shell"], "-P", f"x={x}.1,{x}.2,{x}.3",
                    "--max-parallel", "2", "--env-manager", "local"]
        if kind == "keeper":
            script = ("import sys, runner\n"
                      f"r = runner.run({self.projects['shell']!r}, env_manager='local', parameters={{'x': {x}}},"
                      " synchronous=False)\nsys.exit(0 if r.wait() else 1)\n")
            return [PYTHON, "-c", script]
        raise ValueError(kind)

    def measure(self, kinds: tuple[str, ...]) -> None:
        """Each kind's life, undisturbed (its environment and checkout made first)."""
        for kind in kinds:
            if kind in ("uv", "conda"):
                self._run(kind, 0, self.home, self.cwd)  # the build's downloads, once
                self._gc(self.home)
            if kind == "git":
                self._run(kind, 0, self.home, self.cwd)
                shutil.rmtree(self.home / "git", ignore_errors=True)  # measured with its clone
            started = time.monotonic()
            code, stderr = self._run(kind, 0, self.home, self.cwd)
            if code != 0:
                raise RuntimeError(f"an undisturbed {kind} run failed ({code}):\n{stderr[-3000:]}")
            self.life[kind] = time.monotonic() - started

    def _run(self, kind: str, x: int, home: Path, cwd: Path) -> tuple[int, str]:
        done = subprocess.run(self.argv(kind, x), cwd=cwd, env=self._env(home, kind), capture_output=True,
                              text=True, timeout=300)
        return done.returncode, done.stderr

    def _gc(self, home: Path) -> None:
        subprocess.run([PYTHON, "-m", "runner", "env", "gc", "--older-than", "0"], env=self._env(home, "uv"),
                       capture_output=True, timeout=120)

    # -- one strike --------------------------------------------------------------------
    def strike(self, strike: Strike) -> Outcome:
        import contextlib

        # One cluster run struck at a time: a lost node or a restarted controller hits every job on it.
        with self.components.slurm_lock if strike.kind in CLUSTER_KINDS else contextlib.nullcontext():
            return self._strike(strike)

    def _strike(self, strike: Strike) -> Outcome:
        outcome = Outcome(strike)
        home, cwd = self.home, self.cwd
        if strike.fault == "DISK_FULL":
            home, cwd = self._small_disk()
        if strike.kind in ("uv", "conda") and strike.index % 2 == 0:
            self._gc(home)  # every other uv or conda strike builds its environment anew
        if strike.kind == "git" and strike.index % 3 == 0:
            shutil.rmtree(home / "git", ignore_errors=True)  # and every third git strike clones anew
        since = time.time()
        life = self.life[strike.kind]
        outcome.at = strike.fraction * life
        stderr_file = tempfile.TemporaryFile()
        proc = subprocess.Popen(self.argv(strike.kind, strike.index), cwd=cwd, env=self._env(home, strike.kind),
                                stdout=subprocess.DEVNULL, stderr=stderr_file, start_new_session=True,
                                preexec_fn=default_signals)  # (seed 20261209 ran under nohup)
        time.sleep(outcome.at)
        struck_at = time.monotonic()
        outcome.landed = self._hit(strike, proc, home)
        # A lost node is declared after SlurmdTimeout (5 s here) and the job then ends NODE_FAIL.
        # A restarted controller takes its jobs back at its own pace: the runner follows them to their end.
        extra = {"TRACKING_DOWN": 3.0, "SLURMD_KILLED": 30.0, "SLURMCTLD_RESTARTED": 90.0}.get(strike.fault, 0.0)
        limit = struck_at + EXIT_WITHIN + GRACE + extra
        code = _wait(proc, limit)
        keepers_left = _wait_for_keepers(home, limit)
        if strike.fault == "TRACKING_DOWN" and self.proxy is not None:
            self.proxy.restart_if_stopped()
        if strike.fault == "SLURMD_KILLED":
            self._return_nodes()
        if strike.kind in CLUSTER_KINDS:
            self._wait_for_empty_queue(60)
            self.components.slurm.return_to_service()  # (each strike starts on a working cluster)
        if strike.fault == "DISK_FULL":
            (home.parent / "filler").unlink(missing_ok=True)
        stderr_file.seek(0)
        stderr = stderr_file.read().decode(errors="replace")
        stderr_file.close()
        if os.environ.get("CHAOS_VERBOSE"):
            print(f"--- {strike.replay} {strike.kind} {strike.fault} exit {code}:\n{stderr[-2500:]}", file=sys.stderr)
        # Where it hangs, for the one reading the report (py-spy: on PATH, or beside this Python).
        spy = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
        if code is None and spy:
            dump = subprocess.run([spy, "dump", "--pid", str(proc.pid)], capture_output=True, text=True)
            outcome.violations.append("stacks: " + dump.stdout[-3000:])
        if code is None:
            outcome.violations.append(f"the runner did not exit within {EXIT_WITHIN + GRACE:g} s of the strike"
                                      f" (its last words: {stderr.strip()[-300:]!r})")
            _kill_everything(proc)
        outcome.exit_code = code
        if keepers_left:
            outcome.violations.append(f"a keeper was still running {EXIT_WITHIN + GRACE:g} s after the strike")
        # (The keeper kind's caller is a user's script: a RunnerError raised to it, or its own Ctrl-C as
        # KeyboardInterrupt, uncaught there, is Python and the API doing as documented.)
        last = (stderr.strip().splitlines() or [""])[-1]
        api_error = strike.kind == "keeper" and (last.startswith("runner.errors.") or last == "KeyboardInterrupt")
        if "Could not import runpy module" in stderr or "Fatal Python error: init_" in stderr or (
                "Traceback" in stderr and "/runner/" not in stderr[stderr.index("Traceback"):]):
            # Struck inside the interpreter's own start (`Could not import runpy module`, `Fatal
            # Python error: init_import_site`, exit 1), before the runner's first line: nothing of
            # ours existed to handle it.
            outcome.landed = False
        elif code not in (None, 0) and "Traceback" in stderr and strike.fault != "SIGKILL" and not api_error:
            shown = stderr[stderr.index("Traceback"):][-2500:] if os.environ.get("CHAOS_VERBOSE") else stderr.strip().splitlines()[-1][:200]
            outcome.violations.append("a traceback: " + shown)
        self._check(strike, outcome, home, cwd, since, stderr)
        if strike.fault == "DISK_FULL":
            _unmount(self.full)
        return outcome

    def _wait_for_cluster_runs(self, strike: Strike, home: Path, cwd: Path, seconds: float) -> None:
        """A cluster's job goes on when its submitter is killed: its run ends when the job does, as
        the next command finds (each `runs list` reconciles). Given that long, not judged before."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            listed = subprocess.run([PYTHON, "-m", "runner", "runs", "list", "--json", "--limit", "10000"], cwd=cwd,
                                    env=self._env(home, strike.kind), capture_output=True, text=True, timeout=120)
            try:
                if all(row["status"] in TERMINAL for row in json.loads(listed.stdout)):
                    return
            except ValueError:
                return  # (judged by the check itself)
            time.sleep(1.0)

    def _return_nodes(self) -> None:
        cluster = self.components.slurm
        lost = getattr(self, "_lost", None)
        if lost is not None:
            cluster.return_node(lost)
            self._lost = None

    def _wait_for_empty_queue(self, seconds: float) -> None:
        """Cluster runs: the jobs the strike left are given time to end as their cluster decides."""
        cluster = self.components.slurm
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not cluster.command("squeue", "-h", "-o", "%i").stdout.strip():
                return
            time.sleep(0.3)

    def _small_disk(self) -> tuple[Path, Path]:
        _unmount(self.full)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(self.full)], check=True)
        home, cwd = self.full / "home", self.full / "cwd"
        cwd.mkdir(parents=True)
        shutil.copyfile(self.template_db, cwd / "mlflow.db")
        return home, cwd

    def _hit(self, strike: Strike, proc: subprocess.Popen, home: Path) -> bool:
        """Strike now; False when what it aims at was no longer there."""
        if proc.poll() is not None and strike.fault not in ("TRACKING_DOWN", "DISK_FULL"):
            return False
        fault = strike.fault
        if fault == "TRACKING_DOWN":
            self.proxy.stop()  # type: ignore[union-attr]
            threading.Timer(random.Random(strike.replay).uniform(0.5, 3.0), self.proxy.restart_if_stopped).start()  # type: ignore[union-attr]
            return proc.poll() is None
        if fault == "DISK_FULL":
            _fill(home.parent / "filler")
            return proc.poll() is None
        if fault == "SLURMD_KILLED":  # the node running the job (or, before it runs, n2)
            cluster = self.components.slurm
            nodes = cluster.command("squeue", "-h", "-t", "RUNNING", "-o", "%N").stdout.split()
            self._lost = nodes[0] if nodes else "n2"
            cluster.lose_node(self._lost)
            return bool(nodes)
        if fault == "SLURMCTLD_RESTARTED":
            self.components.slurm.restart_controller()
            return proc.poll() is None
        if fault == "KILL_GROUP":
            groups = {os.getpgid(pid) for pid in _marked_processes(home) if _pgid_or_none(pid) is not None}
            for group in groups:
                try:
                    os.killpg(group, signal.SIGKILL)
                except OSError:
                    pass
            return bool(groups)
        target = proc.pid
        if strike.kind == "keeper":  # the keeper is the run's runner, once it exists
            target = next(iter(_keepers_of(proc.pid)), proc.pid)
        name, _, times = fault.partition("*")
        try:
            for number in range(int(times or 1)):
                if number:
                    time.sleep(0.05)
                os.kill(target, getattr(signal, name))
        except ProcessLookupError:
            return False
        return True

    # -- the invariants ----------------------------------------------------------------
    def _check(self, strike: Strike, outcome: Outcome, home: Path, cwd: Path, since: float, stderr: str) -> None:
        v = outcome.violations
        if strike.kind in (*CLUSTER_KINDS, "ray"):
            self._wait_for_cluster_runs(strike, home, cwd, 90)
        reconcile = subprocess.run([PYTHON, "-m", "runner", "runs", "list", "--json", "--limit", "10000"], cwd=cwd,
                                   env=self._env(home, strike.kind), capture_output=True, text=True, timeout=120)
        if reconcile.returncode != 0:
            v.append(f"`runs list` after the strike failed: {reconcile.stderr.strip()[-300:]}")
            return
        rows = json.loads(reconcile.stdout)
        tracked = self._tracked_statuses(strike.kind, cwd, rows)
        for row in rows:
            if row["status"] not in TERMINAL:
                v.append(f"run {row['id']} left {row['status']} in the ledger")
            tracking_id = row.get("tracking_run_id")
            if tracking_id:
                status = tracked.get(tracking_id)
                if status is not None and status != row["status"]:
                    v.append(f"run {row['id']}: ledger {row['status']}, MLflow {status}")
                if row["status"] in TERMINAL and not row.get("tracking_ended"):
                    v.append(f"run {row['id']}: its end never reached tracking")
            if row["status"] == "FAILED" and not row.get("reason") and row.get("exit_code") in (None, 0):
                v.append(f"run {row['id']} FAILED with no reason and no exit code")
        stuck = [run_id for run_id, status in tracked.items()
                 if status not in TERMINAL and run_id not in self.stuck_before]
        if stuck:
            self.stuck_before.update(stuck)
            v.append(f"{len(stuck)} MLflow run(s) left {sorted(set(tracked[s] for s in stuck))}: "
                     + "; ".join(self._described(cwd, run_id) for run_id in stuck))
        left = _wait_until_gone(home, 3.0)
        if left:
            v.append(f"{len(left)} process(es) of a run left: {_cmdlines(left)}")
        held = _held_locks(home)
        if held:
            v.append(f"lock(s) held: {held}")
        if strike.kind == "docker":
            listed = subprocess.run(["docker", "ps", "-a", "--filter", "label=mlproject.run_id", "--format",
                                     '{{.Label "mlproject.run_id"}}: {{.Status}}'],
                                    env=self._env(home, "docker"), capture_output=True, text=True).stdout.splitlines()
            ours = _run_ids(home)
            left_containers = [line for line in listed if line.split(":")[0].encode() in ours
                               and "Removal In Progress" not in line]
            if left_containers:
                v.append(f"container(s) left: {left_containers}")
        if strike.kind in CLUSTER_KINDS:
            queued = self.components.slurm.command("squeue", "-h", "-o", "%i %T").stdout.strip()
            if queued:
                v.append(f"jobs left in the queue: {queued}")
        mine = [row for row in rows if row["start_time"] >= since]
        self._check_codes(strike, outcome, mine)
        if strike.kind in ("sweep", "slurm-sweep"):
            self._check_sweep(strike, outcome, home, cwd, stderr)
        elif strike.kind in ("uv", "git", "conda") or strike.fault == "DISK_FULL":
            code, next_stderr = self._run(strike.kind, strike.index, home, cwd)
            if code != 0:
                v.append(f"the next run failed ({code}): {next_stderr.strip()[-300:]}")
            if strike.kind == "uv":
                envs = [p for p in (home / "envs").glob("uv-*") if (p / ".mlproject" / "complete").exists()]
                if len(envs) != 1:
                    v.append(f"{len(envs)} complete uv environments after the next run")

    def _check_codes(self, strike: Strike, outcome: Outcome, mine: list[dict]) -> None:
        v, code, fault = outcome.violations, outcome.exit_code, strike.fault
        statuses = [row["status"] for row in mine if row.get("backend") != "sweep"]
        parents = [row["status"] for row in mine if row.get("backend") == "sweep"]
        said = "; ".join(f"{row['status']}: {row.get('reason')}" for row in mine if row["status"] != "FINISHED")
        before = len(v)
        if code == 0 and any(s != "FINISHED" for s in statuses + parents):
            v.append(f"exit code 0 but runs recorded {sorted(statuses + parents)}")
        if fault in ("SIGINT", "SIGINT*2", "SIGTERM", "SIGHUP") and strike.kind != "keeper":
            signum = getattr(signal, fault.split("*")[0])
            if code == -signum and mine:  # (struck before its handlers existed: nothing may exist yet)
                v.append(f"the runner died of {fault} with runs recorded {sorted(statuses + parents)}")
            elif code not in (None, 0, 128 + signum, -signum) and (outcome.landed or mine):
                # (Struck inside CPython's own start, before the runner's first line, with nothing
                # recorded: the exit code is the interpreter's, 1 for a failed `site` import.)
                v.append(f"exit code {code} after {fault}")
            if code == 128 + signum:
                # A sweep's trials that ended before the strike keep their outcome; its parent is KILLED.
                wrong = [s for s in statuses if s != "KILLED" and not (strike.kind in ("sweep", "slurm-sweep")
                                                                           and s == "FINISHED")]
                if wrong or any(s != "KILLED" for s in parents):
                    v.append(f"exit code {code} after {fault} but runs recorded {sorted(statuses + parents)}")
        if fault in ("SIGKILL", "KILL_GROUP") and "KILLED" in statuses and strike.kind not in ("sweep", "slurm-sweep"):
            v.append(f"{fault} recorded a run KILLED (a crash is FAILED)")
        if len(v) > before and said:
            v.append(f"(recorded: {said[:300]})")

    def _check_sweep(self, strike: Strike, outcome: Outcome, home: Path, cwd: Path, stderr: str) -> None:
        v = outcome.violations
        sweep_id = next((line.split()[1].rstrip(":") for line in stderr.splitlines()
                         if line.startswith("sweep ") and "trial(s) to run" in line), None)
        if sweep_id is None:
            return  # struck before the sweep was recorded: nothing to resume
        if outcome.exit_code != 0:
            resumed = subprocess.run([PYTHON, "-m", "runner", "sweep", "--resume", sweep_id], cwd=cwd,
                                     env=self._env(home, strike.kind), capture_output=True, text=True, timeout=300)
            # (a trial whose command was killed from outside, or that met a full disk, failed with a
            # reason: kept by design, and the sweep is FAILED)
            if resumed.returncode != 0 and strike.fault not in ("KILL_GROUP", "DISK_FULL"):
                v.append(f"the resumed sweep failed ({resumed.returncode}): {resumed.stderr.strip()[-300:]}; "
                         f"failed runs: {_failed_reasons(home)}")
                return
        with sqlite3.connect(cwd / "mlflow.db") as db:
            parent = db.execute("SELECT run_uuid FROM tags WHERE key = 'mlproject.sweep.id' AND value = ?",
                                (sweep_id,)).fetchone()
            if parent is None:
                v.append(f"sweep {sweep_id}: no parent run in MLflow")
                return
            finished = db.execute(
                "SELECT p.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'mlflow.parentRunId'"
                " JOIN params p ON p.run_uuid = r.run_uuid AND p.key = 'x' WHERE t.value = ? AND r.status = 'FINISHED'",
                (parent[0],)).fetchall()
        counts = Counter(value for (value,) in finished)
        wanted = {f"{strike.index}.{n}" for n in (1, 2, 3)}
        twice = {x: n for x, n in counts.items() if n > 1}
        if twice:
            v.append(f"sweep {sweep_id}: trials FINISHED more than once: {twice}")
        elif set(counts) != wanted and strike.fault not in ("KILL_GROUP", "DISK_FULL"):
            v.append(f"sweep {sweep_id}: trials FINISHED {sorted(counts)}, wanted each of {sorted(wanted)}")

    def _described(self, cwd: Path, run_id: str) -> str:
        """What a stuck run is (its tags), to tell which strike and which stage left it."""
        try:
            with sqlite3.connect(cwd / "mlflow.db") as db:
                tags = dict(db.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)))
        except sqlite3.Error:
            return run_id
        shown = {k: v for k, v in tags.items() if k in ("mlflow.runName", "mlproject.attempt", "mlflow.parentRunId",
                                                        "mlproject.sweep", "mlflow.project.entryPoint")}
        return f"{run_id} {shown}"

    def _tracked_statuses(self, kind: str, cwd: Path, rows: list[dict]) -> dict[str, str]:
        """The MLflow status of every run in this worker's store, and of each row tracked on the server."""
        statuses: dict[str, str] = {}
        try:
            with sqlite3.connect(cwd / "mlflow.db") as db:
                statuses.update(db.execute("SELECT run_uuid, status FROM runs"))
        except sqlite3.Error:
            pass
        served = [row["tracking_run_id"] for row in rows
                  if row.get("tracking_run_id") and str(row.get("tracking_uri") or "").startswith("http")]
        if served and self.proxy is not None:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(self.proxy.url)
            for run_id in served:
                statuses[run_id] = client.get_run(run_id).info.status
        return statuses


# -- processes, locks and disks ----------------------------------------------------------------
def _environ(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return handle.read().split(b"\0")
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _failed_reasons(home: Path) -> list[str]:
    try:
        with sqlite3.connect(f"file:{home / 'ledger.db'}?mode=ro", uri=True) as db:
            return [f"{row[0][:8]} {row[1]}: {row[2]}" for row in
                    db.execute("SELECT id, backend, reason FROM runs WHERE status = 'FAILED' ORDER BY start_time DESC LIMIT 4")]
    except sqlite3.Error:
        return []


def _run_ids(home: Path) -> set[bytes]:
    try:
        with sqlite3.connect(f"file:{home / 'ledger.db'}?mode=ro", uri=True) as db:
            return {row[0].encode() for row in db.execute("SELECT id FROM runs")}
    except sqlite3.Error:
        return set()


def _marked_processes(home: Path) -> list[int]:
    """Live processes of a run (its marker) started under this MLPROJECT_HOME, or of a run in its
    ledger wherever it runs (a Ray node has an MLPROJECT_HOME of its own)."""
    wanted = f"MLPROJECT_HOME={home}".encode()
    ids = _run_ids(home)
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            environ = _environ(int(name))
            marks = [item[len(MARKER):] for item in environ if item.startswith(MARKER)]
            if marks and (wanted in environ or ids.intersection(marks)) and _alive(int(name)):
                found.append(int(name))
    return found


def _pgid_or_none(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _keepers_of(caller: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                parent = int(handle.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except (OSError, IndexError, ValueError):
            continue
        if parent == caller and b"runner.keeper" in cmdline and _alive(int(name)):
            found.append(int(name))
    return found


def _wait(proc: subprocess.Popen, until: float) -> int | None:
    try:
        return proc.wait(timeout=max(0.0, until - time.monotonic()))
    except subprocess.TimeoutExpired:
        return None


def _wait_for_keepers(home: Path, until: float) -> bool:
    """True if a keeper of this MLPROJECT_HOME was still running at `until`."""
    wanted = f"MLPROJECT_HOME={home}".encode()
    keepers = [pid for pid in os.listdir("/proc") if pid.isdigit() and b"runner.keeper" in _cmdline(int(pid))
               and wanted in _environ(int(pid))]
    while time.monotonic() < until:
        keepers = [pid for pid in keepers if _alive(int(pid))]
        if not keepers:
            return False
        time.sleep(0.05)
    return bool(keepers)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _cmdlines(pids: list[int]) -> str:
    return "; ".join(_cmdline(pid).replace(b"\0", b" ").decode(errors="replace").strip()[:80] for pid in pids[:3])


def _wait_until_gone(home: Path, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _marked_processes(home)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _kill_everything(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()


def _held_locks(home: Path) -> list[str]:
    import fcntl

    held = []
    for path in home.rglob("*.lock") if home.exists() else ():
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.append(str(path.relative_to(home)))
        finally:
            os.close(fd)
    return held


def _fill(path: Path) -> None:
    """Write until the file system is full."""
    block = b"\0" * (1 << 20)
    try:
        with open(path, "wb") as handle:
            while True:
                handle.write(block)
                handle.flush()
    except OSError:
        pass


def _unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


# -- the campaign --------------------------------------------------------------------------
def _template_db(root: Path) -> Path:
    """An empty MLflow store made once by MLflow itself."""
    path = root / "template.db"
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{path}").search_experiments()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (str(root / "mlruns" / "0"),))
    return path


def _start_server(root: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([PYTHON, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{root}/server.db", "--artifacts-destination",
                             str(root / "server-artifacts"), "--workers", "1"],
                            stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.3)
    raise RuntimeError("the mlflow server did not start: " + (root / "server.log").read_text()[-2000:])


@dataclass
class Report:
    outcomes: list[Outcome]
    seconds: float
    life: dict[str, float]

    @property
    def violations(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.violations]

    def table(self) -> list[str]:
        made: dict[tuple[str, str], int] = defaultdict(int)
        landed: dict[tuple[str, str], int] = defaultdict(int)
        bad: dict[tuple[str, str], int] = defaultdict(int)
        for o in self.outcomes:
            key = (o.strike.kind, o.strike.fault)
            made[key] += 1
            landed[key] += o.landed
            bad[key] += bool(o.violations)
        lines = ["| run | strike | strikes | landed on a live run | violations |", "|---|---|---|---|---|"]
        for key in sorted(made):
            lines.append(f"| {key[0]} | {key[1]} | {made[key]} | {landed[key]} | {bad[key]} |")
        return lines


def _components(root: Path, kinds: tuple[str, ...], server: str | None, stack) -> Components:
    """Start what the kinds need; `stack` (an ExitStack) stops it all."""
    components = Components(server=server)
    if "server" in kinds and server is None:
        process, components.server = _start_server(root)

        def stop_server() -> None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)

        stack.callback(stop_server)
    if "conda" in kinds:
        from condachannel import build_channel, condarc

        build_channel(root / "channels" / "conda-forge")
        components.condarc = str(condarc(root / "condarc", channel_alias=f"file://{root / 'channels'}"))
    if "docker" in kinds:
        from dockerd import Daemon

        daemon = Daemon()
        stack.callback(daemon.stop)
        daemon.start()
        daemon.load_base_image()
        components.docker_host = daemon.host
    if any(kind in CLUSTER_KINDS for kind in kinds):
        from slurmcluster import SlurmCluster

        cluster = SlurmCluster()
        stack.callback(cluster.stop)
        cluster.start()
        stack.enter_context(cluster.node_timeout(5))  # (a lost node is declared in seconds, not 5 minutes)
        components.slurm = cluster
    if "ray" in kinds:
        from raycluster import RayCluster

        ray = RayCluster()
        stack.callback(ray.stop)
        ray.start()
        components.ray = ray
    return components


def campaign(runs: int, seed: int, workers: int = 2, kinds: tuple[str, ...] = QUICK_KINDS,
             faults: tuple[str, ...] = FAULTS, indexes: list[int] | None = None, say=print,
             server: str | None = None) -> Report:
    """`server`: a running `mlflow server` for the server kind (else one is started and stopped)."""
    import contextlib

    if os.geteuid() != 0 and "DISK_FULL" in faults:
        raise RuntimeError("the DISK_FULL strike mounts a small tmpfs and needs root (or leave DISK_FULL out)")
    root = Path(tempfile.mkdtemp(prefix="mlproject-chaos-"))
    stack = contextlib.ExitStack()
    try:
        template = _template_db(root)
        components = _components(root, kinds, server, stack)
        pool = [Worker(root, n, template, components) for n in range(workers)]
        started = time.monotonic()
        for worker in pool:
            worker.measure(kinds)
        say("chaos: lives measured: " + ", ".join(f"{k} {v:.2f} s" for k, v in pool[0].life.items()))
        strikes = [draw(seed, i, kinds, faults) for i in (indexes if indexes is not None else range(runs))]
        outcomes: list[Outcome] = []
        lock = threading.Lock()
        queue = list(strikes)

        def work(worker: Worker) -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    strike = queue.pop(0)
                try:
                    outcome = worker.strike(strike)
                except Exception as exc:  # noqa: BLE001 - the campaign's own failure is reported, not lost
                    import traceback

                    outcome = Outcome(strike, violations=[f"the campaign failed: {exc!r}: "
                                                          + traceback.format_exc()[-1500:]])
                with lock:
                    outcomes.append(outcome)
                    if outcome.violations:
                        say(f"chaos: VIOLATION {strike.replay} {strike.kind} {strike.fault} at {outcome.at:.2f} s: "
                            + " | ".join(outcome.violations))
                    if len(outcomes) % 25 == 0:
                        say(f"chaos: {len(outcomes)}/{len(strikes)} strikes, "
                            f"{sum(bool(o.violations) for o in outcomes)} with violations, "
                            f"{time.monotonic() - started:.0f} s")

        threads = [threading.Thread(target=work, args=(w,)) for w in pool]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for worker in pool:
            worker.close()
        outcomes.sort(key=lambda o: o.strike.index)
        return Report(outcomes, time.monotonic() - started, pool[0].life)
    finally:
        stack.close()
        for leftover in root.glob("worker*/full"):
            _unmount(leftover)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--first", type=int, default=0, metavar="INDEX",
                        help="the first strike's index: one seed's campaign split into parts (--first 1000 --runs 1000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kinds", default=",".join(ALL_KINDS), help=f"of: {', '.join(ALL_KINDS)}")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"of: {', '.join(FAULTS)}")
    parser.add_argument("--replay", default=None, metavar="SEED:INDEX[,INDEX...]", help="these strikes only")
    args = parser.parse_args()
    kinds = tuple(args.kinds.split(","))
    seed, indexes = args.seed, None
    if args.replay:
        seed_text, _, index_text = args.replay.partition(":")
        seed, indexes = int(seed_text), [int(i) for i in index_text.split(",")]
    if indexes is None:
        indexes = list(range(args.first, args.first + args.runs))
    report = campaign(args.runs, seed, args.workers, kinds, tuple(args.faults.split(",")), indexes)
    print(f"chaos: seed {seed}: {len(report.outcomes)} strikes in {report.seconds:.0f} s, "
          f"{sum(o.landed for o in report.outcomes)} on a live run, {len(report.violations)} with violations")
    for line in report.table():
        print(line)
    for outcome in report.violations:
        print(f"replay with --replay {outcome.strike.replay}: {outcome.strike.kind} {outcome.strike.fault} "
              f"at {outcome.at:.2f} s: " + " | ".join(outcome.violations))
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
