"""Retries (`--retries N`): a run whose job the infrastructure ended runs again, as a new attempt.

A cluster job that ended because its node was lost or did not boot, or because it was
preempted (Slurm's NODE_FAIL, BOOT_FAIL, PREEMPTED; a Ray job whose supervisor died with its
node) says nothing about the command: it is submitted again, up to N times. Each attempt is a
run of its own, so the failed one stays recorded as it ended; a new one is tagged with its
attempt number and the run it retries. A command's own failure is not retried unless
`retry_failed` says so; a run that was stopped (a cancel, Ctrl-C, a pruned trial) never is.

Used by `mlproject run` (runner.cli.run), `runner.run` and the sweep driver, which follow the
run to its end: a detached run has no one to submit the next attempt.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from runner.errors import UsageError
from runner.status import RunStatus

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from runner.launch import RunHandle
    from runner.request import RunRequest

ATTEMPT_TAG = "mlproject.retry.attempt"  # 2, 3, ...: the first attempt is an ordinary run
# (Not `mlproject.attempt`: that one marks a run being created; see runner.tracking.pending.)
RETRY_OF_TAG = "mlproject.retry.of"  # the run (MLflow ID, or ledger ID untracked) this attempt retries


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 0  # attempts after the first
    retry_failed: bool = False  # also a command that failed on its own

    def check(self, detach: bool = False) -> None:
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise UsageError(f"retries must be a whole number of 0 or more, not {self.retries!r}",
                             hint="for example --retries 2")
        if self.retry_failed and not self.retries:
            raise UsageError("--retry-failed needs --retries N", hint="for example --retries 1 --retry-failed")
        if self.retries and detach:
            raise UsageError("--retries needs a runner that follows the run to its end; --detach returns at once",
                             hint="drop --detach (or --retries); a sweep retries its trials itself")

    def why_again(self, handle: RunHandle, attempt: int) -> str | None:
        """Why the run that just ended as `attempt` runs again; None: its end stands."""
        if attempt > self.retries or handle.get_status() != RunStatus.FAILED:
            return None  # finished, or stopped on purpose (KILLED), or no attempt left
        lost = lost_job(handle.backend, handle.job_id, handle.ledger_id, handle.exit_code)
        if lost is not None:
            return lost
        if self.retry_failed:
            code = handle.exit_code
            return "it failed" + (f" with exit code {code}" if code is not None else "") + " (--retry-failed)"
        return None


def lost_job(backend: str, job_id: str | None, ledger_id: str | None = None, exit_code: int | None = None) -> str | None:
    """'<backend> job <id> ended NODE_FAIL' when the cluster says the infrastructure ended the job
    of run `ledger_id`. Not for a run whose job carries other runs too and that ended by its
    command's own `exit_code`: whatever its carrier's job ended with later did not end it."""
    from runner import backends
    from runner.backends.job import is_carried

    if backend not in backends.CLUSTER_BACKENDS or job_id is None:
        return None
    if exit_code is not None and ledger_id is not None and is_carried(ledger_id):
        return None
    try:
        state = backends.cluster_backend(backend).job_state(job_id)
    except Exception:  # noqa: BLE001 - the cluster did not answer: the end stands as recorded
        return None
    if state is None or not state.lost:
        return None
    return f"{backend} job {job_id} ended {state.name}"


def next_attempt(request: RunRequest, retried_run_id: str, attempt: int) -> RunRequest:
    """The request of attempt `attempt`, a new run (never a continued one) tagged as a retry."""
    tags = {**(request.tags or {}), ATTEMPT_TAG: str(attempt), RETRY_OF_TAG: retried_run_id}
    return replace(request, run_id=None, tags=tags)
