"""An asynchronous API run that outlives its caller: `runner.run(..., synchronous=False)` on
this machine hands the run to a keeper, a process of its own that lives as long as the run.

Under `mlflow run` an asynchronous run's command is a plain child of the caller and goes on
when the caller exits. Ours is watched by a runner thread (the tee of its output, the record
of its end, the leases on its environment and source): in the caller's process it would die
with the caller and leave the run RUNNING. So the keeper, started in a session of its own,
carries out the request itself (the same pipeline as `mlproject run`) and keeps the run to its
end (its side: runner.keeper_process). The caller waits only until the command has started, or the run failed before it, with
the keeper's notes and errors passed back over a pipe as if the pipeline had run in the caller;
then it follows the run through the ledger, as `runner.attach` does from any process:
`wait()`, `get_status()` and `cancel()` work from the caller and from any later process.

The keeper inherits the caller's environment, and its stdout and stderr when they are a
terminal or a file, as MLflow's child does; a pipe (a caller whose output is captured) is not
passed on, so that its reader is not held until the run ends (MLflow's is: an 8 s run kept
`$(python -c ...)` waiting 12.9 s with mlflow 3.17.2), and the output is in the run's log.
The request (with `docker_auth`, a credential) reaches it on its stdin, never its command
line. Ctrl-C in the caller's terminal stops the run only while the caller waits for it
(`wait()`), since the run no longer belongs to the caller's process group.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, replace

from runner.errors import LaunchError, RunnerError
from runner.launch import RUN_MARKER
from runner.startup import INTERRUPT_SIGNALS

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Callable

    from runner.backends.cluster import ClusterRun
    from runner.request import RunRequest

STATUS_FD_VARIABLE = "MLPROJECT_KEEPER_STATUS_FD"
_KEEPERS: list[subprocess.Popen] = []  # this caller's keepers, reaped once they end (no zombies)
_KEEPERS_LOCK = threading.Lock()  # (runner.run is called from many threads)


def wanted(request: RunRequest) -> bool:
    """An asynchronous run on this machine, asked for by an API caller."""
    return not request.synchronous and (request.backend or "local") == "local" and request.job_of is None


# -- the caller's side ---------------------------------------------------------------------
def hand_over(request: RunRequest, notify: Callable[[str], None], progress: Callable[[str], None] | None,
              on_submitted: Callable[[ClusterRun], None] | None) -> ClusterRun:
    """Start a keeper for `request`; return the run once its command has started."""
    from runner.tracking.session import active_mlflow_run

    # What only this process knows: its directory and the run it has open with mlflow.
    request = replace(request, cwd=str(request.caller_cwd()),
                      parent_run_id=request.parent_run_id or active_mlflow_run())
    status_read, status_write = os.pipe()
    try:
        keeper = subprocess.Popen(
            [sys.executable, "-m", "runner.keeper_process"], stdin=subprocess.PIPE, pass_fds=(status_write,),
            # Not marked as a process of the caller's own run (a workflow's step): an asynchronous
            # run outlives its caller, and is a run of its own (see runner.launch.RUN_MARKER).
            env={**{k: v for k, v in os.environ.items() if k != RUN_MARKER}, STATUS_FD_VARIABLE: str(status_write)},
            # A pipe is not passed on: whoever reads the caller's output (`$(...)`, capture_output)
            # would wait for the run's end, not the caller's. Its output is in the run's log.
            stdout=subprocess.DEVNULL if _is_pipe(1) else None,
            stderr=subprocess.DEVNULL if _is_pipe(2) else None,
            start_new_session=True,
        )
    except OSError as exc:
        os.close(status_read)
        raise LaunchError(f"cannot start the run's keeper process: {exc.strerror}") from None
    finally:
        os.close(status_write)
    try:
        keeper.stdin.write(json.dumps(asdict(request), default=str).encode())  # type: ignore[union-attr]
        keeper.stdin.close()  # type: ignore[union-attr]
        started = _read_status(os.fdopen(status_read, "rb"), notify, progress)
    except RunnerError:  # the keeper's own: it ended the run, if there was one, and exits
        keeper.wait()
        raise
    except BaseException:  # Ctrl-C while it prepares: the keeper ends the run KILLED, as a CLI run does
        _interrupt(keeper)
        raise
    if started is None:
        code = keeper.wait()
        signum = -code if code < 0 else code - 128 if code > 128 else 0
        if signum in INTERRUPT_SIGNALS:  # (stopped while it was starting: it had created nothing)
            raise LaunchError(f"the run's keeper process was stopped by {signal.Signals(signum).name} before "
                              "the run's command started", hint="no run was created")
        raise LaunchError(f"the run's keeper process ended before starting the run (exit code {code})")
    with _KEEPERS_LOCK:
        _KEEPERS[:] = [other for other in _KEEPERS if other.poll() is None] + [keeper]
    return _follow(started, on_submitted)


def _is_pipe(fd: int) -> bool:
    """The caller's stream `fd` is a pipe or a socket (a reader waits for every writer to close)."""
    import stat

    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _read_status(status, notify: Callable[[str], None], progress: Callable[[str], None] | None) -> str | None:
    """The keeper's notes, passed on, until it says which run started (its ledger ID) or
    raises the error it met; None when it died without a word."""
    with status:
        for line in status:
            message = json.loads(line)
            if "note" in message:
                notify(message["note"])
            elif "progress" in message:
                if progress is not None:
                    progress(message["progress"])
            elif "started" in message:
                return message["started"]
            elif "error" in message:
                raise _error(message["error"])
    return None


def _error(fields: dict) -> RunnerError:
    from runner import errors

    cls = getattr(errors, fields.pop("type", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, RunnerError)):
        cls = RunnerError
    error = cls.__new__(cls)
    RunnerError.__init__(error, fields.pop("message"))
    error.__dict__.update(fields)
    return error


def _interrupt(keeper: subprocess.Popen) -> None:
    try:
        keeper.send_signal(signal.SIGINT)
        keeper.wait(30)
    except (OSError, subprocess.TimeoutExpired):
        pass


def _follow(ledger_id: str, on_submitted) -> ClusterRun:
    from runner.backends.cluster import ClusterRun
    from runner.tracking.ledger import Ledger
    from runner.tracking.runs import find

    ledger = Ledger()
    try:
        record = find(ledger, ledger_id)
    finally:
        ledger.close()
    followed = ClusterRun(record)
    if on_submitted is not None:
        on_submitted(followed)
    return followed
