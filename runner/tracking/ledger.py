"""The local run ledger: every run, tracked in MLflow or not, in one SQLite file.

WAL mode and a busy timeout make it safe for many runs writing at once. A row
is written when the command starts and completed when it ends; a runner that
was killed (SIGKILL, power loss) leaves a RUNNING row whose runner process is
gone, which the next invocation on the same host notices and ends as FAILED
(`reconcile`). A run on a cluster backend is SCHEDULED from its submission until
the runner on a node takes its row over (RUNNING, that runner's process and host);
the backend settles a row whose job ended without a word from that runner.
A tracked run's row also says whether its MLflow run was ended: one whose
runner died, or whose tracking server stayed down, before the end reached
tracking is ended there by a later invocation.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from runner import home
from runner.processes import process_is, start_ticks
from runner.status import RunStatus

SCHEMA_VERSION = 3
_COLUMNS = (
    "id", "tracking_run_id", "tracking_uri", "project_uri", "project_dir", "git_commit", "entry_point",
    "parameters", "env_manager", "env_key", "command", "status", "exit_code", "reason", "start_time",
    "end_time", "log_path", "runner_pid", "runner_start", "pgid", "tracking_ended", "backend", "job_id", "host",
)
# How long a tracking server may stay unreachable before a run's end there is given up.
_TRACKING_END_WINDOW = 7 * 24 * 3600


@dataclass
class RunRecord:
    id: str
    project_uri: str
    project_dir: str
    entry_point: str
    command: str
    env_manager: str
    log_path: str
    parameters: dict = field(default_factory=dict)
    env_key: str | None = None
    tracking_run_id: str | None = None
    tracking_uri: str | None = None
    git_commit: str | None = None
    status: str = RunStatus.RUNNING
    exit_code: int | None = None
    reason: str | None = None
    start_time: float = 0.0
    end_time: float | None = None
    runner_pid: int = 0
    runner_start: int | None = None  # the runner process's start time: a reused PID is not it
    pgid: int | None = None
    tracking_ended: int | None = None  # tracked runs: 0 until the MLflow run was ended, then 1
    backend: str = "local"
    job_id: str | None = None  # the cluster's job ID (slurm)
    host: str | None = None  # where runner_pid lives: only a runner on that host can tell it is gone

    @property
    def finished(self) -> bool:
        return RunStatus(self.status).is_terminal()

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in _COLUMNS}


class Ledger:
    def __init__(self, path: Path | None = None):
        self.path = path or home.home() / "ledger.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 30000")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            self._create()

    def _create(self) -> None:
        self._wal()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]  # again, under the lock
            if version < 1:
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS runs ("
                    "id TEXT PRIMARY KEY, tracking_run_id TEXT, tracking_uri TEXT, project_uri TEXT, project_dir TEXT,"
                    " git_commit TEXT, entry_point TEXT, parameters TEXT, env_manager TEXT, env_key TEXT, command TEXT,"
                    " status TEXT NOT NULL, exit_code INTEGER, reason TEXT, start_time REAL NOT NULL, end_time REAL,"
                    " log_path TEXT, runner_pid INTEGER, runner_start INTEGER, pgid INTEGER)"
                )
                self._db.execute("CREATE INDEX IF NOT EXISTS runs_by_start ON runs (start_time)")
                self._db.execute("CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status)")
            if version < 2:
                self._db.execute("ALTER TABLE runs ADD COLUMN tracking_ended INTEGER")
                # Runs still going (or orphaned) when the ledger was upgraded will need their end.
                self._db.execute("UPDATE runs SET tracking_ended = 0 WHERE status = 'RUNNING' AND tracking_run_id IS NOT NULL")
                self._db.execute("CREATE INDEX IF NOT EXISTS runs_not_ended_in_tracking ON runs (end_time)"
                                 " WHERE tracking_ended = 0")
            if version < 3:
                for column in ("backend TEXT", "job_id TEXT", "host TEXT"):
                    self._db.execute(f"ALTER TABLE runs ADD COLUMN {column}")
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # (not after a COMMIT an interrupt landed just behind)
                self._db.execute("ROLLBACK")
            raise

    def _wal(self) -> None:
        """WAL mode. SQLite answers "database is locked" at once, without its busy handler, when
        another process holds the file while the mode changes (fifty first runs at once did, in a
        fresh clone's test run): asked again for up to the busy timeout."""
        deadline = time.monotonic() + 30
        while True:
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def borrowed(self) -> Ledger:
        """This ledger's connection for another holder, whose close() leaves it open: the many
        runs of one job array are prepared over one connection (1,000 trials were 2,000 open
        files and ~140 MB), which its owner closes once."""
        view = object.__new__(Ledger)
        view.path, view._db, view._borrowed = self.path, self._db, True
        return view

    _borrowed = False

    def close(self) -> None:
        if not self._borrowed:
            self._db.close()

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for the records kept beside the runs (see runner.sweep.state)."""
        return self._db

    def start(self, record: RunRecord) -> None:
        record.start_time = record.start_time or time.time()
        record.runner_pid = record.runner_pid or os.getpid()
        record.runner_start = record.runner_start or start_ticks(record.runner_pid)
        record.host = record.host or this_host()
        if record.tracking_run_id and record.tracking_ended is None:
            record.tracking_ended = 0
        values = record.as_dict()
        values["parameters"] = json.dumps(record.parameters)
        self._db.execute(
            f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})",
            [values[c] for c in _COLUMNS],
        )

    def set_process(self, run_id: str, pgid: int) -> None:
        self._db.execute("UPDATE runs SET pgid = ? WHERE id = ?", (pgid, run_id))

    def set_job(self, run_id: str, job_id: str) -> None:
        self._db.execute("UPDATE runs SET job_id = ? WHERE id = ?", (job_id, run_id))

    def take_over(self, run_id: str) -> RunRecord | None:
        """The runner of a cluster job makes the submitted row its own: RUNNING, with its process
        and host. None when the row is gone or already ended (cancelled while the job started)."""
        pid = os.getpid()
        changed = self._db.execute(
            "UPDATE runs SET status = 'RUNNING', runner_pid = ?, runner_start = ?, host = ?, pgid = NULL"
            " WHERE id = ? AND status IN ('SCHEDULED', 'RUNNING')",
            (pid, start_ticks(pid), this_host(), run_id),
        ).rowcount
        return self.get(run_id)[0] if changed else None

    def mark_running(self, run_id: str) -> None:
        """A queued job started (as its cluster says): SCHEDULED -> RUNNING. Its runner is on the
        cluster and keeps its own ledger (Ray): no process here (runner_pid 0) answers for it."""
        self._db.execute("UPDATE runs SET status = 'RUNNING', runner_pid = 0, runner_start = NULL"
                         " WHERE id = ? AND status = 'SCHEDULED'", (run_id,))

    def requeued(self, run_id: str, reason: str) -> bool:
        """A cluster job requeued under its running run: SCHEDULED again, with no runner until
        the job starts again and its runner takes the row over."""
        return bool(self._db.execute(
            "UPDATE runs SET status = 'SCHEDULED', reason = ?, runner_pid = 0, runner_start = NULL, pgid = NULL"
            " WHERE id = ? AND status IN ('SCHEDULED', 'RUNNING')", (reason, run_id)).rowcount)

    def reopen(self, run_id: str) -> None:
        """An ended row runs again, with this process as its runner (a sweep that is resumed)."""
        pid = os.getpid()
        self._db.execute(
            "UPDATE runs SET status = 'RUNNING', exit_code = NULL, reason = NULL, end_time = NULL, runner_pid = ?,"
            " runner_start = ?, host = ?, tracking_ended = CASE WHEN tracking_run_id IS NULL THEN NULL ELSE 0 END"
            " WHERE id = ?", (pid, start_ticks(pid), this_host(), run_id))

    def finish(self, run_id: str, status: str, exit_code: int | None, reason: str | None = None,
               scheduled_only: bool = False) -> bool:
        """End an unfinished row; False if it had ended already (the first outcome stands), or,
        `scheduled_only`, if its runner had taken it over."""
        ending = "('SCHEDULED')" if scheduled_only else "('SCHEDULED', 'RUNNING')"
        return bool(self._db.execute(
            f"UPDATE runs SET status = ?, exit_code = ?, reason = ?, end_time = ? WHERE id = ? AND status IN {ending}",
            (status, exit_code, reason, time.time(), run_id),
        ).rowcount)

    def set_reason(self, run_id: str, reason: str) -> None:
        """Why an ended run ended, said by whoever stopped it (a sweep's pruning) over the runner's words."""
        self._db.execute("UPDATE runs SET reason = ? WHERE id = ?", (reason, run_id))

    def tracking_ended(self, run_id: str) -> None:
        self._db.execute("UPDATE runs SET tracking_ended = 1 WHERE id = ?", (run_id,))

    def not_ended_in_tracking(self) -> list[RunRecord]:
        """Ended rows whose MLflow run was not ended, and whose runner is gone (recent ones only)."""
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE tracking_ended = 0 AND status NOT IN ('SCHEDULED', 'RUNNING') AND end_time > ?",
            (time.time() - _TRACKING_END_WINDOW,),
        ).fetchall()
        return [r for r in map(_record, rows) if not process_is(r.runner_pid, r.runner_start)]

    def tracked_in(self, tracking_uri: str) -> list[RunRecord]:
        """The rows whose MLflow run is in this store, oldest first (the offline store's, to sync)."""
        rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE tracking_uri = ? ORDER BY start_time",
                                (tracking_uri,)).fetchall()
        return [_record(row) for row in rows]

    def moved(self, run_id: str, from_uri: str, tracking_uri: str, tracking_run_id: str) -> bool:
        """The row's MLflow run is now this one, in this store (an offline run synced); its ledger
        ID stays. False when it had moved already."""
        return bool(self._db.execute(
            "UPDATE runs SET tracking_uri = ?, tracking_run_id = ? WHERE id = ? AND tracking_uri = ?",
            (tracking_uri, tracking_run_id, run_id, from_uri)).rowcount)

    def get(self, id_prefix: str) -> list[RunRecord]:
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE id LIKE ? OR tracking_run_id LIKE ? ORDER BY start_time DESC LIMIT 3",
            (id_prefix + "%", id_prefix + "%"),
        ).fetchall()
        return [_record(row) for row in rows]

    def rows(self, ids: list[str]) -> dict[str, RunRecord]:
        """The rows of exactly these IDs, in as few queries as SQLite's parameter limit allows."""
        found: dict[str, RunRecord] = {}
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            query = f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE id IN ({', '.join('?' * len(part))})"
            for row in self._db.execute(query, part).fetchall():
                record = _record(row)
                found[record.id] = record
        return found

    def list(self, status: str | None = None, limit: int = 20) -> list[RunRecord]:
        query = f"SELECT {', '.join(_COLUMNS)} FROM runs"
        args: list = []
        if status:
            query += " WHERE status = ?"
            args.append(status.upper())
        query += " ORDER BY start_time DESC LIMIT ?"
        args.append(limit)
        return [_record(row) for row in self._db.execute(query, args).fetchall()]

    def orphans(self) -> list[RunRecord]:
        """RUNNING rows of this host whose runner process is gone (not those whose runner is on a
        cluster, runner_pid 0: their cluster says how they are doing)."""
        rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE status = 'RUNNING' AND runner_pid != 0"
                                " AND (host IS NULL OR host = ?)", (this_host(),)).fetchall()
        return [r for r in map(_record, rows) if not process_is(r.runner_pid, r.runner_start)]

    def unfinished_jobs(self, backends: tuple[str, ...]) -> list[RunRecord]:
        """Unfinished rows of these (cluster) backends: their jobs are asked how they are doing."""
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE status IN ('SCHEDULED', 'RUNNING')"
            f" AND backend IN ({', '.join('?' for _ in backends)})", backends,
        ).fetchall()
        return [_record(row) for row in rows]


def this_host() -> str:
    return os.uname().nodename


def _record(row: tuple) -> RunRecord:
    values = dict(zip(_COLUMNS, row))
    values["parameters"] = json.loads(values["parameters"] or "{}")
    values["backend"] = values["backend"] or "local"
    return RunRecord(**values)
