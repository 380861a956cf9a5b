"""Processes of this machine, found the way the test clusters need to find them."""
from __future__ import annotations

import os


def processes_with(variable: bytes) -> list[int]:
    """The processes (other than this one) whose environment holds `variable` (NAME=value)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if variable in handle.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue
    return [pid for pid in found if pid != os.getpid()]


def processes_with_files_under(root) -> list[int]:
    """The processes (other than this one) with a file open under directory `root`."""
    prefix = str(root).rstrip("/") + "/"
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in descriptors:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(prefix):
                found.append(int(pid))
                break
    return [pid for pid in found if pid != os.getpid()]


def default_signals() -> None:
    """(preexec_fn) The child gets SIGINT, SIGTERM and SIGHUP at their defaults, as from a shell at
    a terminal: a test run in the background of a script (SIGINT ignored) or under `nohup` (SIGHUP
    ignored) would otherwise hand that on, and the runner rightly keeps a signal its caller
    ignores, so a strike would never land."""
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
