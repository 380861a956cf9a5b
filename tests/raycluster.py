"""A real two-node Ray cluster on this machine for the ray backend's tests.

`ray start --head` on 127.0.0.2 and a second node on 127.0.0.3 (Ray rewrites
127.0.0.1 to the host's address, so other loopback addresses keep it on loopback),
each with its own temporary directory. Every process of the cluster carries a
marker in its environment, and `stop()` kills them by it: `ray stop` would stop
every Ray on the machine, and gcs_server and raylet ignore SIGTERM for ~20 s.

The nodes share no files with the tests' runner, nor with each other: each node has its own
MLPROJECT_HOME (inside its own temporary directory, the second node's on a disk of its own),
as a real cluster's nodes have their own disks.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procs import processes_with, processes_with_files_under

HEAD_IP, NODE_IP = "127.0.0.2", "127.0.0.3"
NODE_RESOURCE = "second_node"  # only the second node has it: a job that asks for it runs there
HEAD_RESOURCE = "head_node"  # only the head has it


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _argv(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [word.decode(errors="replace") for word in handle.read().split(b"\0") if word]
    except OSError:
        return []


class RayCluster:
    def __init__(self) -> None:
        # Short: Ray's socket paths live under it (a UNIX socket path has ~107 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="mlpr-", dir="/tmp"))
        self.marker = f"MLPROJECT_TEST_RAY={self.root.name}"
        self.gcs_port = _free_port(HEAD_IP)
        self.dashboard_port = _free_port(HEAD_IP)
        self.temp_dir = self.root / "ray"
        # Each node's own MLPROJECT_HOME: one path, on each node's own disk (see _ray).
        self.home = self.temp_dir / "node-home"

    @property
    def address(self) -> str:
        return f"http://{HEAD_IP}:{self.dashboard_port}"

    @property
    def homes(self) -> dict[str, Path]:
        """Each node's MLPROJECT_HOME as this host sees it: the head's, and the second node's on its own disk."""
        return {"head": self.home, "second": self.root / "node-disk" / self.home.relative_to(self.temp_dir)}

    def home_of(self, run_id: str) -> Path:
        """The MLPROJECT_HOME of the node that ran `run_id` (its runner kept the run's directory)."""
        found = [home for home in self.homes.values() if (home / "runs" / run_id).is_dir()]
        assert len(found) == 1, f"run {run_id} is in the nodes' homes {found}"
        return found[0]

    def _env(self) -> dict[str, str]:
        name, value = self.marker.split("=", 1)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLPROJECT_", "RAY_"))}
        bin_dir = str(Path(sys.executable).parent)
        env.update({name: value, "MLPROJECT_HOME": str(self.home), "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
                    "RAY_USAGE_STATS_ENABLED": "0", "PYTHONDONTWRITEBYTECODE": "1"})
        return env

    def _ray(self, *args: str, own_disk: Path | None = None, timeout: float = 120) -> None:
        """`ray start ARGS`; with `own_disk`, in a mount namespace where that directory is mounted
        over the cluster's temporary directory: the node has the same path as the head, on a disk
        of its own, as a node on another machine has. (With a shared directory, one node unpacks a
        job's working_dir over the one another node's job runs in; with another path, the agents
        read a job's log from the head's path.)"""
        # One GPU a node, declared (there is none here): Ray hands it to a job that asks for it
        # (entrypoint_num_gpus) and sets its CUDA_VISIBLE_DEVICES, as on a GPU cluster.
        argv = [str(Path(sys.executable).parent / "ray"), "start", *args, "--disable-usage-stats", "--num-cpus=2",
                "--num-gpus=1"]
        if own_disk is not None:
            own_disk.mkdir(parents=True, exist_ok=True)
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount --bind "$0" "$1" && shift && exec "$@"',
                    str(own_disk), str(self.temp_dir), *argv]
        done = subprocess.run(argv, env=self._env(), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                               f"{done.stderr[-3000:]}")

    def start(self) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise AssertionError("Ray is not installed: pip install 'ray[default]' (`make setup` installs the dev "
                                 "extra, which has it)") from None
        started = time.monotonic()
        # Each node has its own agent ports: the default ones would collide with any other Ray here.
        if os.geteuid() != 0:
            raise AssertionError("the Ray test cluster gives its second node a disk of its own with a mount namespace, "
                                 "which needs root (as `make test` runs in CI)")
        self.temp_dir.mkdir()
        self._ray("--head", f"--node-ip-address={HEAD_IP}", f"--port={self.gcs_port}",
                  f"--dashboard-host={HEAD_IP}", f"--dashboard-port={self.dashboard_port}",
                  f"--dashboard-agent-listen-port={_free_port(HEAD_IP)}", f"--ray-client-server-port={_free_port(HEAD_IP)}",
                  f"--temp-dir={self.temp_dir}", "--include-dashboard=true", f"--resources={{\"{HEAD_RESOURCE}\": 1}}")
        self.start_second_node()
        self._wait_for_jobs()
        print(f"ray test cluster up in {time.monotonic() - started:.1f} s at {self.address}", file=sys.stderr)

    def start_second_node(self) -> None:
        """(Again, after `lose_second_node`: a node that returns.)"""
        self._ray(f"--address={HEAD_IP}:{self.gcs_port}", f"--node-ip-address={NODE_IP}",
                  f"--dashboard-agent-listen-port={_free_port(NODE_IP)}", f"--temp-dir={self.temp_dir}",
                  f"--resources={{\"{NODE_RESOURCE}\": 1}}", own_disk=self.root / "node-disk")
        self._wait_for_two_nodes()

    def second_node_raylet(self) -> int:
        raylets = [pid for pid in self.processes() if _argv(pid)[:1] and _argv(pid)[0].endswith("/raylet")
                   and f"--node_ip_address={NODE_IP}" in _argv(pid)]
        assert len(raylets) == 1, f"the second node's raylet is not one process: {raylets}"
        return raylets[0]

    def _wait_for_two_nodes(self, timeout: float = 120) -> None:
        from ray.util.state import list_nodes

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                alive = [n for n in list_nodes(address=self.address) if n.state == "ALIVE"]
                if len(alive) >= 2:
                    return
                last = f"{len(alive)} node(s) alive"
            except Exception as exc:  # noqa: BLE001 - still starting
                last = str(exc)
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the Ray cluster did not get two nodes in {timeout:.0f} s: {last}")

    def _wait_for_jobs(self, timeout: float = 120) -> None:
        """Until a job runs to its end: the job agents start after the nodes say they are alive."""
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(self.address)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                job = client.submit_job(entrypoint="true")
                while time.monotonic() < deadline:
                    status = str(client.get_job_status(job))
                    if status.endswith("SUCCEEDED"):
                        return
                    if status.endswith(("FAILED", "STOPPED")):
                        raise RuntimeError(client.get_job_logs(job)[-2000:])
                    time.sleep(0.3)
            except RuntimeError as exc:
                last = str(exc)
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"the Ray cluster ran no job in {timeout:.0f} s: {last}")

    def processes(self) -> list[int]:
        """The cluster's processes: those with the marker in their environment, and those with a
        file open under the cluster's directory (Ray's dashboard processes and agents rename
        themselves over their environment, so the marker cannot be read from them)."""
        return sorted(set(processes_with(self.marker.encode())) | set(processes_with_files_under(self.root)))

    def stop(self) -> None:
        for signum, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 10.0)):
            for pid in self.processes():
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)
