"""Retries on this machine (runner.retries): `--retries N --retry-failed` runs a failed command
again as a new run tagged with its attempt and the run it retries; the options are checked
before anything exists. (A cluster's lost node, the retry without --retry-failed, is in
test_slurm.py against the real test cluster.)"""
from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from conftest import assert_clean_error, run_cli

# Fails the first time (no marker yet), succeeds after.
FLAKY = """
    name: flaky
    entry_points:
      main:
        parameters:
          marker: {type: string}
        command: "if [ -e '{marker}' ]; then echo second; else touch '{marker}'; echo first; exit 3; fi"
"""


def _runs(work) -> list:
    return MlflowClient(f"sqlite:///{work / 'mlflow.db'}").search_runs(["0"], order_by=["attribute.start_time ASC"])


def test_a_failed_command_runs_again_as_a_new_tagged_run_with_retry_failed(make_project, _work_in_tmp, tmp_path):
    project = make_project(FLAKY)
    result = run_cli("run", str(project), "-P", f"marker={tmp_path / 'marker'}", "--env-manager", "local",
                     "--retries", "2", "--retry-failed")
    assert result.returncode == 0, result.stderr
    assert "first" in result.stdout and "second" in result.stdout
    first, second = _runs(_work_in_tmp)
    assert (first.info.status, second.info.status) == ("FAILED", "FINISHED")
    assert "mlproject.retry.attempt" not in first.data.tags
    assert second.data.tags["mlproject.retry.attempt"] == "2"
    assert second.data.tags["mlproject.retry.of"] == first.info.run_id
    assert f"run {first.info.run_id} failed (it failed with exit code 3 (--retry-failed)): attempt 2 of 3" in result.stderr
    rows = json.loads(run_cli("runs", "list", "--json").stdout)
    assert sorted(row["status"] for row in rows) == ["FAILED", "FINISHED"]


def test_without_retry_failed_a_commands_own_failure_stands(make_project, _work_in_tmp, tmp_path):
    project = make_project(FLAKY)
    result = run_cli("run", str(project), "-P", f"marker={tmp_path / 'marker'}", "--env-manager", "local",
                     "--retries", "2")
    assert result.returncode == 3, result.stderr
    assert [run.info.status for run in _runs(_work_in_tmp)] == ["FAILED"]
    assert "attempt" not in result.stderr


def test_the_api_retries_a_synchronous_run(make_project, _work_in_tmp, tmp_path):
    import runner

    project = make_project(FLAKY)
    said: list[str] = []
    submitted = runner.run(str(project), parameters={"marker": str(tmp_path / "marker")}, env_manager="local",
                           retries=1, retry_failed=True, notify=said.append)
    assert submitted.get_status() == "FINISHED"
    first, second = _runs(_work_in_tmp)
    assert second.info.run_id == submitted.run_id and second.data.tags["mlproject.retry.of"] == first.info.run_id
    assert any("attempt 2 of 2" in line for line in said), said


def test_a_sweep_retries_its_failed_trials(make_project, _work_in_tmp, tmp_path):
    project = make_project(FLAKY)
    result = run_cli("sweep", str(project), "-P", f"marker={tmp_path / 'a'},{tmp_path / 'b'}", "--env-manager",
                     "local", "--retries", "1", "--retry-failed", "--max-parallel", "2")
    assert result.returncode == 0, result.stderr
    runs = _runs(_work_in_tmp)
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert sorted(run.info.status for run in children) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
    retried = {run.data.tags["mlproject.retry.of"] for run in children if run.info.status == "FINISHED"}
    assert retried == {run.info.run_id for run in children if run.info.status == "FAILED"}
    assert "2/2 trials finished" in result.stderr


def test_retry_options_are_checked_before_anything(make_project, _work_in_tmp):
    project = make_project(FLAKY)
    assert_clean_error(run_cli("run", str(project), "-P", "marker=x", "--retry-failed"), 2, "--retry-failed needs --retries")
    assert_clean_error(run_cli("run", str(project), "-P", "marker=x", "--retries", "-1"), 2, "retries must be")
    assert_clean_error(run_cli("run", str(project), "-P", "marker=x", "--retries", "1", "--detach"), 2,
                       "--retries needs a runner that follows")
    assert_clean_error(run_cli("sweep", str(project), "-P", "marker=x,y", "--retries", "-2"), 2, "retries must be")
    assert _runs(_work_in_tmp) == [] and json.loads(run_cli("runs", "list", "--json").stdout) == []
