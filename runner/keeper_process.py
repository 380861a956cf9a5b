"""The keeper's side (see runner.keeper, the caller's): a process of its own that carries out an
asynchronous API run's request through the same pipeline as `mlproject run`, tells its caller
how the start went over a pipe, and keeps the run to its end."""
from __future__ import annotations

if __name__ == "__main__":  # (a keeper starting: see runner.startup)
    from runner import startup

    startup.hold()

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from runner import startup  # noqa: E402
from runner.errors import RunnerError  # noqa: E402
from runner.keeper import STATUS_FD_VARIABLE  # noqa: E402
from runner.startup import INTERRUPT_SIGNALS  # noqa: E402
from runner.status import RunStatus  # noqa: E402


class _Interrupted(BaseException):
    pass


def main() -> int:
    from runner import api
    from runner.request import RunRequest

    status = os.fdopen(int(os.environ.pop(STATUS_FD_VARIABLE)), "w", buffering=1)
    request = RunRequest(**json.loads(sys.stdin.buffer.read()))
    sys.stdin.close()
    active: list = []
    abandoning: list[int] = []

    def tell(kind: str, value) -> None:
        if not status.closed:
            try:
                status.write(json.dumps({kind: value}) + "\n")
                return
            except OSError:  # the caller is gone
                pass
        _say(value if isinstance(value, str) else "")

    def on_signal(signum: int, _frame) -> None:
        if active and active[0].launching:
            active[0].request_cancel(signum)  # `runs cancel`, a caller's cancel(): the run ends KILLED
        elif not abandoning:
            abandoning.append(signum)
            raise _Interrupted()  # still preparing: the pipeline ends the run KILLED
        # (else: the preparation is being abandoned; another signal would cut its cleanup short)

    try:
        # (Straight from the held signals to its own, inside the `try`: the first one set may
        # raise before the others are.)
        for signum in INTERRUPT_SIGNALS:
            signal.signal(signum, startup.where_safe(on_signal))
        submitted = api.submit(request, notify=lambda text: tell("note", text),
                               progress=lambda label: tell("progress", label), on_submitted=active.append)
    except RunnerError as exc:
        tell("error", {"type": type(exc).__name__, **{k: v for k, v in vars(exc).items() if _plain(v)}})
        return exc.exit_code
    except _Interrupted:
        startup.ignore()  # the run is ended: nothing more to stop while it says so
        tell("error", {"type": "LaunchError", "message": "interrupted before the run's command started",
                       "hint": f"run {active[0].run_id} was recorded KILLED" if active else "no run was created"})
        return 128 + abandoning[0]
    except Exception as exc:  # noqa: BLE001 - the caller gets it as one error, not a dead pipe
        tell("error", {"type": "RunnerError", "message": f"{exc.__class__.__name__}: {exc}"})
        return 1
    tell("started", submitted.ledger_id)
    status.close()
    while not submitted.done:
        submitted.wait(0.5)
    if submitted.end_error:  # (a later command records the run: see runner.cli)
        _say(f"error: run {submitted.run_id}: its end could not be recorded: {submitted.end_error}")
        return 1
    return 0 if submitted.get_status() == RunStatus.FINISHED else submitted.exit_code or 1


def _plain(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list))


def _say(text: str) -> None:
    """A note after the caller stopped listening: to the stderr it left us, if still there."""
    try:
        os.write(2, f"{text}\n".encode())
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
