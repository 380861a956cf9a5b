"""A run on a cluster, seen from any process: its ledger row, its job, its output file.

`ClusterRun` is the SubmittedRun of a cluster backend. It follows the run from the
ledger (which the runner inside the job keeps) and from the scheduler (for the ends
that runner cannot record), echoes the job's output as it is written, and cancels
through the scheduler. The submitter gets one; `runner.attach(run_id)` gives one to
any other process."""
from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from runner import faults
from runner.launch import RunHandle, deferred
from runner.status import RunStatus

from typing import TYPE_CHECKING, Any, Callable
if TYPE_CHECKING:
    from runner.request import PreparedRun
    from runner.tracking.ledger import RunRecord

# After the scheduler says the job ended, the runner inside it is given this long to record
# the end itself (it knows the exit code and why); then the scheduler's word is recorded.
_RUNNER_GRACE_SECONDS = 3.0


@dataclass(frozen=True)
class JobState:
    """A cluster job as its scheduler reports it."""

    name: str  # the scheduler's own word: PENDING, RUNNING, COMPLETED, TIMEOUT, ...
    status: str | None  # the run's status once the job has ended (FINISHED, FAILED, KILLED); else None
    exit_code: int | None = None
    node: str | None = None
    reason: str | None = None  # the scheduler's reason, when it gives one (TimeLimit, Preempted, ...)
    # The job was ended by the infrastructure, not by its command or a cancel: its node was
    # lost or did not boot, or it was preempted. `--retries` runs such a run again.
    lost: bool = False
    restarts: int = 0  # how often the scheduler requeued the job (Slurm's Restarts)
    # The state is the run's own, as its carrier told it (Ray: the framed job log), not its job's,
    # which is a carrier's (see backends.settle).
    for_run: bool = False

    @property
    def ended(self) -> bool:
        return self.status is not None


class ClusterRun(RunHandle):
    def __init__(self, record: RunRecord, *, echo: bool = False, tracking_uri: str | None = None,
                 experiment_id: str | None = None, progress=None, follow: bool = True):
        self.run_id = record.tracking_run_id or record.id
        self.ledger_id = record.id
        self.backend = record.backend
        self.job_id = record.job_id
        self.log_path = Path(record.log_path) if record.log_path else None
        self.tracking_uri = tracking_uri if tracking_uri is not None else record.tracking_uri
        self.experiment_id = experiment_id
        self.exit_code: int | None = record.exit_code
        self.reason: str | None = record.reason
        self.cancel_signal: int | None = None
        self.launching = True  # what the CLI's Ctrl-C handler asks: a cancel now goes to the job
        self._status = record.status
        self._echo = echo
        self._progress = progress  # shows the time a job waits in its queue (see runner.progress)
        self._done = threading.Event()
        self._following = _Following()
        self._cancelling = threading.Lock()
        deferred.ready()  # request_cancel hands its work there (see runner.launch)
        if record.finished:
            self._done.set()
            if echo:
                from runner import backends
                from runner.tracking.runs import read_from

                backends.pull_output(record)  # (a cluster that keeps the output: Ray)
                self._write(read_from(self.log_path, 0))
        elif follow:
            self.start_following()

    def start_following(self) -> None:
        """Follow the run (the submitter starts it once the run is fully queued): with every
        other run this process follows, from one thread (runner.backends.following)."""
        if not self._done.is_set():
            from runner.backends import following

            following.follow(self)

    # -- the SubmittedRun interface (wait, get_status, done, cancel: RunHandle's) ----------
    # get_status(): SCHEDULED (queued), RUNNING, then FINISHED, FAILED or KILLED.
    def request_cancel(self, signum: int = signal.SIGTERM) -> None:
        """Ask the scheduler to cancel the job, without blocking (safe in a signal handler)."""
        if self._done.is_set() or not self._cancelling.acquire(blocking=False):
            return  # already asked: the scheduler is taking the job down
        self.cancel_signal = self.cancel_signal or signum
        deferred.call(self._cancel_job)  # (no thread is started in a handler: see runner.launch)

    def sync_window_size(self, from_fd: int = 1) -> None:
        """The job's output is a file, not a terminal: nothing to resize."""

    def __repr__(self) -> str:
        return f"ClusterRun(run_id={self.run_id!r}, {self.backend} job {self.job_id}, status={self._status!r})"

    # -- internals ---------------------------------------------------------------------
    def _cancel_job(self) -> None:
        from runner import backends

        if self.backend == "local":  # a run of another process on this host: through its runner
            from runner.tracking.ledger import Ledger
            from runner.tracking.runs import cancel

            ledger = Ledger()
            try:
                cancel(ledger, self.ledger_id)
            except Exception:  # noqa: BLE001 - the follower still records whatever happens
                pass
            finally:
                ledger.close()
        elif self.job_id is not None:
            from runner.tracking.ledger import Ledger
            from runner.tracking.runs import find

            try:
                ledger = Ledger()
                try:
                    backends.stop_job(ledger, find(ledger, self.ledger_id))
                finally:
                    ledger.close()
            except Exception:  # noqa: BLE001 - the follower still records whatever happens
                pass

    def _write(self, chunk: bytes) -> None:
        while chunk:
            try:
                written = os.write(1, chunk)
            except OSError:
                return  # our stdout went away; the file keeps everything
            chunk = chunk[written:]

    def _step(self, ledger, record: RunRecord | None, states: dict[str, JobState | None] | None, now: float) -> bool:
        """One look at the run: its ledger row `record` (None: gone), and, once a second, its
        job as the scheduler said (`states`, by job ID; None between those). True once it ended."""
        from runner import backends
        from runner.progress import step
        from runner.tracking.runs import find, read_from

        if record is None:  # (a row the batched read missed: asked as before, by ID or prefix)
            record = find(ledger, self.ledger_id)
        follow = self._following
        if self._progress is not None and (record.status == RunStatus.SCHEDULED) != (follow.queued is not None):
            if follow.queued is None:
                follow.queued = step(self._progress, f"{record.backend} job {record.job_id}: waiting in the queue")
                follow.queued.__enter__()
            else:
                follow.queued.__exit__(None, None, None)
                follow.queued = None
        if self._echo:  # (a sweep's trials are not echoed: their logs are not read)
            chunk = read_from(self.log_path, follow.position)
            if chunk:
                follow.position += len(chunk)
                self._write(chunk)
        self._status = record.status
        if record.finished:
            backends.pull_output(record)  # (a cluster that keeps the output: its last lines)
            if self._echo:  # what was written before the end was recorded
                self._write(read_from(self.log_path, follow.position))
            self.exit_code, self.reason = record.exit_code, record.reason
            return True
        if states is None:
            return False
        if record.status != RunStatus.SCHEDULED:
            backends.pull_output(record)
        try:
            ended = self._check_job(ledger, record, states)
        except _EndedUnrecorded as unrecorded:
            self._status, self.reason = RunStatus.FAILED, str(unrecorded)
            return True
        if ended is not None and follow.ended_at is None:
            follow.ended_at = now
        if ended is not None and follow.ended_at is not None and now - follow.ended_at >= self._grace(ended):
            faults.checkpoint("cluster.ended")  # (the cluster says the job ended; not recorded here yet)
            backends.settle(ledger, ended)
        return False

    def _stop_following(self) -> None:
        """The follower is done with the run (ended, or the follower failed on it)."""
        if self._following.queued is not None:
            self._following.queued.__exit__(None, None, None)
            self._following.queued = None
        self._done.set()

    @staticmethod
    def _grace(record: RunRecord) -> float:
        """How long the runner inside the job is given to record its end itself: only where it
        writes this host's ledger (see ClusterBackend.shares_ledger)."""
        from runner import backends

        return _RUNNER_GRACE_SECONDS if backends.cluster_backend(record.backend).shares_ledger(record.id) else 0.0

    def _check_job(self, ledger, record: RunRecord, states: dict[str, JobState | None]) -> RunRecord | None:
        """The record when the scheduler says its job has ended (or forgot it); else None.
        `states`: the scheduler's word on the jobs followed (a job missing: it did not answer)."""
        from runner import backends

        if record.backend == "local":  # its runner died without a word: the ledger's reconcile ends it
            from runner.processes import process_is
            from runner.tracking.runs import RUNNER_DIED, reconcile

            try:
                reconcile(ledger)
            except Exception as exc:  # noqa: BLE001 - e.g. a full disk: the ledger cannot be written now
                if not process_is(record.runner_pid, record.runner_start):
                    # Its runner is gone: how it ended is known here, and a later command records it.
                    raise _EndedUnrecorded(f"{RUNNER_DIED}; not recorded yet ({exc})") from None
            return None
        if record.job_id is None:
            return None
        self.job_id = record.job_id
        if record.job_id not in states:  # the scheduler did not answer this time; asked again later
            return None
        state = states[record.job_id]
        if state is not None and not state.ended:
            backends.settle(ledger, record, state)  # (a job started: RUNNING, where the cluster says so)
            return None
        return record


@dataclass
class _Following:
    """What the follower keeps of one run between its looks."""

    position: int = 0  # how much of the run's log has been read
    ended_at: float | None = None  # when the scheduler was first seen saying the job ended
    queued: Any = None  # the progress step open while the job waits in its queue


class _EndedUnrecorded(Exception):
    """A followed run whose runner died while its end cannot be recorded (see _check_job)."""


# -- what every cluster backend's submit does around its own submission ----------------------
# The skeleton: `record_scheduled` (the run SCHEDULED in the ledger and tracking), the backend's
# own submission, `follow_submitted` (the job named everywhere, the handle made and handed);
# `abandon` when anything in between fails or is interrupted.
def record_scheduled(state: PreparedRun, run_dir: Path, log_path: Path, backend: str) -> RunRecord:
    """The run (ledger ID: its directory's name) in the ledger and in tracking as SCHEDULED, with
    what a rerun needs of its source."""
    from runner.tracking import pending

    state.keep_source_state(run_dir)
    record = state.ledger_record(run_dir.name, log_path, status=RunStatus.SCHEDULED, backend=backend)
    state.ledger.start(record)
    faults.checkpoint("cluster.recorded")  # (in the ledger, not yet in tracking)
    pending.clear(state.note)  # the ledger has the run now
    state.tracked.record_start()
    state.tracked.set_status(RunStatus.SCHEDULED)
    return record


def queued(state: PreparedRun, record: RunRecord, job_id: str, scheduler: str) -> ClusterRun:
    """The run's job is queued: the ledger and the tracked run say which, and a handle follows it
    (not started yet). From here the runner inside the job, or the scheduler's word, ends it."""
    from runner.errors import RunnerError

    tracked, ledger = state.tracked, state.ledger
    ledger.set_job(record.id, job_id)
    tracked.ended = True
    try:
        tracked.set_tags({f"mlproject.{record.backend}.job_id": job_id})
    except RunnerError as exc:
        state.notify(f"warning: tracking: the run was not tagged with its job ID: {exc.message}")
    ledger.close()
    state.plan.source.release()  # the job fetches the project itself (a shared cache, or a staged copy)
    state.notify(f"=== Submitted run '{tracked.run_id or record.id}' as {scheduler} job {job_id} ===")
    record.job_id = job_id
    context = tracked.context
    return ClusterRun(record, experiment_id=context.experiment_id if context else None, follow=False)


def abandon(state: PreparedRun, exc: BaseException, ledger_id: str) -> None:
    """A submission that failed: its run ends FAILED (KILLED when interrupted), everywhere
    (`ledger_id`: its ledger row, if written by then)."""
    from runner.errors import RunnerError
    from runner.tracking.ending import end_everywhere

    reason = exc.message if isinstance(exc, RunnerError) else f"{exc.__class__.__name__}: {exc}"
    try:
        # (Asked of the ledger, not of whether `record_scheduled` returned: a signal between its
        # write and its return left a SCHEDULED row behind an abandoned submission, seed 20261210:88.)
        end_everywhere(state.ledger, ledger_id if _written(state, ledger_id) else None, state.tracked, RunStatus.ended_by(exc),
                       None, f"submission: {reason}", state.notify, note=state.note)
    finally:
        state.ledger.close()
        state.plan.source.release()


def _written(state: PreparedRun, ledger_id: str) -> bool:
    try:
        return any(row.id == ledger_id for row in state.ledger.get(ledger_id))
    except Exception:  # noqa: BLE001 - an unreadable ledger (a full disk): no row of it to end
        return False


def follow_submitted(state: PreparedRun, record: RunRecord, job_id: str, scheduler: str,
                     on_submitted: Callable[[ClusterRun], None] | None) -> ClusterRun:
    """After the job is queued: name it (`queued`), follow it (echoing its output unless
    detached or quiet), hand it to the caller, and wait for its end when the request is
    synchronous, as a local run does.

    Until the caller holds the handle, nothing else can stop the job: a signal (or any failure)
    before then stops it here and waits a little for its end to be recorded (seed 777:59, Ray,
    SIGHUP after "Submitted run": exit 129, and the job ran on to FINISHED)."""
    from runner.errors import RunFailedError

    request = state.request
    handed: list[ClusterRun] = []
    submitted: ClusterRun | None = None
    try:
        submitted = queued(state, record, job_id, scheduler)
        faults.checkpoint("cluster.queued")  # (the job named everywhere, its handle not yet the caller's)
        if request.stream_output and not request.detach:
            submitted._echo, submitted._progress = True, state.progress
        submitted.start_following()
        handed.append(submitted)
        if on_submitted is not None:
            on_submitted(submitted)
    except BaseException as exc:
        if not handed:
            _stop_unheld(record, job_id, submitted, getattr(exc, "signum", None))
        raise
    if request.synchronous and not request.detach and not submitted.wait():
        raise RunFailedError(submitted)
    return submitted


def queued_array(states: list[PreparedRun], records: list[RunRecord], job_ids: list[str], scheduler: str,
                 sent: list[str]) -> list[ClusterRun]:
    """After an array's jobs `sent` (arrays, or carrier jobs) are queued: each of its runs named
    (`queued`), then followed. No caller holds any of them until all are: anything raised
    meanwhile cancels the jobs sent, ends the runs not named yet, and follows those named a
    while to their recorded ends, as `_stop_unheld` does one run's."""
    from runner import backends

    handles: list[ClusterRun] = []
    try:
        for state, record, job_id in zip(states, records, job_ids):
            handles.append(queued(state, record, job_id, scheduler))
            faults.checkpoint("cluster.array_queued")  # (some runs named, the others not yet; none handed over)
    except BaseException as exc:
        for job_id in sent:
            try:
                backends.cluster_backend(records[0].backend).cancel(job_id)
            except Exception:  # noqa: BLE001 - the followers (or the next command) record what the cluster says
                pass
        for state, record in zip(states[len(handles):], records[len(handles):]):
            abandon(state, exc, record.id)
        stop_handles(handles, getattr(exc, "signum", None), cancel=False)
        raise
    for handle in handles:
        handle.start_following()
    return handles


def stop_handles(handles: list[ClusterRun], signum: int | None, cancel: bool = True) -> None:
    """Runs no caller holds: each cancelled (unless its job was), then followed up to
    `_UNHELD_WAIT` seconds in all to its recorded end."""
    import time

    for handle in handles:
        if cancel:
            handle.request_cancel(signum or signal.SIGTERM)
        handle.cancel_signal = handle.cancel_signal or signum
        handle.start_following()
    deadline = time.monotonic() + _UNHELD_WAIT
    for handle in handles:
        handle.wait(max(0.0, deadline - time.monotonic()))


_UNHELD_WAIT = 6.0  # seconds for a stopped job's end to be recorded before the runner exits anyway


def _stop_unheld(record: RunRecord, job_id: str, submitted: ClusterRun | None, signum: int | None) -> None:
    """Cancel a queued job no caller holds a handle to, and follow it a while to its end (the
    ledger must name the job for the next command to settle it if it takes longer)."""
    from runner import backends
    from runner.tracking.ledger import Ledger
    from runner.tracking.runs import find

    try:
        backends.cluster_backend(record.backend).cancel(job_id)
    except Exception:  # noqa: BLE001 - the follower (or the next command) records what the cluster says
        pass
    try:
        if submitted is None:
            ledger = Ledger()
            try:
                ledger.set_job(record.id, job_id)
                submitted = ClusterRun(find(ledger, record.id), follow=False)
            finally:
                ledger.close()
        submitted.cancel_signal = submitted.cancel_signal or signum
        submitted.start_following()
        submitted.wait(_UNHELD_WAIT)
    except Exception:  # noqa: BLE001 - e.g. an unwritable ledger: the next command settles the run
        pass


def replace_log_if_grown(log_path: Path, size: int, write: Callable[[Any], None]) -> None:
    """Replace the run's log here with the job's output as the cluster keeps it (`size` bytes,
    written into a file object by `write`), only when that grew: several followers of one run
    may pull at once, and none of them sees the log shrink (see ClusterBackend.pull_output)."""
    try:
        if log_path.stat().st_size >= size:
            return
    except FileNotFoundError:
        pass
    tmp = log_path.with_name(f".{log_path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as copy:
        write(copy)
    os.replace(tmp, log_path)
