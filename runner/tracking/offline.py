"""Runs recorded while their tracking server cannot be reached, for `mlproject runs sync` to send
there later.

An offline run is an ordinary MLflow run in a store of this machine's own
(`$MLPROJECT_HOME/offline/mlflow.db`, artifacts in `offline/mlruns/`), so the project's
`mlflow.log_*` calls work unchanged, and the ledger's row names that store as the run's
tracking. Two tags tie the two sides together: an offline run carries the server it was
meant for (TARGET_TAG, credentials masked), and its copy on the server carries the offline
run's ID (SYNCED_FROM_TAG), by which a sync that was interrupted finds what it had sent.

The experiment is kept by name. One chosen by ID (an ID of the server's, not of this store)
is filed offline under a name that holds the ID (`experiment 7 (offline)`), and the sync
sends the run to experiment 7 again; the Default experiment (0) is 0 on both sides.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from runner import home
from runner.errors import TrackingError, UsageError

TARGET_TAG = "mlproject.offline.target"
SYNCED_FROM_TAG = "mlproject.offline.run_id"
MODES = ("auto", "offline", "online")
_BY_ID = re.compile(r"experiment (.+) \(offline\)")


def directory() -> Path:
    return home.home() / "offline"


def store_uri() -> str:
    return f"sqlite:///{directory() / 'mlflow.db'}"


def sync_lock() -> Path:
    """Held by `runs sync` and by the removal of what it sent: one of them at a time."""
    return directory() / ".sync.lock"


def artifact_root() -> Path:
    return directory() / "mlruns"


def is_store(uri: str | None) -> bool:
    return uri is not None and uri == store_uri()


def check_mode(mode: str, backend: str) -> str:
    """The `--tracking` choice, refused in one line when it is not one or cannot apply."""
    if mode not in MODES:
        raise UsageError(f"--tracking: expected one of {', '.join(MODES)}, not {mode!r}",
                         python_hint=f"tracking= one of {', '.join(MODES)}")
    if mode == "offline" and backend != "local":
        raise UsageError(f"--tracking offline records on this machine; a {backend} job's run is recorded from its node",
                         hint="run it with the local backend, or leave out --tracking offline")
    return mode


def experiment_here(name: str | None, experiment_id: str | None) -> tuple[str | None, str | None]:
    """Where an offline run is filed in the offline store, for the experiment chosen by the user
    (already as runner.tracking.common.experiment_choice gives it)."""
    if experiment_id is None or experiment_id == "0":
        return name, experiment_id
    return f"experiment {experiment_id} (offline)", None


def experiment_there(name: str, experiment_id: str) -> tuple[str | None, str | None]:
    """The experiment on the server, (name, None) or (None, ID), for an offline experiment."""
    if experiment_id == "0":
        return None, "0"
    chosen_by_id = _BY_ID.fullmatch(name)
    return (None, chosen_by_id.group(1)) if chosen_by_id else (name, None)


def ensure_store(notify=None) -> str:
    """The offline store's URI, the store made first if this machine has none yet (by the mlflow
    library, as MLflow makes a sqlite store: ~3 s, once)."""
    path = directory() / "mlflow.db"
    if path.is_file():
        return store_uri()
    from runner.filelock import held

    directory().mkdir(parents=True, exist_ok=True)
    with held(directory() / ".create.lock"):
        if path.is_file():  # (made by another run while this one waited)
            return store_uri()
        if notify is not None:
            notify(f"note: making the offline tracking store {path} (once)")
        try:
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        except ImportError:
            raise TrackingError("recording runs offline needs the mlflow package, which is not installed",
                                hint="pip install 'mlproject-runner[mlflow]'") from None
        import logging

        for name in ("mlflow.store.db.utils", "alembic"):  # (its creation's INFO lines: our note says it)
            logging.getLogger(name).setLevel(logging.WARNING)
        temporary = path.with_name(".mlflow.db.making")
        temporary.unlink(missing_ok=True)  # (a making that was interrupted: never reused half-made)
        store = SqlAlchemyStore(f"sqlite:///{temporary}", str(artifact_root()))
        store.engine.dispose()
        temporary.rename(path)
    return store_uri()


def resumed(uri: str, run_id: str | None):
    """The tracking plan of a sweep resumed whose parent run was recorded offline (its trials
    are too), for the server the parent was meant for."""
    from runner.tracking import open_tracker, way_to
    from runner.tracking.session import TrackingTarget

    target = TrackingTarget(uri, True, way=way_to(uri))
    meant_for = open_tracker(uri, way=target.way).recorded_run(run_id).tags.get(TARGET_TAG) if run_id else None
    target.offline_for = meant_for or ""  # ("": for no server it names; `runs sync --to` says which)
    return target


@dataclass(frozen=True)
class Forgotten:
    runs: int  # sent runs whose offline originals were removed (or would be, dry)
    freed: int  # bytes of their artifacts


def forget_sent(age_seconds: float, dry_run: bool) -> Forgotten:
    """The offline originals of runs sent to their server (`runs sync`) that ended more than
    `age_seconds` ago: their artifacts removed and each run marked deleted, as MLflow deletes a run
    (the copy on the server is the run now; the ledger names it). Under the sync's lock."""
    import sqlite3
    import time

    from runner.filelock import held
    from runner.store import disk_usage, remove_tree
    from runner.tracking.artifacts import local_root
    from runner.tracking.ledger import Ledger
    from runner.tracking.sqlite_direct import verified_schema

    path = directory() / "mlflow.db"
    if not path.is_file() or not verified_schema(path):  # (a schema not verified: left alone)
        return Forgotten(0, 0)
    cutoff = time.time() - age_seconds
    with held(sync_lock()):
        db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        ledger = Ledger()
        try:
            active = db.execute("SELECT run_uuid, artifact_uri FROM runs WHERE lifecycle_stage = 'active'").fetchall()
            records = ledger.rows([run_id for run_id, _ in active])
            sent = [(run_id, local_root(uri)) for run_id, uri in active
                    if run_id in records and records[run_id].tracking_uri and not is_store(records[run_id].tracking_uri)
                    and (records[run_id].end_time or cutoff) < cutoff]
            run_dirs = [root.parent for _, root in sent if root is not None and root.parent.is_dir()
                        and artifact_root().resolve() in root.resolve().parents]
            freed = sum(disk_usage(run_dirs))
            if not dry_run:
                for run_id, _ in sent:  # (first: a run whose files are going is no longer offered)
                    db.execute("UPDATE runs SET lifecycle_stage = 'deleted', deleted_time = ? WHERE run_uuid = ?",
                               (int(time.time() * 1000), run_id))
                for run_dir in run_dirs:
                    remove_tree(run_dir, artifact_root())
        finally:
            db.close()
            ledger.close()
    return Forgotten(len(sent), freed)
