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

TYPE_CHECKING = False  # (typing itself is not imported before the signals are held: see hold)
if TYPE_CHECKING:
    from typing import Any, Callable

# The signals that stop a run (Ctrl-C, `kill`, a closed terminal), wherever they are handled.
INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_before: dict[int, object] = {}


def hold() -> None:
    for signum in INTERRUPT_SIGNALS:
        current = signal.getsignal(signum)
        if current in (signal.default_int_handler, signal.SIG_DFL):  # (one ignored on purpose stays ignored)
            _before[signum] = current
            signal.signal(signum, _exit)


def import_lock_left_held() -> bool:
    """Whether this thread holds the interpreter's global import lock outside any import: a
    Ctrl-C that Python's own handler raised inside the import system, before the signals were
    held, leaves it so (see `where_safe`) and is itself lost. Asked, and the lock given back, in
    the package's first lines, where no import is under way."""
    import _imp

    if not _imp.lock_held():
        return False
    try:
        _imp.release_lock()
    except RuntimeError:  # another thread's, for an instant
        return False
    return True


def started_as_command() -> bool:
    """The `mlproject` script or `python -m runner…` (as `runner/__init__.py` found at import)."""
    return bool(getattr(sys.modules.get("runner"), "_STARTED_AS_COMMAND", False))


def release() -> None:
    """Python's own handling again, for the process's own handlers to take over from: a Ctrl-C
    is a KeyboardInterrupt (raised where it is safe to raise, see `where_safe`)."""
    while _before:
        signum, handler = _before.popitem()
        if handler is signal.default_int_handler:
            handler = where_safe(signal.default_int_handler)
        signal.signal(signum, handler)  # type: ignore[arg-type]


# A handler that raises can land anywhere in the main thread, and two places in Python's own
# import system cannot take it: between `_imp.acquire_lock()` and the `try` that gives the global
# import lock back (the lock is then held for ever, and the next import in any other thread waits
# for ever), and in the callback that drops a module's lock when an import ends, where an
# exception is printed as "Exception ignored" and the Ctrl-C is lost. Both run in the import
# system's own frozen code (and a `__del__` or a `__set_name__` cannot take one either), so a
# handler wrapped here, finding itself there, has the signal delivered again a moment later
# instead (found by random strikes, 2026-12-05: docs/reliability.md).
_IMPORT_SYSTEM = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>")
RETRY_SECONDS = 0.002
_again: list[int] = []  # signals to deliver again once the main thread is out of those places


def where_safe(handler: Callable[[int, Any], None]) -> Callable[[int, Any], None]:
    """`handler`, carried out only where an exception it raises reaches the code it interrupted."""

    def safe_handler(signum: int, frame) -> None:
        if _unsafe(frame):
            _deliver_later(signum)
        else:
            handler(signum, frame)

    return safe_handler


def _unsafe(frame) -> bool:
    if frame is None:  # (called by the process's own code, not by a signal)
        return False
    if frame.f_code.co_filename in _IMPORT_SYSTEM:
        return True
    # Below a `__del__` an exception is printed and lost; below a `__set_name__` (a dataclass
    # field's, an enum member's, while a class is made) Python wraps it in a RuntimeError.
    while frame is not None:
        if frame.f_code.co_name in ("__del__", "__set_name__"):
            return True
        frame = frame.f_back
    return False


def _deliver_later(signum: int) -> None:
    if not _again:
        if not _disarm_at_exit:
            # Python hands SIGALRM back to its default (death) as it shuts down: a delivery
            # still due then would end a process that was exiting normally by SIGALRM.
            import atexit

            atexit.register(_disarm)
            _disarm_at_exit.append(True)
        signal.signal(signal.SIGALRM, _deliver_again)
        signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)
    _again.append(signum)


_disarm_at_exit: list[bool] = []


def _disarm() -> None:
    """No delivery is due any more (a command that is done, or a process that is exiting)."""
    _again.clear()
    if _disarm_at_exit:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_IGN)


def _deliver_again(_signum: int, frame) -> None:
    if not _again:  # (ignored since)
        return
    # What a handler raises from here surfaces in `frame`: it must be a safe place too.
    if _unsafe(frame):
        signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)
        return
    # One at a time, to the handler it has by now (one made ignored meanwhile stays ignored);
    # what that handler raises ends this function, so the next is given its own delivery first.
    signum = _again.pop(0)
    if _again:
        signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)
    signal.raise_signal(signum)


def _exit(signum: int, _frame) -> None:
    # os._exit, not SystemExit: the signal may land inside a class body or a `__set_name__`, where
    # Python wraps an exception in a RuntimeError and prints its traceback. Nothing is open yet.
    os._exit(128 + signum)


def ignore() -> None:
    """Once a command's work is done and recorded (or abandoned and said so): a further signal
    could only cut its last words short and turn its exit code into a death by signal."""
    for signum in INTERRUPT_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    _disarm()


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
