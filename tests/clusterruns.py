"""What the cluster backends' tests (Slurm, Ray) share: the cluster fixture, waiting, and reading a submission."""
from __future__ import annotations

import json
import time


def started(cluster):
    """A fixture's body for a test cluster (Slurm, Ray): started, yielded, stopped whatever happens."""
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    """predicate()'s first true value, asked every `poll` seconds for up to `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def submitted(stderr: str, scheduler: str) -> tuple[str, str]:
    """(run ID, job ID) from the `=== Submitted run 'ID' as <scheduler> job JOB ===` line."""
    for line in stderr.splitlines():
        if line.startswith("=== Submitted run '"):
            return line.split("'")[1], line.rsplit(f"{scheduler} job ", 1)[1].split()[0]
    raise AssertionError(stderr)


def ledger_row(cli, run_id: str) -> dict:
    """The run's ledger row, as `mlproject runs show ID --json` prints it (`cli`: runs the CLI)."""
    shown = cli("runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)
