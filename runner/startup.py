"""Signals that reach a process while it is still starting (importing its modules, before it
installs its own handlers): nothing of a run exists yet, so it exits at once and quietly with
128+N, instead of printing a KeyboardInterrupt traceback from the middle of an import.

`runner/__init__.py` holds them as its first statement when the process is one of the project's
commands (the `mlproject` script, or `python -m runner.…`, during whose package import
`sys.argv[0]` is "-m"): a library that imports `runner` keeps Python's own KeyboardInterrupt."""
from __future__ import annotations

import gc
import os
import signal
import sys

# The signals that stop a run (Ctrl-C, `kill`, a closed terminal), wherever they are handled.
INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_before: dict[int, object] = {}


def hold() -> None:
    for signum in INTERRUPT_SIGNALS:
        current = signal.getsignal(signum)
        if current in (signal.default_int_handler, signal.SIG_DFL):  # (one ignored on purpose stays ignored)
            _before[signum] = current
            signal.signal(signum, _exit)


def started_as_command() -> bool:
    """The `mlproject` script or `python -m runner…` (as `runner/__init__.py` found at import)."""
    return bool(getattr(sys.modules.get("runner"), "_STARTED_AS_COMMAND", False))


def release() -> None:
    """Python's own handling again, for the process's own handlers to take over from."""
    while _before:
        signum, handler = _before.popitem()
        signal.signal(signum, handler)  # type: ignore[arg-type]


def _exit(signum: int, _frame) -> None:
    # os._exit, not SystemExit: the signal may land inside a class body or a `__set_name__`, where
    # Python wraps an exception in a RuntimeError and prints its traceback. Nothing is open yet.
    os._exit(128 + signum)


def ignore() -> None:
    """Once a command's work is done and recorded (or abandoned and said so): a further signal
    could only cut its last words short and turn its exit code into a death by signal."""
    for signum in INTERRUPT_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


# Python's default first-generation threshold (700 new container objects) runs ~150 collections
# while a command imports its ~200 modules, each one rescanning what is still young; a command's
# whole start then pays ~5 ms for nothing, since modules' objects live until the process ends.
# A larger threshold keeps collecting (a sweep's driver or a keeper lives for hours) at a cost in
# memory of at most a few MB of unreclaimed cycles. Measured: benchmarks/results, 2026-12-05.
COMMAND_GC_THRESHOLDS = (50_000, 20, 20)
_tuned = False


def tune_collector() -> None:
    """For the project's own commands only: a library that imports `runner` keeps its own."""
    global _tuned
    gc.set_threshold(*COMMAND_GC_THRESHOLDS)
    _tuned = True


def leaving() -> None:
    """The command's work is done, flushed and recorded: Python's shutdown would now run one
    last full collection over every object of every module (~10 ms of a warm run's ~100) to
    reclaim memory the process is handing back whole. Freezing them moves them out of its
    reach; finalizers registered with atexit or weakref.finalize still run. Only in a process
    started as a command: a test or a library calling `main` goes on after it."""
    if _tuned:
        gc.freeze()
