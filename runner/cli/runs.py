"""`mlproject runs`: the local ledger's runs listed, shown, compared, followed and cancelled."""
from __future__ import annotations

import sys

import click

from runner.cli.common import RUN_STATUSES, Group, complete_run_ids, debug_option, out, say

@click.group(cls=Group, help="list, inspect, follow and cancel runs (the local ledger)")
def runs() -> None:
    pass


def _ledger():
    from runner import backends
    from runner.tracking import runs as run_records
    from runner.tracking.ledger import Ledger

    ledger = Ledger()
    backends.reconcile(ledger)
    return ledger, run_records


def _where(record) -> str:
    return f"{record.backend}:{record.job_id or '-'}" if _on_cluster(record) else record.backend


def _on_cluster(record) -> bool:
    """A run whose job a scheduler holds (else its runner is a process here: a run or a sweep's driver)."""
    from runner.backends import CLUSTER_BACKENDS

    return record.backend in CLUSTER_BACKENDS


@runs.command("list", help="recent runs from the local ledger")
@click.option("--status", type=click.Choice(RUN_STATUSES, case_sensitive=False), default=None)
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--sweep", "sweep_id", default=None, metavar="SWEEP_ID", help="only the trials of this sweep")
@click.option("--json", "as_json", is_flag=True)
@debug_option
def runs_list(status: str | None, limit: int, sweep_id: str | None, as_json: bool) -> int:
    import json
    import time

    ledger, run_records = _ledger()
    if sweep_id is not None:
        from runner.sweeps.driver import find as find_sweep

        ids = [t.run_id for t in find_sweep(sweep_id).trials if t.run_id]
        records = [run_records.find(ledger, run_id) for run_id in ids]
        records = [r for r in records if status is None or r.status == status.upper()][:limit]
    else:
        records = ledger.list(status.upper() if status else None, limit)
    if as_json:
        out(json.dumps([run_records.describe(r) for r in records], indent=2))
        return 0
    entry_width = max([len("ENTRY"), *(len(r.entry_point) for r in records)]) + 2
    where_width = max([len("BACKEND"), *(len(_where(r)) for r in records)]) + 2
    out(f"{'RUN ID':<34}{'STATUS':<11}{'EXIT':>5}  {'STARTED':<21}{'BACKEND':<{where_width}}{'ENTRY':<{entry_width}}PROJECT")
    for r in records:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.start_time))
        code = "" if r.exit_code is None else str(r.exit_code)
        out(f"{r.id:<34}{r.status:<11}{code:>5}  {started:<21}{_where(r):<{where_width}}"
             f"{r.entry_point:<{entry_width}}{r.project_uri}")
    return 0


@runs.command("show", help="one run's record")
@click.argument("run_id", shell_complete=complete_run_ids)
@click.option("--json", "as_json", is_flag=True)
@debug_option
def runs_show(run_id: str, as_json: bool) -> int:
    import json

    ledger, run_records = _ledger()
    record = run_records.find(ledger, run_id)
    if as_json:
        out(json.dumps(run_records.describe(record), indent=2))
        return 0
    rows = run_records.summary(record)
    if _on_cluster(record):
        rows.insert(2, ("backend", _job_line(record)))
    attempt = run_records.attempt(ledger, record)
    if attempt is not None:
        rows.insert(2, ("attempt", attempt))
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        out(f"{label + ':':<{width}}{value}")
    return 0


@runs.command("diff", help="what differs between two runs: source, parameters, packages, metrics")
@click.argument("first", shell_complete=complete_run_ids)
@click.argument("second", shell_complete=complete_run_ids)
@debug_option
def runs_diff(first: str, second: str) -> int:
    from runner.reproduce.compare import compare
    from runner.reproduce.recorded import recorded

    a, b = recorded(first), recorded(second)
    result = compare(a, b)
    for note in result.notes:
        say(f"note: {note}")
    same = ", ".join(f"{count} {kind}" for kind, count in result.same.items())
    if not result.rows:
        out(f"no differences ({same} the same)")
        return 0
    rows = [("", a.run_id[:12], b.run_id[:12]), *result.rows]
    widths = [max(len(row[i]) for row in rows) + 2 for i in (0, 1)]
    for what, left, right in rows:
        out(f"{what:<{widths[0]}}{left:<{widths[1]}}{right}".rstrip())
    out(f"the same: {same}")
    return 0


@runs.command("sync", help="send the runs recorded offline to their tracking server (once each)")
@click.argument("run_ids", nargs=-1, shell_complete=complete_run_ids)
@click.option("--to", "to", default=None, metavar="URI",
              help="this tracking server or store (default: the one each run was recorded for)")
@debug_option
def runs_sync(run_ids: tuple[str, ...], to: str | None) -> int:
    from runner.progress import Progress
    from runner.tracking.sync import sync

    from runner.errors import TrackingError

    ledger, _ = _ledger()
    try:
        result = sync(ledger, to, run_ids, notify=say, progress=Progress())
    finally:
        ledger.close()
    for run_id, why in result.waiting:
        say(f"run {run_id} not sent yet: {why}")
    if not result.sent and not result.waiting:
        out("nothing to sync: no run recorded offline is waiting")
        return 0
    servers = sorted({server for _, server, _ in result.sent})
    out(f"sent {len(result.sent)} run(s)" + (f" to {', '.join(servers)}" if servers else "")
        + (f"; {len(result.waiting)} waiting" if result.waiting else ""))
    if result.unreachable:  # (the others were sent: the exit code says that some were not)
        server, reason = sorted(result.unreachable.items())[0]
        others = f" (and {len(result.unreachable) - 1} other server(s))" if len(result.unreachable) > 1 else ""
        raise TrackingError(f"cannot reach the MLflow tracking server at {server}: {reason}{others}",
                            hint="its runs stay here; run `mlproject runs sync` again once it is up")
    return 0


def _job_line(record) -> str:
    """The job of a cluster run, and (while it is unfinished) what its scheduler says of it now."""
    line = f"{record.backend} job {record.job_id or '(not queued)'}"
    if record.finished or record.job_id is None:
        return line
    from runner import backends

    try:
        state = backends.cluster_backend(record.backend).job_state(record.job_id)
    except Exception as exc:  # noqa: BLE001 - the ledger's view is still worth showing
        return f"{line} (the scheduler did not answer: {exc})"
    if state is None:
        return f"{line} (unknown to the scheduler)"
    return f"{line} ({state.name}" + (f" on {state.node}" if state.node else "") + ")"


@runs.command("logs", help="a run's output")
@click.argument("run_id", shell_complete=complete_run_ids)
@click.option("-f", "--follow", is_flag=True, help="keep printing until the run ends")
@debug_option
def runs_logs(run_id: str, follow: bool) -> int:
    ledger, run_records = _ledger()
    record = run_records.find(ledger, run_id)

    def write(chunk: bytes) -> None:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()

    if follow and _on_cluster(record):
        from runner.backends.cluster import ClusterRun

        from runner.progress import Progress

        ledger.close()
        ClusterRun(record, echo=True, progress=Progress()).wait()
    elif follow:
        run_records.follow(record, ledger, write)
    else:
        from runner import backends

        backends.pull_output(record)  # a cluster that keeps the job's output (Ray)
        try:
            with open(record.log_path, "rb") as handle:
                write(handle.read())
        except OSError:
            say(f"no output recorded for run {record.id}")
    return 0


@runs.command("cancel", help="stop a run started elsewhere")
@click.argument("run_id", shell_complete=complete_run_ids)
@debug_option
def runs_cancel(run_id: str) -> int:
    from runner import backends

    ledger, run_records = _ledger()
    record = run_records.find(ledger, run_id)
    if record.finished:
        # What was asked for holds (as cancel() of an ended run, here and in MLflow): said, exit 0.
        say(f"run {record.id} had already ended {record.status}: nothing to cancel")
        return 0
    if _on_cluster(record):
        record = backends.cancel(ledger, record)
    else:
        record = run_records.cancel(ledger, run_id)
    say(f"run {record.id}: {record.status}" + (f" ({record.reason})" if record.reason and _on_cluster(record) else ""))
    return 0
