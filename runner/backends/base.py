"""The backend seam: what the pipeline asks of the place a run executes, as typed contracts.

A backend is a module that satisfies `Backend` (a cluster's, `ClusterBackend`), registered
once in `runner.backends` by a loader whose return type names its Protocol: the type checker
(`make lint`) then checks the module against it, function by function. Capabilities are
attributes every cluster backend states, never defaults probed for at run time.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    from runner.backends.cluster import JobState
    from runner.launch import RunHandle  # (what `submit` returns: SubmittedRun, ClusterRun)
    from runner.request import PlannedRun, PreparedRun, RunRequest


OnSubmitted = Callable[[Any], None]  # called with the handle as soon as a cancel can reach the run


class Backend(Protocol):
    """Where a run executes. The pipeline (`runner.api`) fetches, loads, checks the parameters,
    plans the environment, and opens the run in tracking and the ledger; then `submit` takes it."""

    def check(self, config: dict[str, Any], request: RunRequest) -> Any:
        """Before anything is created: the backend config as options, or a UsageError (exit 2)."""
        ...

    def check_plan(self, state: PlannedRun) -> None:
        """What only the plan tells (its environment), before the run exists: UsageError or
        NotAvailableError when this backend cannot run it."""
        ...

    def submit(self, state: PreparedRun, on_submitted: Optional[OnSubmitted]) -> RunHandle: ...


class ClusterBackend(Backend, Protocol):
    """A backend whose runs are jobs of a scheduler, which says how they ended.

    A job runs the runner itself (`python -m runner job FILE`, see `runner.backends.job`); what
    the node cannot record (a job cancelled while pending, a node that died) the submit side
    reads from the cluster and records (`runner.backends.settle`)."""

    # (Read-only members: a module's constants satisfy them.)
    @property
    def QUICK_STATE(self) -> bool:
        """Whether job_state answers in milliseconds, so that every run settles this backend's
        finished jobs on its way (Slurm); otherwise only `runs`, `attach`, sweeps and runs of
        this backend do (Ray: its SDK takes seconds to import)."""
        ...

    def shares_ledger(self, run_id: str) -> bool:
        """Whether the runner inside run `run_id`'s job writes this host's ledger (a shared
        file system: Slurm's default) or its own (Ray; Slurm with `"shared_home": false`), in
        which case this host records the end from the cluster's word. Asked on the submit
        host; the runner inside the job reads the same from its request (JobOf.own_ledger)."""
        ...

    @property
    def JOB_ARRAYS(self) -> bool:
        """Whether many runs go out as one job array (`submit_array`; a sweep's trials)."""
        ...

    @property
    def ARRAY_NOUN(self) -> str:
        """What `submit_array` queues, as a sweep says it ("job array": a Slurm array, its
        tasks in its job IDs `<array>_<task>`; "carrier job": jobs each carrying several runs,
        which are `<job>_<place>`)."""
        ...

    def submit_array(self, states: list[PreparedRun], throttle: Optional[int] = None) -> list[Any]:
        """(JOB_ARRAYS) Many runs as one array of jobs, at most `throttle` at a time."""
        ...

    def job_state(self, job_id: str) -> Optional[JobState]:
        """How the job is doing; None when the cluster has no record of it."""
        ...

    def job_states(self, job_ids: list[str]) -> dict[str, Optional[JobState]]:
        """job_state of many jobs at once, in as few requests as the scheduler allows (the
        follower of a whole sweep asks this once a second)."""
        ...

    def chosen_job_id(self, ledger_id: str) -> Optional[str]:
        """The ID the run's job has before this host records it, where the submitter chooses it
        (Ray's submission ID), so that a job the cluster took from a submitter that died before
        recording it is still found; None where the scheduler hands the ID out (Slurm)."""
        ...

    def cancel(self, job_id: str) -> None: ...

    def stopped_by_cluster(self) -> Optional[tuple[str, str]]:
        """Asked by the runner inside a job that was signalled: (status, reason) when the
        cluster says why (its time limit, a cancel; SCHEDULED: the job was requeued and the
        run goes on at its next start), else None."""
        ...

    def pull_output(self, job_id: str, log_path: Path) -> None:
        """Copy the job's output, as far as the cluster keeps it, into the run's log here
        (Ray; a no-op where the job writes the log itself: Slurm)."""
        ...
