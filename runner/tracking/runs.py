"""Run records over the ledger: reconcile after a crash, list, show, follow, cancel."""
from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict
from pathlib import Path

from runner.errors import UsageError
from runner.launch import group_alive, group_members, stop_run_processes
from runner.processes import process_is
from runner.tracking.ledger import Ledger, RunRecord
from runner.status import RunStatus

RUNNER_DIED = "the runner process ended without recording an outcome (killed?)"


def _group_is_ours(pgid: int, run_id: str) -> bool:
    """A live process of this group carries our run's id in its environment."""
    marker = f"MLPROJECT_RUN_ID={run_id}".encode()
    for pid in group_members(pgid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if marker in handle.read().split(b"\0"):
                    return True
        except OSError:
            continue
    return False


def _stop_what_is_left(record: RunRecord, grace: float) -> None:
    """A dead runner's command: its group (when the group is still the run's, not a reused
    number), and every process carrying the run's marker, including those that left the group
    and one started before the runner could record the group (see runner.launch)."""
    ours = bool(record.pgid) and group_alive(record.pgid) and _group_is_ours(record.pgid, record.id)  # type: ignore[arg-type]
    stop_run_processes(record.id, record.pgid if ours else None, grace)
    from runner.envs.docker.manager import remove_run_container

    remove_run_container(record.id, launcher_killed=True)  # (a Docker run's container: nothing for others)


def reconcile(ledger: Ledger) -> list[RunRecord]:
    """End the runs whose runner died: stop what they left running, mark them FAILED; and end
    in tracking every run whose end has not reached it yet. Returns the orphans."""
    ended = []
    for record in ledger.orphans():
        _stop_what_is_left(record, 2.0)
        ledger.finish(record.id, RunStatus.FAILED, record.exit_code, RUNNER_DIED)
        record.status, record.reason = RunStatus.FAILED, RUNNER_DIED
        ended.append(record)
    unreachable: set[str | None] = set()  # one failed attempt per store and invocation is enough
    for record in ledger.not_ended_in_tracking():
        if record.tracking_uri in unreachable:
            continue
        if end_in_tracking(record.tracking_run_id, record.tracking_uri, record.status, record.log_path):
            ledger.tracking_ended(record.id)
        else:
            unreachable.add(record.tracking_uri)
    from runner.tracking import pending

    pending.reconcile()  # runs created in tracking whose runner died before the ledger had them
    return ended


def end_in_tracking(tracking_run_id: str | None, tracking_uri: str | None, status: str = RunStatus.FAILED,
                    log_path: str | None = None) -> bool:
    """End a run whose runner is gone in MLflow, once, quickly, with the artifacts its run
    directory (that of `log_path`) lists as undelivered; False if the store could not be reached."""
    if not tracking_run_id or not tracking_uri:
        return True
    try:
        from runner.tracking import tracker_for, undelivered

        tracker = tracker_for(tracking_uri, quick=True)
        if log_path:
            undelivered.deliver(Path(log_path).parent, tracker, tracking_run_id)
        tracker.end(tracking_run_id, status)
    except Exception:  # noqa: BLE001 - a dead run's tracking must never block a new run
        return False
    return True


def find(ledger: Ledger, run_id: str) -> RunRecord:
    if not run_id.strip():
        raise UsageError("no run ID given", hint="give a run ID (or its first characters); see `mlproject runs list`")
    matches = ledger.get(run_id)
    # An MLflow run continued with --run-id has rows of other IDs (its later attempts) that name
    # it too: the one still going, if any (to follow or cancel it), else the row of that ID.
    own = [r for r in matches if r.id == run_id]
    attempts = [r for r in matches if r.tracking_run_id == run_id and r.id != run_id]
    going = [r for r in [*own, *attempts] if not r.finished]
    exact = going or own or attempts
    return one_of(matches, exact, "run", run_id, "`mlproject runs list`")


def attempt(ledger: Ledger, record: RunRecord) -> str | None:
    """Which attempt of its MLflow run a row is, when that run was continued with --run-id (one
    row per attempt, each with its own ID); None for a run of one attempt."""
    if not record.tracking_run_id:
        return None
    attempts = sorted((r for r in ledger.get(record.tracking_run_id) if r.tracking_run_id == record.tracking_run_id),
                      key=lambda r: r.start_time)
    if len(attempts) < 2:
        return None
    number = [r.id for r in attempts].index(record.id) + 1
    others = ", ".join(f"{r.id[:12]} ({r.status})" for r in attempts if r.id != record.id)
    return f"{number} of {len(attempts)} of MLflow run {record.tracking_run_id} (--run-id); the others: {others}"


def one_of(matches: list, exact: list, noun: str, given: str, listing: str):
    """The one record an ID (or its first characters) names, or a clear error."""
    if exact:
        return exact[0]
    if not matches:
        raise UsageError(f"no {noun} with ID {given!r}", hint=f"see {listing}")
    if len(matches) > 1:
        raise UsageError(f"{noun} ID {given!r} is ambiguous", hint="give more characters of the ID")
    return matches[0]


def describe(record: RunRecord) -> dict:
    from runner import timing

    data = asdict(record)
    data["duration"] = (record.end_time or time.time()) - record.start_time
    data["timing"] = timing.read(_run_dir(record))
    return data


def _run_dir(record: RunRecord) -> Path:
    """Where the runner of `record` kept its files (on a cluster: the node's runner, where the
    nodes share this host's MLPROJECT_HOME)."""
    from runner import home

    return home.home() / "runs" / record.id


def summary(record: RunRecord) -> list[tuple[str, str]]:
    """A run for a person: what ran, how it ended, when, and (when the store answers) its final
    parameters and metrics from tracking. The ledger's bookkeeping fields are left out."""
    status = record.status + ("" if record.exit_code is None else f" (exit code {record.exit_code})")
    rows = [("run", record.id), ("status", status)]
    if record.reason:
        rows.append(("reason", record.reason))
    rows += [("project", record.project_uri), ("entry point", record.entry_point), ("command", record.command),
             ("environment", record.env_manager + (f" {record.env_key[:12]}" if record.env_key else ""))]
    if record.git_commit:
        rows.append(("git commit", record.git_commit))
    rows.append(("started", _local_time(record.start_time)))
    if record.end_time:
        rows.append(("ended", _local_time(record.end_time)))
    from runner.progress import human_duration

    rows.append(("duration", human_duration((record.end_time or time.time()) - record.start_time)
                 + ("" if record.end_time else " so far")))
    from runner import timing

    seconds = timing.read(_run_dir(record))
    if seconds:
        rows.append(("cold start", timing.line(seconds)))
    params, metrics, note = dict(record.parameters), {}, None
    if record.tracking_run_id and record.tracking_uri:
        from runner.tracking import offline

        waiting = "; recorded offline, for `mlproject runs sync`" if offline.is_store(record.tracking_uri) else ""
        rows.append(("tracking", f"{record.tracking_uri} (run {record.tracking_run_id}){waiting}"))
        try:
            from runner.tracking import tracker_for

            params, metrics = tracker_for(record.tracking_uri, quick=True).results(record.tracking_run_id)
        except Exception as exc:  # noqa: BLE001 - the ledger's view is still worth showing
            note = f"(not read from tracking: {getattr(exc, 'message', None) or exc.__class__.__name__})"
    rows.append(("parameters", ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "none"))
    if note:
        rows.append(("metrics", note))
    elif record.tracking_run_id:
        rows.append(("metrics", ", ".join(f"{k}={v:g}" for k, v in sorted(metrics.items())) or "none"))
    rows.append(("log", record.log_path))
    return rows


def _local_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))



def cancel(ledger: Ledger, run_id: str, wait: float = 30.0) -> RunRecord:
    """Stop a run started by another `mlproject` process (detached or in another terminal)."""
    record = find(ledger, run_id)
    if record.status != RunStatus.RUNNING:
        raise UsageError(f"run {record.id} is not running (status {record.status})")
    if process_is(record.runner_pid, record.runner_start):
        os.kill(record.runner_pid, signal.SIGTERM)  # the runner stops its group and records KILLED
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            current = find(ledger, record.id)
            if current.status != RunStatus.RUNNING:
                return current
            time.sleep(0.1)
        raise UsageError(f"run {record.id} did not stop within {wait:.0f} s")
    _stop_what_is_left(record, 5.0)
    from runner.tracking.ending import end_recorded

    end_recorded(ledger, record, RunStatus.KILLED, record.exit_code, "cancelled after its runner had gone")
    return find(ledger, record.id)


def follow(record: RunRecord, ledger: Ledger, write, poll: float = 0.2) -> None:
    """Write the run's log as it grows, until the run has ended and the log is drained."""
    position = 0
    while True:
        ended = find(ledger, record.id).finished
        chunk = read_from(record.log_path, position)
        if chunk:
            position += len(chunk)
            write(chunk)
        if ended:  # read once more after seeing the end: nothing written before it is missed
            return
        time.sleep(poll)


def read_from(path: str | os.PathLike[str] | None, position: int) -> bytes:
    """What a log holds from `position` on (nothing yet when it does not exist)."""
    if path is None:
        return b""
    try:
        with open(path, "rb") as handle:
            handle.seek(position)
            return handle.read()
    except OSError:
        return b""
