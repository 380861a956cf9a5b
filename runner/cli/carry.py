"""The runner inside a job that carries several runs, one after another: a task of a sweep's job
array holding several trials (runner.backends.slurm, `trials_per_task`).

Each run is still its own, carried out as a job of its own would be (the same `run_request`):
its ledger row taken over, its tracked run continued, its output in its own log (the file the
submit host recorded as the run's, `JobRequest.output`), its end recorded. What carrying saves
is the cluster's start of a job and the runner's own start: on the test cluster a task costs
Slurm ~0.17 s to schedule and start, and a runner ~0.25 s of the node's CPU; a carried trial
pays neither (docs/benchmarks.md).

One run is stopped alone through its cancel file (`job.cancel_carried`), which is looked for
before the run starts and while its command runs. A signal to the carrier (the job cancelled,
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


def carry(requests: list[JobRequest]) -> int:
    """Carry out the runs one after another: 0 when each ended FINISHED (or had ended before its
    turn), 1 when one did not, 128 + N when signal N stopped the carrier."""
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
        if _ended(run_id):
            say(f"carrier: run {run_id} ({number}/{len(requests)}) ended before its turn; not started")
            continue
        say(f"carrier: run {run_id} ({number}/{len(requests)})")
        with _output_to(request.output):
            all_finished = _carry_one(request, heard) and all_finished
    startup.ignore()
    return 128 + heard[0] if heard else 0 if all_finished else 1


def _carry_one(request: JobRequest, heard: list[int]) -> bool:
    """One run, to its end: whether it FINISHED."""
    from runner import home
    from runner.backends.job import CANCEL_FILE
    from runner.cli.run import run_request
    from runner.errors import RunnerError

    cancel_file = home.subdir("runs") / request.job_of.run_id / CANCEL_FILE

    def watch(submitted) -> None:
        if cancel_file.exists():
            submitted.request_cancel(signal.SIGTERM)

    try:
        if cancel_file.exists():  # (cancelled as its row was taken over: its first look stops it)
            say(f"run {request.job_of.run_id}: a cancel was asked for; it is stopped as soon as its command starts")
        return run_request(request.run_request(), in_job=True, heard=heard, watch=watch) == 0
    except RunnerError as exc:  # this run's error, in its own log; the next run is carried all the same
        print_error(exc.message, exc.hint, exc.details)
        return False


def _ended(run_id: str) -> bool:
    """Whether the run's row has ended (cancelled while it waited its turn; carried by the job's
    earlier start, before a requeue)."""
    from runner.tracking.ledger import Ledger

    ledger = Ledger()
    try:
        rows = ledger.get(run_id)
        return bool(rows) and rows[0].finished
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
