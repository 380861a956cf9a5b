"""`mlproject runs sync`: the runs recorded offline sent to their tracking server, once each.

Each ended run of the offline store (runner.tracking.offline), oldest first so that a sweep's
parent is there before its trials: its experiment found or made on the server, a run made
there with the offline run's start time, name and tags (its parent's ID, a rerun's original's
and a retry's first attempt's mapped to their copies, and SYNCED_FROM_TAG added), then its parameters, every value of every metric
with its step and timestamp, its artifacts, and last its end (status and end time). Then
the ledger's row names the server's run; the ledger ID stays what it was.

The end goes last, so a copy that has it is whole. A sync interrupted before it leaves a
RUNNING copy, which the next sync finds by its tag, deletes and sends again; one interrupted
after it leaves only the ledger to update. A second sync finds nothing to send: it neither
imports mlflow nor asks the server anything. Sending goes through the mlflow library's client
(sync is not on a run's way; MLflow's own client knows every store and artifact repository).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from runner import faults
from runner.errors import TrackingError
from runner.tracking import absolute_uri, offline, redact, with_credentials
from runner.tracking.common import tag_filter

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, Callable, Sequence

    from runner.tracking.ledger import Ledger, RunRecord

_PARENT_TAG = "mlflow.parentRunId"
# Tags whose value is another run's ID (a rerun's original, a retry's first attempt): on the
# server they name that run's copy.
_NAMING_A_RUN = ("mlproject.rerunOf", "mlproject.retry.of")


@dataclass
class SyncResult:
    sent: list[tuple[str, str, str]] = field(default_factory=list)  # (ledger ID, server, its run ID there)
    waiting: list[tuple[str, str]] = field(default_factory=list)  # (ledger ID, why it was not sent yet)
    unreachable: dict[str, str] = field(default_factory=dict)  # server -> why it could not be reached


def sync(ledger: Ledger, to: str | None = None, run_ids: Sequence[str] = (),
         notify: Callable[[str], None] | None = None, progress=None) -> SyncResult:
    """Send the ended offline runs (those whose ledger IDs start with one of `run_ids`, if given)
    to `to`, or each to the server it was recorded for; `progress` shows the sending (see
    runner.progress.step). The caller's `ledger` is reconciled already (a run whose runner died is
    ended, so that it can be sent), and stays open."""
    store = offline.store_uri()
    result = SyncResult()
    if not _chosen(ledger.tracked_in(store), run_ids):
        return result
    from runner.filelock import held

    with held(offline.sync_lock()):  # (two syncs at once would send a run twice)
        records = _chosen(ledger.tracked_in(store), run_ids)  # again: a sync that held it sent some
        target = absolute_uri(to, Path.cwd()) if to else None
        from runner.progress import step

        with step(progress, f"sending {len(records)} offline run(s)"):
            _Sender(ledger, store, target, result, notify or (lambda _: None)).send(records)
    return result


def _chosen(records: list[RunRecord], run_ids: Sequence[str]) -> list[RunRecord]:
    return [r for r in records if not run_ids or any(r.id.startswith(prefix) for prefix in run_ids)]


class _Sender:
    def __init__(self, ledger: Ledger, store: str, to: str | None, result: SyncResult, notify: Callable[[str], None]):
        # (MLflow's client prints a "View run" link for each run it ends: our report says it)
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise TrackingError("sending offline runs needs the mlflow package, which is not installed",
                                hint="pip install 'mlproject-runner[mlflow]'") from None
        self.client_class = MlflowClient
        self.ledger, self.store, self.to, self.result, self.notify = ledger, store, to, result, notify
        self.source = MlflowClient(store)
        self.clients: dict[str, Any] = {}
        self.tried: dict[str, bool] = {}  # server -> whether it could be connected to
        self.experiments: dict[tuple[str, str], str] = {}

    def send(self, records: list[RunRecord]) -> None:
        for record in records:
            if not record.finished:
                self.result.waiting.append((record.id, "still running"))
                continue
            try:
                self._send_one(record)
            except TrackingError:
                raise
            except Exception as exc:  # noqa: BLE001 - the library's errors (HTTP, a store's) in one line
                raise _failed(record, exc) from None

    def _send_one(self, record: RunRecord) -> None:
        assert record.tracking_run_id is not None  # (tracked_in gives tracked rows)
        run = self.source.get_run(record.tracking_run_id)
        tags = dict(run.data.tags)
        meant_for = tags.pop(offline.TARGET_TAG, None)
        if self.to:
            target = self.to
        elif meant_for:
            target = _with_credentials(meant_for)
        else:
            self.result.waiting.append((record.id, "it does not say which server it is for: give --to URI"))
            return
        if offline.is_store(target):
            raise TrackingError(f"run {record.id} cannot be sent to the offline store itself",
                                hint="give the tracking server: mlproject runs sync --to URI")
        if not self._reachable(target):
            self.result.waiting.append((record.id, f"its server {redact(target)} cannot be reached"))
            return
        parent = tags.get(_PARENT_TAG)
        if parent:
            moved = self._moved(parent)
            if moved is None:
                self.result.waiting.append((record.id, f"its parent run {parent} is not sent yet"))
                return
            tags[_PARENT_TAG] = moved
        for key in _NAMING_A_RUN:
            if tags.get(key):
                tags[key] = self._moved(tags[key]) or tags[key]  # (not sent yet: its ID here)
        tags[offline.SYNCED_FROM_TAG] = record.id
        client = self._client(target)
        experiment_id = self._experiment(client, target, run.info.experiment_id)
        copy = self._existing_copy(client, experiment_id, record.id) or self._copy(client, run, experiment_id, tags)
        self.ledger.moved(record.id, self.store, redact(target), copy)
        self.result.sent.append((record.id, redact(target), copy))
        self.notify(f"run {record.id} sent to {redact(target)} (run {copy} there)")

    def _moved(self, offline_run_id: str) -> str | None:
        """The server's ID of a run of the offline store, once it was sent (else None); an ID that
        is no offline run's is the server's already."""
        row = self.ledger.rows([offline_run_id]).get(offline_run_id)
        if row is None:
            return offline_run_id
        return None if offline.is_store(row.tracking_uri) else row.tracking_run_id

    def _reachable(self, target: str) -> bool:
        """Whether the server can be connected to, tried once per server (MLflow's client would
        retry one that cannot for minutes); one that cannot is in the result, with the reason."""
        if target not in self.tried:
            reason = _connect_problem(target)
            self.tried[target] = reason is None
            if reason is not None:
                self.result.unreachable[redact(target)] = reason
        return self.tried[target]

    def _client(self, target: str):
        if target not in self.clients:
            self.clients[target] = self.client_class(target)
        return self.clients[target]

    def _experiment(self, client, target: str, offline_experiment_id: str) -> str:
        key = (target, offline_experiment_id)
        if key not in self.experiments:
            here = self.source.get_experiment(offline_experiment_id)
            name, experiment_id = offline.experiment_there(here.name, str(here.experiment_id))
            if experiment_id is not None:
                client.get_experiment(experiment_id)  # (raises when the server has none of that ID)
            else:
                found = client.get_experiment_by_name(name)
                experiment_id = found.experiment_id if found is not None else client.create_experiment(name)
            self.experiments[key] = str(experiment_id)
        return self.experiments[key]

    def _existing_copy(self, client, experiment_id: str, ledger_id: str) -> str | None:
        """The whole copy an earlier sync made of this run, if any; a partial one is deleted."""
        whole = None
        for found in client.search_runs([experiment_id], tag_filter(offline.SYNCED_FROM_TAG, ledger_id)):
            if found.info.status != "RUNNING" and found.info.end_time and whole is None:
                whole = found.info.run_id
            else:
                client.delete_run(found.info.run_id)  # cut short before its end: sent again whole
        return whole

    def _copy(self, client, run, experiment_id: str, tags: dict[str, str]) -> str:
        from mlflow.entities import Param

        made = client.create_run(experiment_id, start_time=run.info.start_time, tags=tags,
                                 run_name=run.info.run_name)
        copy = made.info.run_id
        faults.checkpoint("sync.created")
        metrics = [value for key in run.data.metrics for value in self.source.get_metric_history(run.info.run_id, key)]
        params = [Param(key, value) for key, value in run.data.params.items()]
        if metrics or params:
            client.log_batch(copy, metrics=metrics, params=params)
        from runner.tracking.artifacts import local_root

        artifacts = local_root(run.info.artifact_uri)
        if artifacts is not None and artifacts.is_dir() and any(artifacts.iterdir()):
            client.log_artifacts(copy, str(artifacts))
        faults.checkpoint("sync.sent")
        client.set_terminated(copy, run.info.status, end_time=run.info.end_time)
        faults.checkpoint("sync.ended")
        return copy


def _connect_problem(target: str) -> str | None:
    """Why a connection to an http(s) server could not be made; None when it could (or the target
    is a store, not a server)."""
    if not target.startswith(("http://", "https://")):
        return None
    import socket
    from urllib.parse import urlsplit

    from runner.tracking.connection import connect_timeout

    parts = urlsplit(target)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "localhost", port), timeout=connect_timeout(30.0)).close()
    except OSError as exc:
        return exc.strerror or exc.__class__.__name__
    return None


def _with_credentials(meant_for: str) -> str:
    """The server a run was recorded for, with the credentials its record masks: those of
    MLFLOW_TRACKING_URI when it names the same server (else a clear error, not a failed login)."""
    uri = with_credentials(meant_for)
    if "***@" in uri:
        raise TrackingError(f"the runs are for {meant_for}, whose credentials are not kept",
                            hint="set MLFLOW_TRACKING_URI to that server with its credentials, or use "
                                 "MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN")
    return uri


def _failed(record: RunRecord, exc: Exception) -> TrackingError:
    message = " ".join(str(getattr(exc, "message", None) or exc).split())[:300]
    return TrackingError(f"sending run {record.id} failed: {message}",
                         hint="runs sent before it stay sent; `mlproject runs sync` again sends the rest")
