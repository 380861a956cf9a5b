"""Signals that reach a process while it is still starting (importing its modules, before it
installs its own handlers): nothing of a run exists yet, so it exits at once and quietly with
128+N, instead of printing a KeyboardInterrupt traceback from the middle of an import."""
from __future__ import annotations

import signal

_HELD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_before: dict[int, object] = {}


def hold() -> None:
    for signum in _HELD:
        current = signal.getsignal(signum)
        if current in (signal.default_int_handler, signal.SIG_DFL):  # (one ignored on purpose stays ignored)
            _before[signum] = current
            signal.signal(signum, _exit)


def release() -> None:
    """Python's own handling again, for the process's own handlers to take over from."""
    while _before:
        signum, handler = _before.popitem()
        signal.signal(signum, handler)  # type: ignore[arg-type]


def _exit(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)
