"""A finished run as recorded here: its ledger row and what its run directory kept
(the environment's lock, the working copy's changes, its untracked files' names)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runner import home
from runner.sources import provenance

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from runner.envs.python.pylock import PyLock
    from runner.tracking.ledger import RunRecord


@dataclass(frozen=True)
class RecordedRun:
    record: RunRecord
    run_dir: Path

    @property
    def run_id(self) -> str:
        return self.record.tracking_run_id or self.record.id

    @property
    def diff(self) -> Path | None:
        path = self.run_dir / provenance.SOURCE_DIR / provenance.DIFF_NAME
        return path if path.is_file() else None

    @property
    def diff_not_kept(self) -> bool:
        return (self.run_dir / provenance.SOURCE_DIR / provenance.OVER_CAP_NAME).is_file()

    @property
    def untracked(self) -> list[str]:
        path = self.run_dir / provenance.SOURCE_DIR / provenance.UNTRACKED_NAME
        return path.read_text().splitlines() if path.is_file() else []

    @property
    def inputs(self) -> dict[str, dict]:
        """{parameter: fingerprint} of the files its `path` parameters named (see provenance)."""
        import json

        path = self.run_dir / provenance.SOURCE_DIR / provenance.INPUTS_NAME
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def files(self) -> dict[str, str] | None:
        """{relative path: digest} of a project outside git, as it was (see provenance.keep_files)."""
        import json

        path = self.run_dir / provenance.SOURCE_DIR / provenance.FILES_NAME
        return json.loads(path.read_text())["files"] if path.is_file() else None

    @property
    def archive(self) -> Path | None:
        """The files themselves, when they were small enough to be kept."""
        path = self.run_dir / provenance.SOURCE_DIR / provenance.ARCHIVE_NAME
        return path if path.is_file() else None

    @property
    def lock_path(self) -> Path | None:
        """Its pylock.toml (a uv or virtualenv run's lock), if it recorded one."""
        from runner.envs import manager_module

        name = manager_module("uv").LOCK_NAME
        path = self.run_dir / "environment" / name if name else None
        return path if path is not None and path.is_file() else None

    def lock(self) -> PyLock | None:
        from runner.envs.python import pylock

        path = self.lock_path
        return pylock.read(path) if path is not None else None

    def packages(self) -> dict[str, str]:
        """name -> version of what its environment held (its lock; else the package list of
        its environment, while that environment is still in the store)."""
        lock = self.lock()
        if lock is not None:
            return lock.versions()
        from runner.envs import manager_module

        conda_lock = self.run_dir / "environment" / str(manager_module("conda").LOCK_NAME)
        if conda_lock.is_file():
            from runner.envs.conda import lock as condalock
            from runner.platforms import platform_name

            return {p.name.lower(): p.version for p in condalock.read(conda_lock).for_platform(platform_name())}
        from runner.store import META_DIR

        if not self.record.env_key:
            return {}
        listing = home.subdir("envs") / f"{self.record.env_manager}-{self.record.env_key}" / META_DIR / "packages.txt"
        found = {}
        if listing.is_file():
            for line in listing.read_text().splitlines():
                name, sep, version = line.partition("==")
                if sep:
                    found[name.lower()] = version.split(" ")[0]
        return found

    def results(self) -> tuple[dict[str, str], dict[str, float], str | None]:
        """Its parameters and metrics from tracking (the ledger's parameters when untracked),
        and a note when tracking could not be read."""
        params, metrics = {k: str(v) for k, v in self.record.parameters.items()}, {}
        if self.record.tracking_run_id and self.record.tracking_uri:
            try:
                from runner.tracking import tracker_for

                params, metrics = tracker_for(self.record.tracking_uri, quick=True).results(self.record.tracking_run_id)
            except Exception as exc:  # noqa: BLE001 - the ledger's view is still worth showing
                return params, {}, f"metrics not read from tracking: {getattr(exc, 'message', None) or exc}"
        return params, metrics, None


def recorded(run_id: str) -> RecordedRun:
    """The run `run_id` (or its first characters) from this machine's ledger; a run the ledger
    does not have (recorded on another machine, or by `mlflow run`) from the tracking store,
    by its full ID, with its recorded files downloaded."""
    from runner.errors import UsageError
    from runner.tracking.ledger import Ledger
    from runner.tracking.runs import find

    ledger = Ledger()
    try:
        record = find(ledger, run_id)
    except UsageError as exc:
        if not exc.message.startswith("no run with ID"):
            raise
        return _from_tracking(run_id, exc)
    finally:
        ledger.close()
    run = RecordedRun(record, home.subdir("runs") / record.id)
    lock = _lock_of(record.env_manager)
    if record.backend != "local" and record.tracking_run_id and record.tracking_uri and lock is not None \
            and not (run.run_dir / lock).is_file():
        # The environment was built on a node that keeps its own files (Ray): its lock, as the
        # node logged it to tracking (asked only for a manager that records one).
        from runner.tracking import tracker_for

        try:
            tracker = tracker_for(record.tracking_uri, quick=True)
            _download(tracker, tracker.recorded_run(record.tracking_run_id), run.run_dir, [lock])
        except Exception:  # noqa: BLE001 - the rerun then says the lock was not recorded
            pass
    return run


# Files a run keeps (see runner.sources.provenance and backends.local), as artifact paths.
_KEPT = tuple(f"{provenance.SOURCE_DIR}/{name}" for name in provenance.KEPT_NAMES)


def _from_tracking(run_id: str, not_in_ledger: Exception) -> RecordedRun:
    import os
    import re

    from runner.tracking import open_tracker, redact, resolve_uri
    from runner.tracking.ledger import RunRecord

    if not re.fullmatch(r"[0-9a-f]{32}", run_id) or os.environ.get("MLPROJECT_NO_TRACKING"):
        raise not_in_ledger
    uri, _ = resolve_uri(Path.cwd())
    tracker = open_tracker(uri)
    data = tracker.recorded_run(run_id)
    tags = data.tags
    source = tags.get("mlflow.source.name", "")
    if source.startswith("file://"):  # a local working copy, as MLflow names it
        source = source[len("file://"):]
    record = RunRecord(
        id=run_id, project_uri=source, project_dir="", entry_point=tags.get("mlflow.project.entryPoint", "main"),
        command="", env_manager=tags.get("mlflow.project.env", "local"), log_path="", parameters=dict(data.params),
        tracking_run_id=run_id, tracking_uri=redact(uri), git_commit=tags.get("mlflow.source.git.commit"),
        status=data.status, backend=tags.get("mlflow.project.backend", "local"),
    )
    run_dir = home.subdir("runs") / f"tracked-{run_id}"  # what the store kept of it, downloaded once
    _download(tracker, data, run_dir, (*_KEPT, *_locks()))
    return RecordedRun(record, run_dir)


def _lock_of(manager: str) -> str | None:
    """The artifact path of the lock `manager` records in every environment it builds; None: none."""
    from runner.envs import manager_module

    try:
        name = manager_module(manager).LOCK_NAME
    except Exception:  # noqa: BLE001 - a manager this version does not have
        return None
    return f"environment/{name}" if name else None


def _locks() -> list[str]:
    from runner.envs import all_managers

    return sorted({f"environment/{m.LOCK_NAME}" for m in all_managers() if m.LOCK_NAME})


def _download(tracker, data, run_dir: Path, paths) -> None:
    """The run's kept files that tracking has and `run_dir` lacks, downloaded once."""
    for path in paths:
        target = run_dir / path
        if target.is_file():
            continue
        content = tracker.read_artifact(data, path)
        if content is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
