"""Whether a process recorded earlier (a runner, by PID and start time) is still that process.

Kept apart from the ledger so that the pending note, written on the warm path
before a run's creation is sent, does not import sqlite3.
"""
from __future__ import annotations


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22); None when
    it is gone, or has ended and only waits to be reaped (a zombie: an async run's keeper whose
    caller, its parent, is still following the run through the ledger)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return None if fields[0] in (b"Z", b"X") else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def process_is(pid: int, ticks: int | None) -> bool:
    """True if `pid` is alive and is the same process (not a reused PID)."""
    current = start_ticks(pid)
    if current is None:
        return False
    return ticks is None or current == ticks
