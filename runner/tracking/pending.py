"""Tracking runs being created but not yet in the ledger: the gap a SIGKILL can fall into.

The MLflow run is created before the ledger records it (the ledger's ID is the
run's), and its creation is sent before its answer is read. A runner killed in
between would leave an MLflow run RUNNING with nothing to say it was started.
So before the creation is sent, a small note names the attempt
(`$MLPROJECT_HOME/pending/<attempt>.json`, with the runner's PID), and the run
is created with the tag `mlproject.attempt=<attempt>`. Once the ledger holds the
run, the note goes. `reconcile` (run by every invocation) settles the notes of
runners that are gone: it finds their runs by the tag and ends them FAILED, or
KILLED when the runner was interrupted while the creation was on its way (it
marked the note so before it exited).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from runner import home
from runner.tracking import ATTEMPT_TAG, redact, tracker_for
from runner.processes import process_is, start_ticks
from runner.status import RunStatus

# A note whose tracking store stays unreachable this long is given up on.
_GIVE_UP_SECONDS = 7 * 24 * 3600
# A creation sent by a runner that then died may reach the store after the runner is
# gone; until a note is this old, finding no run does not yet mean there is none.
_IN_FLIGHT_SECONDS = 300


def new_attempt() -> str:
    return os.urandom(12).hex()


def note(attempt: str, tracking_uri: str, experiment_name: str | None, experiment_id: str | None,
         run_id: str | None = None) -> Path:
    """Written before the run's creation is sent; `tracking_uri` is already redacted."""
    path = home.subdir("pending") / f"{attempt}.json"
    home.save_json(path, {"attempt": attempt, "run_id": run_id, "tracking_uri": tracking_uri,
                          "experiment_name": experiment_name, "experiment_id": experiment_id,
                          "pid": os.getpid(), "start_ticks": start_ticks(os.getpid()), "written": time.time()})
    return path


def before_creation(tags: dict[str, str], tracking_uri: str, experiment_name: str | None,
                    experiment_id: str | None, run_id: str | None = None) -> Path:
    """A new attempt: its tag added to the run's `tags`, its note written (see the module)."""
    from runner.tracking.common import experiment_choice

    attempt = new_attempt()
    tags[ATTEMPT_TAG] = attempt
    return note(attempt, redact(tracking_uri), *experiment_choice(experiment_name, experiment_id), run_id)


def mark_interrupted(path: Path | None) -> None:
    """The runner is exiting on a signal with its creation's outcome unknown: the run, if the
    server made it, ends KILLED (a cancel), not FAILED (a dead runner)."""
    if path is None:
        return
    try:
        data = json.loads(path.read_text())
        data["status"] = RunStatus.KILLED
        home.save_json(path, data)
    except (OSError, ValueError):  # (a full disk: the run ends FAILED, as for a runner that died)
        pass


def settle(path: Path | None, exc: BaseException) -> None:
    """After a failed creation: the note goes unless the server may have created the run anyway
    (sent but unanswered, or interrupted while waiting); then the next invocation ends it."""
    if isinstance(exc, Exception) and not getattr(exc, "outcome_unknown", False):
        clear(path)
    elif not isinstance(exc, Exception):
        mark_interrupted(path)


def clear(path: Path | None) -> None:
    if path is not None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def reconcile() -> list[str]:
    """End the tracking runs of notes whose runner died (FAILED, or KILLED for a runner that
    exited on a signal); returns their run IDs.

    A note whose store cannot be reached now is kept for the next invocation."""
    from runner.errors import TrackingError

    directory = home.home() / "pending"
    if not directory.is_dir():
        return []
    ended: list[str] = []
    for path in directory.glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if process_is(int(data.get("pid", 0)), data.get("start_ticks")):
            continue  # its runner is alive: the run is being started right now
        age = time.time() - float(data.get("written", 0))
        try:
            tracker = tracker_for(data["tracking_uri"], quick=True)
            run_ids = [data["run_id"]] if data.get("run_id") else tracker.find_running(
                data.get("experiment_name"), data.get("experiment_id"), ATTEMPT_TAG, data["attempt"])
            for run_id in run_ids:
                tracker.end(run_id, RunStatus.KILLED if data.get("status") == RunStatus.KILLED else RunStatus.FAILED)
        except (TrackingError, KeyError):
            if age < _GIVE_UP_SECONDS:
                continue
            run_ids = []
        if not run_ids and age < _IN_FLIGHT_SECONDS and data["tracking_uri"].startswith(("http://", "https://")):
            continue  # the creation may still be on its way (a slow server or proxy): look again later
        clear(path)
        ended.extend(run_ids)
    return ended
