"""Whether a process recorded earlier (a runner, by PID and start time) is still that process.

Kept apart from the ledger so that the pending note, written on the warm path
before a run's creation is sent, does not import sqlite3.
"""
from __future__ import annotations


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def process_is(pid: int, ticks: int | None) -> bool:
    """True if `pid` is alive and is the same process (not a reused PID)."""
    current = start_ticks(pid)
    if current is None:
        return False
    return ticks is None or current == ticks
