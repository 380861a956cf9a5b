"""The runner inside a job that carries several runs, one after another: a task of a sweep's job
array holding several trials (runner.backends.slurm, `trials_per_task`).

Each run is still its own, carried out as a job of its own would be (the same `run_request`):
its ledger row taken over, its tracked run continued, its output in its own log (the file the
submit host recorded as the run's, `JobRequest.output`), its end recorded. What carrying saves
is the cluster's start of a job and the runner's own start: on the test cluster a task costs
Slurm ~0.17 s to schedule and start, and a runner ~0.25 s of the node's CPU; a carried trial
pays neither (docs/benchmarks.md).

One run is stopped alone through its cancel file (`job.cancel_carried`), which is looked for
before the run starts and while its command runs; where the nodes share no file with the submit
host (Ray), through a tag on its tracked run, read once a second instead.

On Ray a job has one log, which the submit host reads (runner.backends.ray_carriers): each run's
output is framed there by lines of the job's mark (`MARK start N`, `MARK end N STATUS CODE
REASON`), from which the submit host learns each run's start, end and output. A signal to the carrier (the job cancelled,
its time limit, a preemption) stops the run under way, and no other starts: those left stay
SCHEDULED, and the submit host records them from the job's end (`runner.backends.settle`), or
the job's next start carries them (a requeue).
"""
from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager

from runner import startup
from runner.cli.common import print_error, say

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from collections.abc import Iterator

    from runner.backends.job import JobRequest


def carry(requests: list[JobRequest], mark: str | None = None) -> int:
    """Carry out the runs one after another: 0 when each ended FINISHED (or had ended before its
    turn), 1 when one did not, 128 + N when signal N stopped the carrier. `mark`: frame each
    run's output in this job's output (Ray's one log a job)."""
    heard: list[int] = []

    def hear(signum: int, _frame) -> None:  # (between runs: the next one is not started)
        heard.append(signum)

    all_finished = True
    for number, request in enumerate(requests, 1):
        for signum in startup.INTERRUPT_SIGNALS:
            signal.signal(signum, hear)
        if heard:
            say(f"carrier: stopped by {signal.Signals(heard[0]).name}; {len(requests) - number + 1} run(s) not started")
            break
        run_id = request.job_of.run_id
        watcher = _CancelWatch(request)
        if _ended(run_id) or (request.job_of.own_ledger and watcher.asked(at_once=True)):
            say(f"carrier: run {run_id} ({number}/{len(requests)}) ended before its turn; not started")
            _frame(mark, number - 1, "end", "KILLED", None, "cancelled before its turn")
            continue
        say(f"carrier: run {run_id} ({number}/{len(requests)})")
        _frame(mark, number - 1, "start")
        with _output_to(request.output):
            error = _carry_one(request, heard, watcher)
        status, code, reason = _outcome(run_id, error)
        _frame(mark, number - 1, "end", status, code, reason)
        all_finished = status == "FINISHED" and all_finished
    startup.ignore()
    return 128 + heard[0] if heard else 0 if all_finished else 1


def _carry_one(request: JobRequest, heard: list[int], watcher: _CancelWatch) -> str | None:
    """One run, to its end: the runner's error, if one ended it before its end was recorded."""
    from runner.cli.run import run_request
    from runner.errors import RunnerError

    def watch(submitted) -> None:
        if watcher.asked():
            submitted.request_cancel(signal.SIGTERM)

    try:
        if watcher.asked(at_once=True):  # (cancelled as its row was taken over: its first look stops it)
            say(f"run {request.job_of.run_id}: a cancel was asked for; it is stopped as soon as its command starts")
        run_request(request.run_request(), in_job=True, heard=heard, watch=watch)
        return None
    except RunnerError as exc:  # this run's error, in its own log; the next run is carried all the same
        print_error(exc.message, exc.hint, exc.details)
        return exc.message


class _CancelWatch:
    """Whether a cancel of one carried run was asked for: its cancel file (a shared MLPROJECT_HOME:
    Slurm), or the tag on its tracked run (Ray; read at most once a second)."""

    def __init__(self, request: JobRequest) -> None:
        from runner import home
        from runner.backends.job import CANCEL_FILE

        self.request = request
        self.cancel_file = home.subdir("runs") / request.job_of.run_id / CANCEL_FILE
        self.next_look = 0.0

    def asked(self, at_once: bool = False) -> bool:
        import time

        if not self.request.job_of.own_ledger:
            return self.cancel_file.exists()
        now = time.monotonic()
        if not at_once and now < self.next_look:
            return False
        self.next_look = now + 1.0
        return _tagged_cancel(self.request.run_id)


def _tagged_cancel(tracking_run_id: str | None) -> bool:
    """Whether the tracked run carries the cancel tag (or has ended: cancelled while it waited)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_run_id or not uri or os.environ.get("MLPROJECT_NO_TRACKING"):
        return False
    from runner.backends.job import CANCEL_TAG
    from runner.errors import RunnerError
    from runner.tracking import open_tracker

    try:
        recorded = open_tracker(uri, timeout=3.0).recorded_run(tracking_run_id)
    except (RunnerError, OSError):  # (unreachable a moment: looked at again in a second)
        return False
    return recorded.tags.get(CANCEL_TAG) == "true"


def _outcome(run_id: str, error: str | None) -> tuple[str, int | None, str | None]:
    """How the run ended, as this node's ledger recorded it: (status, exit code, reason)."""
    row = _row(run_id)
    if row is None or not row.finished:
        return "FAILED", None, error or "its runner ended without recording its end"
    return row.status, row.exit_code, row.reason


def _frame(mark: str | None, index: int, what: str, status: str | None = None, code: int | None = None,
           reason: str | None = None) -> None:
    """A line of the job's own output that frames run `index`'s (see the module's docstring)."""
    if mark is None:
        return
    import json

    line = f"{mark} {what} {index}"
    if what == "end":
        line += f" {status} {'-' if code is None else code} {json.dumps(reason)}"
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(1, f"\n{line}\n".encode())


def _ended(run_id: str) -> bool:
    """Whether the run's row has ended (cancelled while it waited its turn; carried by the job's
    earlier start, before a requeue)."""
    row = _row(run_id)
    return row is not None and row.finished


def _row(run_id: str):
    """The run's ledger row (this node's ledger; on a shared home, the submit host's too)."""
    from runner.tracking.ledger import Ledger

    ledger = Ledger()
    try:
        rows = ledger.get(run_id)
        return rows[0] if rows else None
    finally:
        ledger.close()


@contextmanager
def _output_to(path: str | None) -> Iterator[None]:
    """This process's stdout and stderr (and so the command's, which inherits them) into the
    run's own log for the time of the run; then back to the carrier's own output."""
    if path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log):
            os.close(fd)
