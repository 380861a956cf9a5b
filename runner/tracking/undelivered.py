"""A run's artifacts that did not reach its tracking store when the run ended (the server was
down, the store's disk full): listed in the run's directory, and delivered by a later invocation
before it records the run's end there (runner.tracking.runs.end_in_tracking)."""
from __future__ import annotations

import json
from pathlib import Path

FILE_NAME = "undelivered-artifacts.json"


def keep(listing: Path, artifact_uri: str, missed: list[tuple[Path, str | None]]) -> None:
    from runner.home import save_json

    save_json(listing, {"artifact_uri": artifact_uri,
                        "artifacts": [[str(path), artifact_path] for path, artifact_path in missed]})


def deliver(run_dir: Path, tracker, tracking_run_id: str) -> bool:
    """Upload what the run's directory lists as undelivered; True when nothing is left to deliver
    (the listing is then removed), False when the store still refuses (it is kept for later)."""
    listing = run_dir / FILE_NAME
    try:
        pending = json.loads(listing.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return True
    except (OSError, ValueError):  # unreadable: nothing can be delivered from it
        listing.unlink(missing_ok=True)
        return True
    for path, artifact_path in pending["artifacts"]:
        if Path(path).exists():  # (a run's directory removed since: nothing to send)
            tracker.log_artifact(tracking_run_id, Path(path), artifact_path, pending["artifact_uri"])
    listing.unlink(missing_ok=True)
    return True
