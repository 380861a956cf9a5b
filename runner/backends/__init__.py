"""Where a run executes, behind one seam: the Protocols of `runner.backends.base`.

The pipeline (`runner.api`) is the same for every backend: fetch, load, check the
parameters, plan the environment, open the run in tracking and the ledger. Then
the backend takes the PreparedRun. Each backend is one module, registered in
`runner.seams` by one loader whose return type (`Backend` or `ClusterBackend`) has the
type checker check the module against its contract.

A cluster job runs the runner itself (`python -m runner job FILE`, `runner.backends.job`):
the node builds or reuses the environment by its hash, with the store's locks, and ends
the run as a local run does. What the node cannot record (a job cancelled while
pending, a node that died) the submit side reads from the cluster and records (`settle`).
"""
from __future__ import annotations

import os

from runner.errors import NotAvailableError
from runner.seams import BACKENDS
from runner.seams import CLUSTERS as CLUSTER_BACKENDS  # (name -> loader: `in` and iteration give the names)
from runner.status import RunStatus

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from runner.backends.base import Backend, ClusterBackend
    from runner.backends.cluster import JobState
    from runner.tracking.ledger import Ledger, RunRecord


def get(name: str | None) -> Backend:
    name = name or "local"
    if name not in BACKENDS:
        raise NotAvailableError(f"Got unsupported execution mode {name}: backend {name!r} is not available",
                                hint=f"choose one of: {', '.join(BACKENDS)} (-b/--backend)",
                                python_hint="choose one of: " + ", ".join(f'backend="{b}"' for b in BACKENDS))
    return BACKENDS[name]()


def cluster_backend(name: str) -> ClusterBackend:  # (not `cluster`: the submodule of that name would shadow it)
    """The cluster backend `name` (a ledger row's backend, known to be a cluster's)."""
    return CLUSTER_BACKENDS[name]()


# In the reason of a cluster run whose job ended before its runner took the run over: the
# command never ran (a resumed sweep runs such a trial again).
NEVER_STARTED = "its runner never started"


def settle(ledger: Ledger, record: RunRecord, state: JobState | None = None) -> RunRecord:
    """Record the end of a cluster run whose job is over but whose runner never said how it went
    (cancelled while pending, killed with its node, out of memory). Returns the row as it is now."""
    from runner.backends.cluster import JobState
    from runner.backends.job import is_carried
    from runner.tracking.ending import end_recorded
    from runner.tracking.runs import find

    if record.finished or record.backend == "local":
        return record
    backend = cluster_backend(record.backend)
    carried = record.job_id is not None and is_carried(record.id)  # (its job's state is its carrier's)
    if record.job_id is None:
        from runner.processes import process_is

        if process_is(record.runner_pid, record.runner_start):
            return record  # still being submitted
        chosen = backend.chosen_job_id(record.id)
        if chosen is not None:
            # The cluster may have taken the job before its submitter died: then it is the run's.
            taken = backend.job_state(chosen)  # (no answer: raised, and asked again later)
            if taken is not None:
                ledger.set_job(record.id, chosen)
                return settle(ledger, find(ledger, record.id), taken)
    if record.job_id is None:
        state = JobState("NOT SUBMITTED", RunStatus.FAILED)
        reason = "the submission was interrupted before the job was queued"
    else:
        state = state or backend.job_state(record.job_id)
        carried = carried and not (state is not None and state.for_run)
        if state is None:
            state = JobState("UNKNOWN", RunStatus.FAILED)
            reason = f"{record.backend} job {record.job_id} is gone and the cluster kept no record of its end"
        elif not state.ended:
            if state.name == RunStatus.RUNNING and record.status == RunStatus.SCHEDULED and not carried:
                ledger.mark_running(record.id)  # (where the runner inside keeps its own ledger: Ray)
                return find(ledger, record.id)
            return record
        elif state.status == RunStatus.FINISHED:
            reason = None  # (recorded here where the runner inside keeps its own ledger: Ray)
        else:
            reason = f"{record.backend} job {record.job_id} ended {state.name}"
            if state.status == RunStatus.FAILED and state.reason:  # why it failed, in the scheduler's words
                reason += f": {state.reason}"
    current = find(ledger, record.id)
    if current.finished:  # the runner inside the job recorded the end meanwhile
        return current
    pull_output(record)  # the job's last output, where the cluster keeps it, into the run's log here
    # A runner that never took its run over never started the command: whatever code the job
    # ended with (a launch failure's, a cancel's) is not the command's.
    never_ran = current.status == RunStatus.SCHEDULED and backend.shares_ledger(record.id)
    exit_code = None if never_ran or carried else state.exit_code  # (a carrier's exit code is not the run's)
    if carried and state.status == RunStatus.FINISHED:  # its carrier ended without ending it (killed outright?)
        state = JobState(state.name, RunStatus.FAILED, node=state.node)
        reason = f"{record.backend} job {record.job_id} ended {state.name} before this run's end was recorded"
    if record.job_id is None:  # never queued (a resumed sweep runs its trial again): not a matter of the nodes
        reason = f"{reason}; {NEVER_STARTED}"
    elif never_ran and state.status == RunStatus.FAILED and state.name != "UNKNOWN" and not os.path.exists(record.log_path):
        # Nor is the job's output where this host looks: the nodes do not see this host's
        # MLPROJECT_HOME (the first thing to check on a new cluster).
        reason = (f"{reason}; {NEVER_STARTED}, and the job's output {record.log_path} is not on this host:"
                  " the nodes must share MLPROJECT_HOME (or the config's mlproject_home) with it, or be told they"
                  " do not (\"shared_home\": false, with a staging_dir they share)")
    elif never_ran and state.status == RunStatus.FAILED:  # (a job the cluster lost before it ran: a resumed sweep runs it again)
        reason = f"{reason}; {NEVER_STARTED}"
    end_recorded(ledger, record, state.status, exit_code, reason)  # type: ignore[arg-type]
    return find(ledger, record.id)


def pull_output(record: RunRecord) -> None:
    """The run's output, as far as its cluster has it, into its log here (see the protocol)."""
    if record.backend not in CLUSTER_BACKENDS or record.job_id is None or not record.log_path:
        return
    from pathlib import Path

    try:
        cluster_backend(record.backend).pull_output(record.job_id, Path(record.log_path))
    except Exception:  # noqa: BLE001 - the output is fetched again at the next poll
        pass


def reconcile(ledger: Ledger, quick_only: bool = False, backend: str | None = None) -> list[RunRecord]:
    """Everything the ledger says is going but is not: local runs whose runner died (see
    tracking.runs.reconcile), and cluster runs whose job is over. Returns the runs it ended.
    `quick_only` (every run, on its way): only the clusters that answer in milliseconds (see
    QUICK_STATE), and `backend`'s."""
    from runner.tracking.runs import reconcile as reconcile_local

    ended = reconcile_local(ledger)
    for record in ledger.unfinished_jobs(tuple(CLUSTER_BACKENDS)):
        if quick_only and record.backend != backend and not cluster_backend(record.backend).QUICK_STATE:
            continue
        try:
            after = settle(ledger, record)
        except Exception:  # noqa: BLE001 - an unreachable cluster must not stop a local run
            continue
        if after.finished:
            ended.append(after)
    return ended


def stop_job(ledger: Ledger, record: RunRecord) -> None:
    """Ask the cluster to stop a run's job; a run whose job carries other runs too is stopped
    alone, through its carrier (job.cancel_carried), its job left to carry the rest."""
    from runner.backends.job import cancel_carried, is_carried

    if record.job_id is not None and is_carried(record.id):
        cancel_carried(ledger, record)
    elif record.job_id is not None:
        cluster_backend(record.backend).cancel(record.job_id)


def cancel(ledger: Ledger, record: RunRecord, wait: float = 30.0) -> RunRecord:
    """Cancel a cluster run (from any process): ask the cluster, then wait for the run's end."""
    import time

    from runner.tracking.runs import find

    stop_job(ledger, record)
    deadline = time.monotonic() + wait
    while True:
        current = settle(ledger, find(ledger, record.id))
        if current.finished or time.monotonic() > deadline:
            return current
        time.sleep(0.2)
