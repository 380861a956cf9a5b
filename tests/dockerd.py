"""A private Docker daemon for the docker tests, and a base image made locally.

The daemon is Debian's `dockerd` with its own socket, data root and exec root
in a temporary directory (`--iptables=false --bridge=none --storage-driver=vfs`:
what runs on this machine). Nothing can be pulled, so the base image is a
Debian rootfs with Python made by `mmdebstrap` from the machine's configured
apt mirror and loaded with `docker import`; the rootfs tarball is cached in
~/.cache/mlproject-tests between test runs.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

BASE_IMAGE = "mlproject-test-base:bookworm"
_CACHE = Path(os.path.expanduser("~/.cache/mlproject-tests"))


class Daemon:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mlpd-"))  # short: containerd's socket paths have a length limit
        self.socket = self.root / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        if not os.path.exists(dockerd):
            raise AssertionError("dockerd is not installed: apt-get install docker.io (.ci/run does)")
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(
            [dockerd, "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "-H", self.host, "--pidfile", str(self.root / "docker.pid"), "--iptables=false", "--bridge=none",
             "--storage-driver=vfs"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"dockerd exited with {self.proc.returncode}: {self._log_tail()}")
            if self.socket.exists() and self.docker("version", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"dockerd did not answer within 60 s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return (self.root / "dockerd.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def docker(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """The docker CLI against this daemon (for the tests' own checks)."""
        return subprocess.run(["docker", *args], env={**os.environ, "DOCKER_HOST": self.host}, capture_output=True,
                              text=True, check=check, timeout=timeout)

    def containers(self, label: str = "mlproject.run_id") -> list[str]:
        out = self.docker("ps", "-a", "--filter", f"label={label}", "--format", "{{.Names}} {{.Status}}").stdout
        return [line for line in out.splitlines() if line.strip() and "Removal In Progress" not in line]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["umount", "-R", str(self.root / "exec")], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def load_base_image(self) -> str:
        if self.docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
            self.docker("import", str(base_rootfs()), BASE_IMAGE, timeout=600)
        return BASE_IMAGE


def base_rootfs() -> Path:
    """bookworm with python3 (full stdlib), made once with mmdebstrap and cached."""
    target = _CACHE / "bookworm-python3.tar"
    if target.exists():
        return target
    if shutil.which("mmdebstrap") is None:
        raise AssertionError("mmdebstrap is not installed: apt-get install mmdebstrap (.ci/run does)")
    _CACHE.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{os.getpid()}.{target.name}")  # mmdebstrap picks the format by the .tar ending
    completed = subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=apt", "--include=python3-minimal,python3-venv", "bookworm", str(tmp),
         _apt_mirror()],
        capture_output=True, text=True, timeout=900,
    )
    if completed.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise AssertionError(f"mmdebstrap failed: {completed.stderr[-2000:]}")
    os.replace(tmp, target)
    return target


def _apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (read, never written down in the repository)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        match = re.search(r"^URIs:\s*(\S+)", path.read_text(), re.M)
        if match:
            return match.group(1)
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if path.exists():
            match = re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", path.read_text(), re.M)
            if match:
                return match.group(1)
    raise AssertionError("no apt mirror configured on this machine for mmdebstrap")
