"""One thread that follows every cluster run this process holds a handle to.

A sweep of 1,000 trials queued as job arrays holds 1,000 `ClusterRun`s. Each looking for
itself (a thread, a ledger read ten times a second and a request to the scheduler every
second) is 10,000 reads and 1,000 `scontrol` commands a second on the submit host. The
follower reads the ledger rows of all of them in one query each tick and asks each
scheduler once a second about all their jobs (`ClusterBackend.job_states`); each run then
takes its own step (`ClusterRun._step`). The thread ends when it has nothing to follow and
is started again by the next run to follow.
"""
from __future__ import annotations

import threading
import time

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from runner.backends.cluster import ClusterRun, JobState

POLL_SECONDS = 0.1  # the ledger and the output files (local reads)
JOB_POLL_SECONDS = 1.0  # the schedulers (a command, or a request to a controller)

_lock = threading.Lock()
_runs: dict[int, ClusterRun] = {}  # by id(): two handles of one run are each followed
_thread: threading.Thread | None = None


def follow(run: ClusterRun) -> None:
    """Follow `run` until its end is known (then its `done` is set)."""
    global _thread
    with _lock:
        _runs[id(run)] = run
        if _thread is None:
            _thread = threading.Thread(target=_loop, daemon=True, name="mlproject-follow")
            _thread.start()


def _loop() -> None:
    global _thread
    from runner.tracking.ledger import Ledger

    ledger = None
    next_job_poll = time.monotonic() + JOB_POLL_SECONDS
    try:
        ledger = Ledger()
        while True:
            with _lock:
                runs = list(_runs.values())
                if not runs:
                    _thread = None  # (under the lock: a run added from now on starts a new thread)
                    return
            now = time.monotonic()
            poll_jobs = now >= next_job_poll
            if poll_jobs:
                next_job_poll = now + JOB_POLL_SECONDS
            states = None
            try:
                rows = ledger.rows([run.ledger_id for run in runs])
                if poll_jobs:
                    states = _job_states(runs, rows)
            except Exception:  # noqa: BLE001 - e.g. a locked or full disk: each run is looked at alone
                rows = {}
            for run in runs:
                try:
                    ended = run._step(ledger, rows.get(run.ledger_id), states, now)
                except Exception:  # noqa: BLE001 - a run that cannot be followed is given up, as before
                    ended = True
                if ended:
                    with _lock:
                        _runs.pop(id(run), None)
                    run._stop_following()
            time.sleep(POLL_SECONDS)
    finally:
        if ledger is not None:
            ledger.close()
        with _lock:
            given_up = []
            if _thread is threading.current_thread():  # (died of something unforeseen: its runs end unfollowed)
                _thread = None
                given_up = list(_runs.values())
                _runs.clear()
        for run in given_up:
            run._stop_following()


def _job_states(runs: list[ClusterRun], rows: dict) -> dict[str, JobState | None]:
    """The scheduler's word on every followed job that has not ended in the ledger: one
    `job_states` per backend. A backend that did not answer is left out (asked next time)."""
    from runner import backends

    wanted: dict[str, list[str]] = {}
    for run in runs:
        record = rows.get(run.ledger_id)
        if record is not None and not record.finished and record.job_id and record.backend != "local":
            wanted.setdefault(record.backend, []).append(record.job_id)
    states: dict[str, JobState | None] = {}
    for name, job_ids in wanted.items():
        try:
            states.update(backends.cluster_backend(name).job_states(job_ids))
        except Exception:  # noqa: BLE001 - the scheduler did not answer this time
            pass
    return states
