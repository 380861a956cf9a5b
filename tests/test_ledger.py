"""The local run ledger, with real runs: records, crash reconciliation, cancel, follow, load."""
from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import assert_clean_error, pid_alive

SLEEPER = "entry_points:\n  main:\n    parameters:\n      n: {type: int, default: 300}\n    command: 'echo started; sleep {n} & echo $! > child.pid; wait'\n"


def _runs(cli) -> list[dict]:
    result = cli("runs", "list", "--json", "--limit", "1000")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _wait_for(path, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def test_finished_and_failed_runs_are_recorded(make_project, cli):
    ok = make_project("entry_points:\n  main:\n    parameters:\n      a: float\n    command: 'echo hello {a}'\n")
    bad = make_project("entry_points:\n  main:\n    command: 'echo oops; exit 4'\n")
    assert cli("run", str(ok), "--env-manager", "local", "-P", "a=0.5", "-P", "extra=x y").returncode == 0
    assert cli("run", str(bad), "--env-manager", "local").returncode == 4
    records = _runs(cli)
    assert [r["status"] for r in records] == ["FAILED", "FINISHED"]
    failed, finished = records
    assert failed["exit_code"] == 4 and failed["end_time"] >= failed["start_time"]
    assert finished["parameters"] == {"a": "0.5", "extra": "x y"}  # values, not shell-quoted
    assert finished["command"] == "echo hello 0.5 --extra 'x y'"
    assert finished["project_dir"] == str(ok) and finished["env_manager"] == "local"
    shown = cli("runs", "show", finished["id"][:10])
    assert shown.returncode == 0 and re.search(r"^status: +FINISHED \(exit code 0\)$", shown.stdout, re.M), shown.stdout
    assert re.search(r"^started: +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", shown.stdout, re.M)
    assert re.search(r"^duration: +\d+\.\d s$", shown.stdout, re.M)
    assert "runner_pid" not in shown.stdout and "pgid" not in shown.stdout and "tracking_ended" not in shown.stdout
    assert cli("runs", "logs", finished["id"]).stdout == "hello 0.5 --extra x y\n"
    assert_clean_error(cli("runs", "show", "nope"), contains="no run with ID")
    assert_clean_error(cli("runs", "show", ""), contains="no run ID given")


def test_runs_show_reads_final_params_and_metrics_from_tracking(make_project, cli, tmp_path):
    root = make_project("entry_points:\n  main:\n    parameters:\n      alpha: float\n"
                        "    command: \"python -c 'import mlflow; mlflow.start_run(); mlflow.log_metric(\\\"rmse\\\", 0.25)'\"\n")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/store.db"}
    result = cli("run", str(root), "--env-manager", "local", "-P", "alpha=0.5", env=env)
    assert result.returncode == 0, result.stderr
    shown = cli("runs", "show", _runs(cli)[0]["id"], env=env)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^parameters: +alpha=0.5$", shown.stdout, re.M), shown.stdout
    assert re.search(r"^metrics: +rmse=0.25$", shown.stdout, re.M), shown.stdout
    assert f"sqlite:///{tmp_path}/store.db" in shown.stdout


def test_runs_list_stays_aligned_with_long_entry_points(make_project, cli):
    root = make_project("entry_points:\n  main:\n    command: 'true'\n  a_rather_long_entry_point_name:\n    command: 'true'\n")
    for entry in ("main", "a_rather_long_entry_point_name"):
        assert cli("run", str(root), "-e", entry, "--env-manager", "local").returncode == 0
    lines = cli("runs", "list").stdout.splitlines()
    starts = {line.index(str(root)) for line in lines[1:]}
    assert len(starts) == 1 and lines[0].index("PROJECT") in starts, lines


def test_sigkilled_runner_is_reconciled_by_the_next_invocation(make_project, cli):
    root = make_project(SLEEPER)
    runner = subprocess.Popen([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = int(_wait_for(root / "child.pid"))
    assert _runs(cli)[0]["status"] == "RUNNING"
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    assert pid_alive(child)  # the command outlived its runner...
    record = _runs(cli)[0]  # ...until the next invocation noticed
    assert record["status"] == "FAILED" and "runner process ended" in record["reason"]
    deadline = time.monotonic() + 10
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child)


def test_cancel_from_another_process(make_project, cli):
    root = make_project(SLEEPER)
    runner = subprocess.Popen([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = int(_wait_for(root / "child.pid"))
    run_id = _runs(cli)[0]["id"]
    result = cli("runs", "cancel", run_id)
    assert result.returncode == 0 and "KILLED" in result.stderr
    assert runner.wait(timeout=20) == 143
    assert not pid_alive(child)
    assert _runs(cli)[0]["status"] == "KILLED"
    again = cli("runs", "cancel", run_id)  # ended already: what was asked for holds
    assert again.returncode == 0 and f"run {run_id} had already ended KILLED: nothing to cancel" in again.stderr


def test_logs_follow_until_the_end(make_project, cli):
    root = make_project("entry_points:\n  main:\n    command: 'for i in 1 2 3; do echo line$i; sleep 0.3; done'\n")
    runner = subprocess.Popen([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _runs(cli) and time.monotonic() < deadline:
        time.sleep(0.05)
    followed = cli("runs", "logs", _runs(cli)[0]["id"], "-f")
    assert followed.stdout == "line1\nline2\nline3\n"
    assert runner.wait(timeout=10) == 0


@pytest.mark.parametrize("store", ["sqlite", "rest"])
def test_fifty_parallel_runs_none_lost(store, make_project, cli, _work_in_tmp, mlproject_home, request):
    root = make_project("entry_points:\n  main:\n    parameters:\n      i: int\n    command: 'echo {i}'\n")
    env = dict(os.environ)
    extra: list[str] = []
    uri = f"sqlite:///{_work_in_tmp / 'mlflow.db'}"
    if store == "rest":
        uri = request.getfixturevalue("mlflow_server")
        env["MLFLOW_TRACKING_URI"] = uri
        extra = ["--experiment-name", f"fifty-{os.urandom(4).hex()}"]
    procs = [
        subprocess.Popen([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local", "-P", f"i={i}", *extra],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        for i in range(50)
    ]
    failures = [err for err in (p.communicate(timeout=180)[1].decode() for p in procs) if "succeeded" not in err]
    assert [p.returncode for p in procs] == [0] * 50, failures[:3]
    records = _runs(cli)
    assert len(records) == 50
    assert sorted(int(r["parameters"]["i"]) for r in records) == list(range(50))
    assert {r["status"] for r in records} == {"FINISHED"}
    assert {r["tracking_ended"] for r in records} == {1}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(extra[1]).experiment_id if extra else "0"
    tracked = client.search_runs([experiment], max_results=100)
    assert len(tracked) == 50 and {r.info.status for r in tracked} == {"FINISHED"}
    assert {r.info.run_id for r in tracked} == {r["tracking_run_id"] for r in records}
    assert not list((mlproject_home / "pending").glob("*.json"))


def test_thousand_runs_list_quickly(mlproject_home, cli):
    from runner.tracking.ledger import Ledger, RunRecord

    ledger = Ledger()
    for i in range(1000):
        ledger.start(RunRecord(id=f"{i:032x}", project_uri="p", project_dir="/p", entry_point="main", command="true",
                               env_manager="local", log_path="/dev/null", status="FINISHED", exit_code=0, start_time=1000.0 + i))
    ledger.close()
    started = time.monotonic()
    records = _runs(cli)
    elapsed = time.monotonic() - started
    assert len(records) == 1000 and records[0]["id"] == f"{999:032x}"
    assert elapsed < 5  # the target (under 1 s) is measured by the benchmark; this only guards gross regressions


def test_an_mlflow_run_continued_with_run_id_is_shown_as_its_attempts(make_project, cli):
    """--run-id X made a ledger row of another ID, and `runs show X` showed that row as if it were
    X's, with nothing to say it was a second attempt of X."""
    root = make_project(SLEEPER)
    first = cli("run", str(root), "--env-manager", "local", "-P", "n=0")
    assert first.returncode == 0, first.stderr
    run_id = _runs(cli)[0]["id"]
    again = cli("run", str(root), "--env-manager", "local", "-P", "n=0", "--run-id", run_id)
    assert again.returncode == 0, again.stderr
    second_id = next(r["id"] for r in _runs(cli) if r["id"] != run_id)
    shown = cli("runs", "show", run_id).stdout
    assert shown.splitlines()[0] == f"run:         {run_id}"
    assert f"attempt:     1 of 2 of MLflow run {run_id} (--run-id); the others: {second_id[:12]} (FINISHED)" in shown
    assert "attempt:     2 of 2" in cli("runs", "show", second_id).stdout
    # While an attempt runs, its MLflow run's ID names it: to follow or cancel it.
    (root / "child.pid").unlink()
    (root / "MLproject").write_text(SLEEPER.replace("{n}", "300"))  # (its logged n stays 0)
    runner = subprocess.Popen([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local",
                               "-P", "n=0", "--run-id", run_id], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(root / "child.pid")
    cancelled = cli("runs", "cancel", run_id)
    assert cancelled.returncode == 0 and "KILLED" in cancelled.stderr, cancelled.stderr
    assert runner.wait(timeout=30) == 143
