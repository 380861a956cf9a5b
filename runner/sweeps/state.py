"""A sweep's state, kept in the ledger's database beside the runs: what was asked, and each trial.

A sweep outlives its driver: `mlproject sweep --resume ID` reads what was asked and which
trials ended, and runs the rest. The parent MLflow run is also a ledger row (so a driver
that died leaves it FAILED for the ledger's reconcile, like any run whose runner died).
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from runner.status import RunStatus

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from runner.tracking.ledger import Ledger

DONE = (RunStatus.FINISHED, RunStatus.FAILED)  # a trial that ended on its own is never run again


@dataclass
class Trial:
    number: int  # from 1, in the order the method drew it
    parameters: dict[str, str]
    run_id: str | None = None
    status: str = "PENDING"  # PENDING, then the run's: RUNNING, FINISHED, FAILED, KILLED
    metric: float | None = None
    duration: float | None = None
    pruned_at: int | None = None  # stopped at this step for falling behind (--prune): done, not failed
    attempt: int = 1  # its run's attempt (--retries: the infrastructure ended the ones before)

    @property
    def done(self) -> bool:
        return self.status in DONE or self.pruned_at is not None

    @property
    def ended_well(self) -> bool:
        """Finished, or stopped early on purpose (pruned): not a failure of the sweep."""
        return self.status == RunStatus.FINISHED or self.pruned_at is not None

    @property
    def shown_status(self) -> str:
        return f"PRUNED@{self.pruned_at}" if self.pruned_at is not None else str(self.status)


@dataclass
class SweepRecord:
    id: str
    parent_run_id: str  # the parent run's ledger ID (its MLflow ID when tracked)
    request: dict  # the SweepRequest, as JSON
    created: float
    trials: list[Trial]


class SweepStore:
    def __init__(self, ledger: Ledger):
        self._db = ledger.db
        self._db.execute("CREATE TABLE IF NOT EXISTS sweeps (id TEXT PRIMARY KEY, parent_run_id TEXT NOT NULL,"
                         " request TEXT NOT NULL, created REAL NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS sweep_trials (sweep_id TEXT NOT NULL, number INTEGER NOT NULL,"
                         " parameters TEXT NOT NULL, run_id TEXT, status TEXT NOT NULL, metric REAL, duration REAL,"
                         " PRIMARY KEY (sweep_id, number))")
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(sweep_trials)")]
        # (A ledger from before --prune, or --retries.)
        for column, definition in (("pruned_at", "INTEGER"), ("attempt", "INTEGER NOT NULL DEFAULT 1")):
            if column not in columns:
                try:
                    self._db.execute(f"ALTER TABLE sweep_trials ADD COLUMN {column} {definition}")
                except sqlite3.OperationalError:  # another process added it first
                    pass

    def create(self, sweep_id: str, parent_run_id: str, request: dict, trials: list[Trial]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("INSERT INTO sweeps (id, parent_run_id, request, created) VALUES (?, ?, ?, ?)",
                             (sweep_id, parent_run_id, json.dumps(request), time.time()))
            self._db.executemany(
                "INSERT INTO sweep_trials (sweep_id, number, parameters, status) VALUES (?, ?, ?, 'PENDING')",
                [(sweep_id, t.number, json.dumps(t.parameters)) for t in trials])
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # (not after a COMMIT an interrupt landed just behind)
                self._db.execute("ROLLBACK")
            raise

    def add(self, sweep_id: str, trial: Trial) -> None:
        """A trial proposed as the sweep goes (optuna)."""
        self._db.execute("INSERT OR REPLACE INTO sweep_trials (sweep_id, number, parameters, status) VALUES (?, ?, ?, 'PENDING')",
                         (sweep_id, trial.number, json.dumps(trial.parameters)))

    def update(self, sweep_id: str, trial: Trial) -> None:
        self._db.execute("UPDATE sweep_trials SET run_id = ?, status = ?, metric = ?, duration = ?, pruned_at = ?,"
                         " attempt = ? WHERE sweep_id = ? AND number = ?",
                         (trial.run_id, trial.status, trial.metric, trial.duration, trial.pruned_at, trial.attempt,
                          sweep_id, trial.number))

    def get(self, id_prefix: str) -> list[SweepRecord]:
        rows = self._db.execute("SELECT id, parent_run_id, request, created FROM sweeps WHERE id LIKE ? ORDER BY created DESC LIMIT 3",
                                (id_prefix + "%",)).fetchall()
        return [SweepRecord(row[0], row[1], json.loads(row[2]), row[3], self.trials(row[0])) for row in rows]

    def trials(self, sweep_id: str) -> list[Trial]:
        rows = self._db.execute("SELECT number, parameters, run_id, status, metric, duration, pruned_at, attempt"
                                " FROM sweep_trials WHERE sweep_id = ? ORDER BY number", (sweep_id,)).fetchall()
        return [Trial(row[0], json.loads(row[1]), row[2], row[3], row[4], row[5], row[6], row[7]) for row in rows]

    def list(self, limit: int = 20) -> list[SweepRecord]:
        rows = self._db.execute("SELECT id FROM sweeps ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [self.get(row[0])[0] for row in rows]
