"""A real Slurm cluster on this machine for the slurm backend's tests.

Debian's slurm-wlm: one `slurmctld` and two `slurmd` nodes (`-N n1`, `-N n2`) on
loopback, every file (config, state, spool, logs, the job completion log) in a
temporary directory, no munge (`AuthType=auth/none`). Clients find it through
`SLURM_CONF`, which the tests put in the runner's environment.
"""
from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from procs import processes_with

_DAEMONS = ("slurmctld", "slurmd")


def _free_port_pair() -> int:
    """A port P with P and P+1 both free (the nodes' ports are a range)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65000:
            continue
        try:
            with socket.socket() as second:
                second.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


_IDS_BURNED = 20  # job IDs used up after a controller restart (see restart_controller)


class SlurmCluster:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mlps-"))
        self.conf = self.root / "slurm.conf"
        self.completion_log = self.root / "jobcomp.log"
        self.procs: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        missing = [name for name in (*_DAEMONS, "sbatch", "scontrol") if shutil.which(name) is None
                   and not os.path.exists(f"/usr/sbin/{name}")]
        if missing:
            raise AssertionError(f"Slurm is not installed ({', '.join(missing)} missing): "
                                 "apt-get install slurm-wlm (`make system-packages` does)")
        user = getpass.getuser()
        controller_port, node_port = _free_port_pair(), _free_port_pair()
        (self.root / "state").mkdir()
        self.conf.write_text("\n".join([
            "ClusterName=mlproject-test",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={controller_port}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/none",
            "CredType=cred/none",
            # A requeued job waits out its revoked credential (120 s by default) before it may start
            # again; started earlier (`scontrol update StartTime=now`), slurmd refuses it as "already
            # killed" and it ends FAILED. Ten seconds keeps requeue tests short and honest.
            "AuthInfo=cred_expire=10",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "MpiDefault=none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={self.completion_log}",
            "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=2",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool-%n'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={self.root / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'slurmd-%n.log'}",
            "ReturnToService=2",
            "KillWait=5",  # SIGKILL this long after a cancelled or timed-out job's SIGTERM
            "InactiveLimit=0",
            "GresTypes=gpu",
            f"NodeName=n[1-2] NodeHostname=localhost NodeAddr=127.0.0.1 Port={node_port}-{node_port + 1}"
            " CPUs=2 RealMemory=1000 Gres=gpu:2 State=UNKNOWN",
            "PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))
        # Two GPUs a node, named by files that stand for their devices (no GPU here): Slurm hands
        # them out per job (--gpus-per-node) and sets CUDA_VISIBLE_DEVICES as on a GPU cluster.
        for index in range(2):
            (self.root / f"gpu{index}").touch()
        (self.root / "gres.conf").write_text(f"NodeName=n[1-2] Name=gpu File={self.root}/gpu[0-1]\n")
        for argv in (["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", "n1"], ["slurmd", "-D", "-N", "n2"]):
            self._daemon(argv)
        self._wait_for_idle_nodes("the Slurm cluster did not come up")

    def _daemon(self, argv: list[str], hidden: Path | None = None) -> None:
        """Start a daemon; with `hidden`, in a mount namespace of its own where an empty file
        system covers that directory (a node that does not share it with the submit host)."""
        log = open(self.root / f"{argv[0]}-{argv[-1]}.out", "ab")  # noqa: SIM115 (closed with the process)
        command = [shutil.which(argv[0]) or f"/usr/sbin/{argv[0]}", *argv[1:]]
        if hidden is not None:
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                       'mount -t tmpfs none "$0" && exec "$@"', str(hidden), *command]
        self.procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                           env={**os.environ, **self.env}, start_new_session=True))

    def _wait_for_idle_nodes(self, failure: str, timeout: float = 60, resume: bool = False, busy_ok: bool = False) -> None:
        """`resume`: a node Slurm drained or downed meanwhile (a job's node lost mid-step drains
        the node the step had reached too) is given back to service, as an administrator would.
        `busy_ok`: a node running jobs counts too (a sweep's tasks go on through the wait)."""
        serving = ("idle", "allocated", "mixed", "completing") if busy_ok else ("idle",)
        deadline = time.monotonic() + timeout
        states = ""
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"a Slurm daemon exited at start: {proc.args}\n{self.logs()}")
            done = self.command("sinfo", "-h", "-N", "-o", "%N %T")
            states = done.stdout
            if done.returncode == 0 and sum(word in serving for word in states.split()) == 2:
                return
            for line in states.splitlines() if resume else ():
                name, _, state = line.partition(" ")
                if state.startswith(("drain", "down")):
                    self.command("scontrol", "update", f"nodename={name}", "state=resume")
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{failure} in {timeout:.0f} s (sinfo: {states!r})\n{self.logs()}")

    def lose_node(self, name: str) -> None:
        """Node `name` stops answering, as a machine cut off would: its slurmd is SIGKILLed. Its
        jobs' processes (under their slurmstepd) go on running until the node returns."""
        node = next(proc for proc in self.procs if proc.args[-2:] == ["-N", name])
        node.kill()
        node.wait()
        self.procs.remove(node)

    def return_node(self, name: str, hidden: Path | None = None, busy_ok: bool = False) -> None:
        """(After `lose_node`.) Its slurmd starts again and registers; the node is idle again (or,
        `busy_ok`, in service: running the jobs still queued). `hidden`: a directory the node does
        not see (see `_daemon`); needs root."""
        self._daemon(["slurmd", "-D", "-N", name], hidden)
        self._wait_for_idle_nodes(f"node {name} did not return", 120, resume=True, busy_ok=busy_ok)

    def saved_state(self) -> Path:
        """A copy of the controller's saved state (see restart_controller), taken with no job in
        the queue and once the controller has saved that: a copy that still held a job since
        ended would bring it back RUNNING, a ghost no node runs."""
        self.wait_idle()
        jobs = self.root / "state" / "job_state"
        saved_before = jobs.stat().st_mtime_ns if jobs.exists() else 0
        marker = self.command("sbatch", "--parsable", "--hold", "--output=/dev/null", "--wrap", "true")
        self.command("scancel", marker.stdout.strip().split(";")[0])  # (a change the controller saves)
        deadline = time.monotonic() + 60
        while not (jobs.exists() and jobs.stat().st_mtime_ns > saved_before):
            if time.monotonic() > deadline:
                raise RuntimeError("slurmctld did not save its state in 60 s")
            time.sleep(0.1)
        self.wait_idle()
        copy = Path(tempfile.mkdtemp(prefix="state-", dir=self.root))
        shutil.copytree(self.root / "state", copy, dirs_exist_ok=True)
        return copy

    def restart_controller(self, from_state: Path | None = None, cancel_burned: bool = True) -> list[str]:
        """slurmctld killed and started again from its saved state (jobs run on meanwhile).
        `from_state` (a `saved_state()`): the state it had then, as if it died before saving
        what came after: the jobs queued since are lost. Returns the job IDs used up (see
        below); `cancel_burned=False` leaves them held, for the caller to cancel later."""
        controller = next(proc for proc in self.procs if "slurmctld" in " ".join(map(str, proc.args)))
        controller.kill()
        controller.wait()
        self.procs.remove(controller)
        if from_state is not None:
            shutil.rmtree(self.root / "state")
            shutil.copytree(from_state, self.root / "state")
        self._daemon(["slurmctld", "-D"])  # (no -i: it takes its jobs back from StateSaveLocation)
        # Jobs queued after the controller's last save are lost with it, yet may run on a node;
        # the restarted controller would hand their IDs out again, and a node that is still
        # running a job of that ID is drained ("Duplicate jobid"), taking later jobs down with
        # it. The IDs such jobs may hold are used up here, as an administrator would move the
        # counter on; the lost jobs themselves are the runner's to recover from. (Cancelled,
        # such a job ends with the lost one's ID, and its end reads as the lost job's.)
        deadline = time.monotonic() + 60
        while self.command("scontrol", "ping").returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        burned = []
        for _ in range(_IDS_BURNED):
            done = self.command("sbatch", "--parsable", "--hold", "--output=/dev/null", "--wrap", "true")
            if done.returncode == 0:
                burned.append(done.stdout.strip().split(";")[0])
        if burned and cancel_burned:
            self.command("scancel", *burned)
        return burned

    def return_to_service(self) -> None:
        """Nodes Slurm drained or downed (after a lost node, or a duplicate job ID after a
        controller restart) are resumed, as an administrator would; then both are idle."""
        deadline = time.monotonic() + 120
        while True:
            states = self.command("sinfo", "-h", "-N", "-o", "%N %T").stdout
            out = [line.split()[0] for line in states.splitlines() if line.split()[-1].startswith(("drain", "down"))]
            if not out:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Slurm nodes out of service: {states!r}\n{self.logs()}")
            for name in out:
                self.command("scontrol", "update", f"nodename={name}", "state=resume")
            time.sleep(0.5)

    @contextlib.contextmanager
    def node_timeout(self, seconds: int):
        """While inside: a node that does not answer for `seconds` is DOWN (Slurm's default: 300 s)."""
        with self.setting(f"SlurmdTimeout={seconds}"):
            yield

    @contextlib.contextmanager
    def setting(self, line: str):
        """While inside: slurm.conf has `line` too (the controller reconfigured with it)."""
        original = self.conf.read_text()
        self.conf.write_text(original + line + "\n")
        self.command("scontrol", "reconfigure")
        try:
            yield
        finally:
            self.conf.write_text(original)
            self.command("scontrol", "reconfigure")

    def command(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60)

    def wait_idle(self, timeout: float = 60) -> None:
        """Until no job is queued or running (tests start on an empty cluster)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.command("squeue", "-h", "-o", "%i").stdout.strip():
                return
            time.sleep(0.2)
        raise AssertionError("jobs still in the queue: " + self.command("squeue").stdout)

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                         for path in sorted(self.root.glob("*.out")) + sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        if self.procs:
            self.command("scancel", "--user", getpass.getuser())
            deadline = time.monotonic() + 20
            while self.command("squeue", "-h", "-o", "%i").stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.2)
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs = []
        # What the daemons leave when they stop mid-job (a job's slurmstepd, its processes)
        # carries this cluster's SLURM_CONF: nothing of it outlives the cluster.
        for pid in processes_with(f"SLURM_CONF={self.conf}".encode()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
