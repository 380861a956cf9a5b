"""Tracking runs created but not yet in the ledger: the gap a SIGKILL can fall into.

The MLflow run is created before the ledger records it (the ledger's ID is the
run's). A runner killed in between would leave the MLflow run RUNNING with
nothing to say it was ever started. So right after the run is created, a small
note names it (`$MLPROJECT_HOME/pending/<run id>.json`, with the runner's PID);
once the ledger holds the run, the note goes. `reconcile` (run by every
invocation) ends the tracking run of any note whose runner is gone.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from runner import home
from runner.tracking.ledger import _process_start_ticks, process_is


def note(run_id: str, tracking_uri: str) -> Path:
    path = home.subdir("pending") / f"{run_id}.json"
    home.save_json(path, {"run_id": run_id, "tracking_uri": tracking_uri, "pid": os.getpid(),
                          "start_ticks": _process_start_ticks(os.getpid())})
    return path


def clear(path: Path | None) -> None:
    if path is not None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def reconcile() -> list[str]:
    """End, FAILED, the tracking runs of notes whose runner died; returns their run IDs."""
    from runner.tracking.runs import end_in_tracking

    directory = home.home() / "pending"
    if not directory.is_dir():
        return []
    ended = []
    for path in directory.glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if process_is(int(data.get("pid", 0)), data.get("start_ticks")):
            continue  # its runner is alive: the run is being started right now
        end_in_tracking(data["run_id"], data["tracking_uri"])
        clear(path)
        ended.append(data["run_id"])
    return ended
