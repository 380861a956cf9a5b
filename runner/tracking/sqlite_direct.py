"""MLflow's sqlite store written directly, for schema versions verified by our tests.

MLflow pays ~2.5 s to import before it can write a run to `sqlite:///mlflow.db`.
The rows it writes are simple and its schema is versioned (alembic), so for the
versions in VERIFIED_SCHEMAS, which tests/test_tracking.py checks row for row
against what the mlflow library itself writes, we write them with sqlite3.
Any other version goes through the mlflow library instead. A database that does not
exist yet is made by the library in a child process (`make_store`), as MLflow makes it,
and then written directly: the library's import (~190 MB) never lands in a sweep's driver.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from runner import faults
from runner.errors import TrackingError
from runner.tracking import RunContext, StartRequest
from runner.tracking.common import experiment_choice, now_ms, random_run_name, refuse_changed_params

# alembic revision -> the MLflow release it was verified with
VERIFIED_SCHEMAS = {"dc11669786a5": "3.17.2"}
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_KEY = 250


def verified_schema(path: Path) -> bool:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return False
    return bool(row) and row[0] in VERIFIED_SCHEMAS


# (The child makes it under another name and links it into place: a store is never seen half
# made, and of several first runs at once one store wins; MLflow's own creation is not safe so.)
_MAKE_STORE = """
import os, sys
making, path = sys.argv[1:3]
from mlflow.tracking import MlflowClient
MlflowClient(tracking_uri="sqlite:///" + making).search_experiments(max_results=1)
try:
    os.link(making, path)
except FileExistsError:
    pass
"""


def make_store(uri: str) -> bool:
    """A `sqlite:///` store that does not exist yet, made by the mlflow library in a child
    process (from this process's working directory, as MLflow resolves its default artifact
    root there): True when it exists now and is written directly. False, the store left as it
    was, for any other URI, or when the child could not make it (the library then says why)."""
    import subprocess
    import sys

    from runner.tracking import local_store_path

    path = local_store_path(uri) if uri.startswith("sqlite:///") and not os.environ.get("MLFLOW_WORKSPACE") else None
    if path is None or path.exists() or not path.parent.is_dir():
        return False
    making = path.with_name(f".{path.name}.making-{os.getpid()}")
    try:
        subprocess.run([sys.executable, "-c", _MAKE_STORE, str(making), str(path)], stdin=subprocess.DEVNULL,
                       timeout=300, check=False)
    except (OSError, subprocess.SubprocessError):
        pass  # (the library, in this process, makes it or says why it cannot)
    finally:
        for leftover in (making, making.with_name(making.name + "-journal")):
            leftover.unlink(missing_ok=True)
    return path.is_file() and verified_schema(path)


def _join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


class SqliteTracker:
    def __init__(self, uri: str, path: Path, artifact_root: Path | None = None):
        self.uri = uri
        self.path = path
        # Where a new experiment's artifacts go: MLflow's default is ./mlruns of the caller.
        self.artifact_root = artifact_root

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        db.execute("PRAGMA busy_timeout = 30000")
        db.execute("PRAGMA foreign_keys = ON")
        return db

    def _experiment(self, db: sqlite3.Connection, name: str | None, experiment_id: str | None) -> tuple[str, str]:
        name, experiment_id = experiment_choice(name, experiment_id)
        if experiment_id is not None:
            row = db.execute(
                "SELECT experiment_id, artifact_location, lifecycle_stage FROM experiments WHERE experiment_id = ?",
                (int(experiment_id) if str(experiment_id).isdigit() else -1,),
            ).fetchone()
            if row is None:
                raise TrackingError(f"no MLflow experiment with ID {experiment_id!r} in {self.uri}")
        else:
            assert name is not None  # (experiment_choice names one whenever it gives no ID)
            row = _experiment_named(db, name)
            if row is None:
                return self._create_experiment(db, name)
        if row[2] != "active":
            raise TrackingError(f"MLflow experiment {row[0]} is deleted", hint="restore it or choose another experiment")
        return str(row[0]), row[1]

    def _create_experiment(self, db: sqlite3.Connection, name: str) -> tuple[str, str]:
        # As SqlAlchemyStore.create_experiment with the default artifact root (./mlruns, made absolute).
        stamp = now_ms()
        db.execute("BEGIN IMMEDIATE")
        try:
            # Another run may have created it since our lookup; the write lock settles who.
            row = _experiment_named(db, name)
            if row is not None:
                db.execute("COMMIT")
                return str(row[0]), row[1]
            cursor = db.execute(
                "INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, last_update_time, workspace)"
                " VALUES (?, NULL, 'active', ?, ?, 'default')",
                (name, stamp, stamp),
            )
            experiment_id = str(cursor.lastrowid)
            location = str((self.artifact_root or Path.cwd() / "mlruns") / experiment_id)
            db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (location, int(experiment_id)))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # (not after a COMMIT an interrupt landed just behind)
                db.execute("ROLLBACK")
            raise
        return experiment_id, location

    def start(self, request: StartRequest) -> RunContext:
        _check_sizes(request)
        db = self._db()
        try:
            if request.existing_run_id:
                return self._continue(db, request)
            experiment_id, location = self._experiment(db, request.experiment_name, request.experiment_id)
            run_id = os.urandom(16).hex()
            tags = dict(request.tags)
            name = request.run_name or tags.get("mlflow.runName") or random_run_name()
            tags.setdefault("mlflow.runName", name)
            artifact_uri = _join_uri(location, run_id, "artifacts")
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status,"
                    " start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id, deleted_time)"
                    " VALUES (?, ?, 'UNKNOWN', '', '', ?, 'RUNNING', ?, NULL, '', 'active', ?, ?, NULL)",
                    (run_id, name, tags.get("mlflow.user", ""), now_ms(), artifact_uri, int(experiment_id)),
                )
                db.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", [(k, v, run_id) for k, v in tags.items()])
                db.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)", [(k, v, run_id) for k, v in request.params.items()])
                db.execute("COMMIT")
                faults.checkpoint("tracking.created")  # (made, and not returned yet)
            except BaseException:
                if db.in_transaction:  # (not after a COMMIT an interrupt landed just behind)
                    db.execute("ROLLBACK")
                raise
            return RunContext(run_id, experiment_id, self.uri, artifact_uri)
        except sqlite3.Error as exc:
            raise TrackingError(f"cannot write to the MLflow store {self.uri}: {exc}") from None
        finally:
            db.close()

    def record_start(self, request: StartRequest, run_id: str) -> None:
        """Nothing left: start() wrote the parameters in the creation's own transaction."""

    def _continue(self, db: sqlite3.Connection, request: StartRequest) -> RunContext:
        run_id = request.existing_run_id
        assert run_id is not None  # (asked only to continue a run)
        row = db.execute(
            "SELECT experiment_id, artifact_uri, lifecycle_stage FROM runs WHERE run_uuid = ?", (run_id,)
        ).fetchone()
        if row is None or row[2] != "active":
            raise TrackingError(f"no active MLflow run {run_id!r} in {self.uri}", hint="check --run-id", python_hint="check run_id=")
        db.execute("BEGIN IMMEDIATE")  # the parameters are read inside it: no other writer in between
        try:
            db.execute("UPDATE runs SET status = 'RUNNING', end_time = NULL WHERE run_uuid = ?", (run_id,))
            db.executemany(
                "INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                [(k, v, run_id) for k, v in request.tags_for_existing_run().items()],
            )
            existing = dict(db.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)))
            refuse_changed_params(run_id, existing, request.params)
            db.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)",
                           [(k, v, run_id) for k, v in request.params.items() if k not in existing])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # (not after a COMMIT an interrupt landed just behind)
                db.execute("ROLLBACK")
            raise
        return RunContext(run_id, str(row[0]), self.uri, row[1])

    def end(self, run_id: str, status: str, end_time_ms: int | None = None, tags: dict[str, str] | None = None) -> None:
        try:
            db = self._db()
            try:
                if not tags:
                    db.execute("UPDATE runs SET status = ?, end_time = ? WHERE run_uuid = ?", (status, end_time_ms or now_ms(), run_id))
                    return
                db.execute("BEGIN IMMEDIATE")  # (the end and its tags: one commit)
                try:
                    db.executemany("INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                                   [(k, v, run_id) for k, v in tags.items()])
                    db.execute("UPDATE runs SET status = ?, end_time = ? WHERE run_uuid = ?",
                               (status, end_time_ms or now_ms(), run_id))
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise TrackingError(f"cannot end run {run_id} in {self.uri}: {exc}") from None

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        stamp = now_ms()
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            for key, value in metrics.items():
                db.execute("INSERT OR IGNORE INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?, ?, ?, ?, 0, 0)",
                           (key, value, stamp, run_id))
                db.execute("INSERT OR REPLACE INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)"
                           " VALUES (?, ?, ?, 0, 0, ?)", (key, value, stamp, run_id))
            db.execute("COMMIT")
        finally:
            db.close()

    def set_status(self, run_id: str, status: str) -> None:
        """A status that is not an end (SCHEDULED while a cluster job waits in its queue)."""
        db = self._db()
        try:
            db.execute("UPDATE runs SET status = ?, end_time = NULL WHERE run_uuid = ?", (status, run_id))
        finally:
            db.close()

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        db = self._db()
        try:
            db.executemany("INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", [(k, v, run_id) for k, v in tags.items()])
        finally:
            db.close()

    def find_running(self, experiment_name: str | None, experiment_id: str | None, key: str, value: str) -> list[str]:
        """IDs of the RUNNING runs tagged key=value (the experiment does not narrow a unique tag)."""
        db = self._db()
        try:
            rows = db.execute(
                "SELECT runs.run_uuid FROM runs JOIN tags ON tags.run_uuid = runs.run_uuid"
                " WHERE tags.key = ? AND tags.value = ? AND runs.status = 'RUNNING'", (key, value)).fetchall()
        except sqlite3.Error as exc:
            raise TrackingError(f"cannot read the MLflow store {self.uri}: {exc}") from None
        finally:
            db.close()
        return [row[0] for row in rows]

    def results(self, run_id: str) -> tuple[dict[str, str], dict[str, float]]:
        """The run's parameters and the last value of each metric."""
        params, metrics = self._read(("SELECT key, value FROM params WHERE run_uuid = ?", run_id),
                                     ("SELECT key, value FROM latest_metrics WHERE run_uuid = ?", run_id))
        return dict(params), dict(metrics)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of each value the run logged under `key`, by step (a step's last value)."""
        db = self._db()
        try:
            rows = db.execute("SELECT step, value FROM metrics WHERE run_uuid = ? AND key = ? ORDER BY step, timestamp",
                              (run_id, key)).fetchall()
        except sqlite3.Error as exc:
            raise TrackingError(f"cannot read the MLflow store {self.uri}: {exc}") from None
        finally:
            db.close()
        return sorted({int(step): float(value) for step, value in rows}.items())

    def recorded_run(self, run_id: str):
        from runner.tracking import RecordedRunData

        rows, tags, params = self._read(
            ("SELECT experiment_id, status, artifact_uri FROM runs WHERE run_uuid = ?", run_id),
            ("SELECT key, value FROM tags WHERE run_uuid = ?", run_id),
            ("SELECT key, value FROM params WHERE run_uuid = ?", run_id))
        if not rows:
            raise TrackingError(f"no run {run_id} in {self.uri}", hint="check MLFLOW_TRACKING_URI and the run ID")
        (experiment_id, status, artifact_uri), = rows
        return RecordedRunData(run_id, str(experiment_id), status or "", artifact_uri or "", dict(tags), dict(params))

    def _read(self, *queries: tuple[str, str]) -> list[list[tuple]]:
        """The rows of each (query, run ID), read in one connection."""
        db = self._db()
        try:
            return [db.execute(query, (run_id,)).fetchall() for query, run_id in queries]
        except sqlite3.Error as exc:
            raise TrackingError(f"cannot read the MLflow store {self.uri}: {exc}") from None
        finally:
            db.close()

    def read_artifact(self, run, path: str) -> bytes | None:
        from runner.tracking import read_local_artifact

        return read_local_artifact(run.artifact_uri, path)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None, artifact_uri: str = "") -> None:
        from runner.tracking.artifacts import copy_local

        name = path.name if artifact_path is None else f"{artifact_path.strip('/')}/{path.name}"
        copy_local(artifact_uri, path, name)


def _experiment_named(db: sqlite3.Connection, name: str) -> tuple | None:
    """(experiment_id, artifact_location, lifecycle_stage) of the experiment called `name`."""
    return db.execute(
        "SELECT experiment_id, artifact_location, lifecycle_stage FROM experiments WHERE name = ? AND workspace = 'default'",
        (name,),
    ).fetchone()


def _check_sizes(request: StartRequest) -> None:
    for key, value in request.params.items():
        if len(key) > MAX_KEY or len(value) > MAX_PARAM_VALUE:
            raise TrackingError(f"parameter {key[:40]!r} is too long for MLflow (at most {MAX_KEY} characters for a name, {MAX_PARAM_VALUE} for a value)")
    for key, value in request.tags.items():
        if len(value) > MAX_TAG_VALUE:
            raise TrackingError(f"tag {key!r} is too long for MLflow")
