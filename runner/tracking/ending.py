"""The one way a run's end is recorded everywhere: the ledger, then tracking, then the ledger's
mark that tracking has it; a run still named by a pending note keeps its note until one of the
two has the end.

The order is the guarantee: the ledger first, so the outcome is never lost even if tracking is
down; until the ledger's row says the MLflow run was ended, a later invocation ends it there
(`runner.tracking.runs.reconcile`)."""
from __future__ import annotations
from runner.status import RunStatus

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Callable

    from runner.tracking.ledger import Ledger, RunRecord
    from runner.tracking.session import TrackedRun


def end_everywhere(ledger: Ledger | None, run_id: str | None, tracked: TrackedRun, status: str,
                   exit_code: int | None, reason: str | None, notify: Callable[[str], None],
                   note: Path | None = None) -> None:
    """End a run this process has open: its ledger row `run_id` (None: not written yet) and its
    tracked run. The ledger stays open (its owner closes it)."""
    try:
        if ledger is not None and run_id is not None:
            ledger.finish(run_id, status, exit_code, reason)
    finally:
        try:
            tracked.finish(status, notify)
            if ledger is not None and run_id is not None and tracked.end_recorded:
                ledger.tracking_ended(run_id)
        finally:
            if note is not None:
                from runner.tracking import pending

                if tracked.end_recorded or (ledger is not None and run_id is not None):
                    pending.clear(note)  # tracking has the end, or the ledger will deliver it
                elif status == RunStatus.KILLED:
                    pending.mark_interrupted(note)  # its reconcile ends the run KILLED, not FAILED


def end_recorded(ledger: Ledger, record: RunRecord, status: str, exit_code: int | None, reason: str | None,
                 scheduled_only: bool = False) -> bool:
    """End a run whose runner is gone, from its ledger row: False when another process recorded
    its end first (or, `scheduled_only`, took the run over)."""
    from runner.tracking.runs import end_in_tracking

    if not ledger.finish(record.id, status, exit_code, reason, scheduled_only):
        return False
    if end_in_tracking(record.tracking_run_id, record.tracking_uri, status, record.log_path):
        ledger.tracking_ended(record.id)
    return True
