"""Signals that reach a process while it is still starting (importing its modules, before it
installs its own handlers): nothing of a run exists yet, so it exits at once and quietly with
128+N, instead of printing a KeyboardInterrupt traceback from the middle of an import.

`runner/__init__.py` holds them as its first statement when the process is one of the project's
commands (the `mlproject` script, or `python -m runner.…`, during whose package import
`sys.argv[0]` is "-m"): a library that imports `runner` keeps Python's own KeyboardInterrupt."""
from __future__ import annotations

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
    first = sys.argv[0] if sys.argv else ""
    return first == "-m" or os.path.basename(first) == "mlproject"


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
