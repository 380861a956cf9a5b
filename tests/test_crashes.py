"""The runner SIGKILLed at random moments (git fetch, environment build, run start, the
command, the run's end), many times: afterwards no half-made environment is
reused, the next run succeeds, every started run is ended in the ledger and in
tracking, and nothing the killed runs started is left running.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

from conftest import free_port, pid_alive


def _ledger_statuses(home) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(home / "ledger.db") as conn:
        return conn.execute("select id, status, tracking_run_id from runs").fetchall()


def _processes_of(run_ids: set[str]) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"MLPROJECT_RUN_ID=") and item[len(b"MLPROJECT_RUN_ID="):].decode() in run_ids:
                if pid_alive(int(pid)):
                    found.append(int(pid))
    return found


def _crash_rng() -> random.Random:
    return random.Random(int(os.environ.get("MLPROJECT_CRASH_SEED", "20261121")))


def _run_and_kill(args: list[str], rng: random.Random, low: float, high: float, env: dict | None = None) -> bool:
    """Start `mlproject <args>`, SIGKILL it after a random low..high s; True if it was still going."""
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(low, high))
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return killed


def test_sigkill_at_random_moments(make_project, mlproject_home, _work_in_tmp, cli):
    root = make_project(
        "name: crashy\npython_env: python_env.yaml\nentry_points:\n  main:\n"
        "    command: \"python -c 'import time, six; time.sleep(1.0); print(six.__version__)'\"\n",
        {"python_env.yaml": "python: '3.11'\ndependencies: [six==1.16.0]\n"},
    )
    assert cli("env", "build", str(root)).returncode == 0  # warms uv's cache: builds below take ~0.3-1 s
    rng = _crash_rng()
    kills = 0
    for attempt in range(14):
        if attempt % 2 == 0:  # every other attempt rebuilds, so kills also land inside builds
            cli("env", "gc", "--older-than", "0")
        kills += _run_and_kill(["run", str(root)], rng, 0.05, 1.2)
    assert kills >= 7, f"only {kills} of 14 runs were still going when killed: the timing needs adjusting"

    result = cli("run", str(root))  # reconciles every orphan before it starts
    assert result.returncode == 0, result.stderr
    assert "1.16.0" in result.stdout
    statuses = _ledger_statuses(mlproject_home)
    assert all(status != "RUNNING" for _, status, _ in statuses), statuses
    with sqlite3.connect(_work_in_tmp / "mlflow.db") as conn:
        stuck = conn.execute("select run_uuid from runs where status = 'RUNNING'").fetchall()
    assert stuck == [], f"{len(stuck)} MLflow run(s) left RUNNING"
    deadline = time.monotonic() + 10
    while _processes_of({run_id for run_id, _, _ in statuses}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_of({run_id for run_id, _, _ in statuses}) == []
    assert not list((mlproject_home / "pending").glob("*.json"))  # every note cleared or acted on
    listing = cli("env", "list")
    assert listing.returncode == 0 and "uv" in listing.stdout


def _dead_runners_note(attempt: str, uri: str, run_id: str | None = None):
    """A pending note as a runner writes it before sending the run's creation, from a runner that died."""
    from runner.tracking import pending

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    note = pending.note(attempt, uri, None, "0", run_id)
    data = json.loads(note.read_text())
    data["pid"] = dead.pid
    note.write_text(json.dumps(data))
    return note


def test_run_created_in_tracking_but_not_in_the_ledger_is_ended(mlproject_home, _work_in_tmp, cli):
    """The narrowest window: the creation was sent, the runner was killed before it read the
    answer (so it never knew the run's ID). The run is found by its attempt tag and ended."""
    from mlflow.tracking import MlflowClient

    from runner.tracking import pending

    uri = f"sqlite:///{_work_in_tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    orphan = client.create_run("0", tags={pending.ATTEMPT_TAG: "a1" * 12})
    bystander = client.create_run("0", tags={pending.ATTEMPT_TAG: "b2" * 12})  # another runner's, alive
    known = client.create_run("0")  # a continued run (--run-id): the note names it
    notes = [_dead_runners_note("a1" * 12, uri), _dead_runners_note("c3" * 12, uri, known.info.run_id)]
    assert cli("runs", "list", env={"MLFLOW_TRACKING_URI": uri}).returncode == 0  # any invocation reconciles
    assert client.get_run(orphan.info.run_id).info.status == "FAILED"
    assert client.get_run(known.info.run_id).info.status == "FAILED"
    assert client.get_run(bystander.info.run_id).info.status == "RUNNING"
    assert not any(note.exists() for note in notes)


def test_run_created_over_rest_whose_answer_was_lost_is_ended(mlproject_home, mlflow_server, cli, tmp_path):
    """The same window against a tracking server: found with runs/search by the attempt tag.
    While the server is unreachable the note is kept for a later invocation."""
    from mlflow.tracking import MlflowClient

    from runner.tracking import pending

    client = MlflowClient(mlflow_server)
    orphan = client.create_run("0", tags={pending.ATTEMPT_TAG: "d4" * 12})
    note = _dead_runners_note("d4" * 12, mlflow_server)
    down = f"http://127.0.0.1:{free_port()}"
    unreachable = _dead_runners_note("e5" * 12, down)
    assert cli("runs", "list").returncode == 0
    assert client.get_run(orphan.info.run_id).info.status == "FAILED"
    assert not note.exists()
    assert unreachable.exists(), "a note whose server is down must wait for the next invocation"


def test_sigkill_while_a_slow_server_creates_the_run(make_project, mlproject_home, mlflow_server, cli):
    """SIGKILL lands while a slow tracking server is still answering the run's creation (or
    before it even forwarded it): the next invocation still finds every such run and ends it."""
    from mlflow.tracking import MlflowClient

    from runner.tracking import pending
    from trackingproxy import FaultyProxy

    project = make_project("name: t\nentry_points:\n  main:\n    command: 'sleep 0.3'\n")
    experiment = f"crash-{os.urandom(4).hex()}"
    proxy = FaultyProxy(mlflow_server, delay={"runs/create": 0.6})
    env = {**os.environ, "MLFLOW_TRACKING_URI": proxy.url}
    rng = _crash_rng()
    try:
        for _ in range(6):
            _run_and_kill(["run", str(project), "--env-manager", "local", "--experiment-name", experiment], rng, 0.3, 1.2, env)
        time.sleep(1.0)  # the proxy's last delayed creation reaches the server
        assert cli("runs", "list", env={"MLFLOW_TRACKING_URI": proxy.url}).returncode == 0
    finally:
        proxy.close()
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert runs, "no run was created at all: the timing needs adjusting"
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
    for note in (mlproject_home / "pending").glob("*.json"):  # kept only for creations never sent
        attempt = json.loads(note.read_text())["attempt"]
        assert not [r for r in runs if r.data.tags.get(pending.ATTEMPT_TAG) == attempt], note.read_text()


def test_sigkill_during_git_fetches(tmp_path, mlproject_home, _work_in_tmp, cli):
    """SIGKILL while a git project is cloned, checked out or run (its repository holds a 24 MB
    file, so clones take a while): afterwards the next run succeeds from a sound mirror and
    checkout, and no half-made one is in use."""
    from gitservers import git, make_demo_repo

    repo = make_demo_repo(tmp_path / "repo")
    (repo.work / "weights.bin").write_bytes(os.urandom(24 * 1024 * 1024))
    git("add", "-A", cwd=repo.work)
    git("commit", "-q", "-m", "weights", cwd=repo.work)
    git("push", "-q", str(repo.bare), "main", cwd=repo.work)
    url = repo.bare.as_uri()
    rng = _crash_rng()
    kills = 0
    for attempt in range(10):
        if attempt % 3 == 0:  # a cold cache again: kills land in clones, not only in runs
            cli("cache", "gc", "--older-than", "0")
        kills += _run_and_kill(["run", url, "-P", "who=crash", "--env-manager", "local"], rng, 0.05, 0.6)
    assert kills >= 5, f"only {kills} of 10 runs were still going when killed: the timing needs adjusting"
    result = cli("run", url, "-P", "who=after", "--env-manager", "local")
    assert result.returncode == 0, result.stderr
    assert "version two: after" in result.stdout
    statuses = _ledger_statuses(mlproject_home)
    assert all(status != "RUNNING" for _, status, _ in statuses), statuses
    with sqlite3.connect(_work_in_tmp / "mlflow.db") as conn:
        assert conn.execute("select count(*) from runs where status = 'RUNNING'").fetchone()[0] == 0
    # What a run uses is complete: the mirror passes git's own check, the checkout is at the commit.
    mirrors = [p for p in (mlproject_home / "git" / "mirrors").iterdir() if not p.name.startswith(".")]
    for mirror in mirrors:
        git("fsck", "--no-progress", "--connectivity-only", cwd=mirror)
    listing = cli("cache", "list")
    assert listing.returncode == 0, listing.stderr
    assert cli("cache", "gc", "--older-than", "0").returncode == 0  # and what the kills left can be removed
    leftovers = [p.name for p in (mlproject_home / "git").rglob(".tmp-*")]
    assert leftovers == [], leftovers


def test_an_installer_dies_with_a_runner_killed_mid_build(tmp_path):
    """A runner SIGKILLed while an environment build's installer runs: the installer is killed
    with it (Linux's parent-death signal, through `setpriv`), instead of going on filling and
    locking a half-made environment no one will use (seed 20261210, strike 24: uv's cache lock
    and the build's venv lock still held after a SIGKILL at 0.24 s)."""
    marker = f"mlproject-installer-{os.getpid()}"
    code = ("import sys\n"
            "from runner.subprocesses import capture\n"
            "print('building', flush=True)\n"
            # (The marker is made here, so that only the installer's command line holds it.)
            f"capture(['sh', '-c', 'sleep 300 # ' + 'mlproject-installer-' + '{os.getpid()}'], dies_with_caller=True)\n")
    runner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)

    def installers() -> list[int]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if marker.encode() in open(f"/proc/{pid}/cmdline", "rb").read() and pid_alive(int(pid)):
                    found.append(int(pid))
            except OSError:
                pass
        return found

    try:
        assert runner.stdout.readline().strip() == "building"
        deadline = time.monotonic() + 10
        while not installers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert installers(), "the installer never started"
        runner.kill()
        runner.wait()
        deadline = time.monotonic() + 5
        while installers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert installers() == [], "the installer outlived its runner"
    finally:
        for pid in installers():
            os.kill(pid, signal.SIGKILL)
