"""mlproject-runner as MLflow's `mlproject` project backend (runner/mlflow_plugin.py), driven by
the real mlflow 3.17.2: its `mlflow run` command and `mlflow.projects.run`, synchronous and
not, with MLflow's own wait, status and cancel on the run it gets back."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from clusterruns import ledger_row, wait_for
from procs import processes_with

PROJECT = """
    name: through-mlflow
    entry_points:
      main:
        parameters:
          x: {type: float, default: 1}
          secs: {type: float, default: 0}
          code: {type: int, default: 0}
        command: "echo x={x}; (sleep 300 &); sleep {secs}; echo done > done.txt; exit {code}"
"""
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", *args], capture_output=True, text=True, timeout=120)


def _python(body: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    return subprocess.run([sys.executable, "-c", body], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def _store(cwd: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")


def _tags(run) -> dict[str, str]:
    # (what differs between any two runs: their IDs, names, attempts, how long their stages took)
    return {k: v for k, v in run.data.tags.items() if k not in ("mlflow.runName", "mlproject.attempt")
            and not k.startswith("mlproject.timing.")}


def _timing_tags(run) -> set[str]:
    return {k for k in run.data.tags if k.startswith("mlproject.timing.")}


def test_mlflow_run_with_the_plugin_records_the_run_mlproject_run_records(make_project, _work_in_tmp):
    project = make_project(PROJECT)
    result = subprocess.run([MLFLOW, "run", str(project), "-b", "mlproject", "-P", "x=3", "-P", "secs=3",
                             "--env-manager", "local"], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    # MLflow runs every plugin backend asynchronously: it returned while the command runs on.
    assert not (project / "done.txt").exists()
    runs = _store(_work_in_tmp).search_runs(["0"])
    assert len(runs) == 1
    run_id = runs[0].info.run_id
    wait_for(lambda: ledger_row(_cli, run_id)["status"] != "RUNNING", 60, "the run's end")
    assert ledger_row(_cli, run_id)["status"] == "FINISHED"
    assert _cli("runs", "logs", run_id).stdout == "x=3\n"

    ours = _cli("run", str(project), "-P", "x=3", "-P", "secs=3", "--env-manager", "local")
    assert ours.returncode == 0, ours.stderr
    through_mlflow, direct = sorted(_store(_work_in_tmp).search_runs(["0"]), key=lambda r: r.info.start_time)
    assert through_mlflow.info.status == direct.info.status == "FINISHED"
    assert through_mlflow.data.params == direct.data.params
    # The same run, but for the backend tag, which MLflow itself sets to the plugin's name.
    assert _tags(through_mlflow).pop("mlflow.project.backend") == "mlproject"
    expected = _tags(direct)
    assert expected.pop("mlflow.project.backend") == "local"
    assert {k: v for k, v in _tags(through_mlflow).items() if k != "mlflow.project.backend"} == expected
    assert _timing_tags(through_mlflow) == _timing_tags(direct) and "mlproject.timing.start" in _timing_tags(direct)
    artifacts = _store(_work_in_tmp).list_artifacts
    assert [a.path for a in artifacts(through_mlflow.info.run_id)] == [a.path for a in artifacts(direct.info.run_id)] \
        == ["output.log", "source"]  # (source/: the files of a project outside git, for a rerun)


def test_mlflow_projects_run_waits_and_raises_mlflows_error(make_project, _work_in_tmp):
    project = make_project(PROJECT)
    body = (
        "import mlflow\n"
        "from mlflow.exceptions import ExecutionException\n"
        f"r = mlflow.projects.run({str(project)!r}, backend='mlproject', backend_config={{}}, parameters={{'x': 2}},"
        " env_manager='local', experiment_name='plugged')\n"
        "print('ok', r.run_id, r.get_status(), flush=True)\n"
        "try:\n"
        f"    mlflow.projects.run({str(project)!r}, backend='mlproject', parameters={{'code': 3}}, env_manager='local')\n"
        "except ExecutionException as exc:\n"
        "    print('raised', exc.message, flush=True)\n"
    )
    done = _python(body, _work_in_tmp)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(("ok ", "raised "))]
    ok, raised = lines
    _, run_id, status = ok.split()
    assert status == "FINISHED"
    tracked = _store(_work_in_tmp).get_run(run_id)
    assert tracked.info.status == "FINISHED"
    assert _store(_work_in_tmp).get_experiment(tracked.info.experiment_id).name == "plugged"
    assert raised.startswith("raised Run (ID '") and raised.endswith("') failed")  # MLflow's own words
    failed = [r for r in _store(_work_in_tmp).search_runs(["0"]) if r.data.params.get("code") == "3"]
    assert [r.info.status for r in failed] == ["FAILED"]
    assert ledger_row(_cli, failed[0].info.run_id)["exit_code"] == 3


def test_an_asynchronous_run_is_cancelled_through_mlflows_submitted_run(make_project, _work_in_tmp):
    project = make_project(PROJECT)
    body = (
        "import mlflow, time\n"
        f"r = mlflow.projects.run({str(project)!r}, backend='mlproject', parameters={{'secs': 300}},"
        " env_manager='local', synchronous=False)\n"
        "print('started', r.run_id, r.get_status(), flush=True)\n"
        "r.cancel()\n"
        "print('cancelled', r.get_status(), r.wait(), flush=True)\n"
    )
    done = _python(body, _work_in_tmp)
    assert done.returncode == 0, done.stderr
    started = next(line for line in done.stdout.splitlines() if line.startswith("started "))
    cancelled = next(line for line in done.stdout.splitlines() if line.startswith("cancelled "))
    _, run_id, status = started.split()
    assert status == "RUNNING"
    assert cancelled == "cancelled KILLED False"
    assert _store(_work_in_tmp).get_run(run_id).info.status == "KILLED"
    assert ledger_row(_cli, run_id)["status"] == "KILLED"
    wait_for(lambda: processes_with(f"MLPROJECT_RUN_ID={run_id}".encode()) == [], 15,
             "the run's processes (its detached sleep too) to be gone")


def test_a_bad_request_is_mlflows_execution_exception_before_any_run(make_project, _work_in_tmp):
    project = make_project(PROJECT)
    body = (
        "import mlflow\n"
        "from mlflow.exceptions import ExecutionException\n"
        "try:\n"
        f"    mlflow.projects.run({str(project)!r}, backend='mlproject', backend_config={{'backend': 'nosuch'}},"
        " env_manager='local')\n"
        "except ExecutionException as exc:\n"
        "    print('raised', exc.message, flush=True)\n"
        "try:\n"
        f"    mlflow.projects.run({str(project)!r}, backend='mlproject', parameters={{'x': 'abc'}}, env_manager='local')\n"
        "except ExecutionException as exc:\n"
        "    print('raised', exc.message, flush=True)\n"
    )
    done = _python(body, _work_in_tmp)
    assert done.returncode == 0, done.stderr
    raised = [line for line in done.stdout.splitlines() if line.startswith("raised ")]
    assert raised[0].startswith("raised Got unsupported execution mode nosuch")
    assert raised[1] == "raised parameter 'x': value 'abc' is not a float"
    assert _store(_work_in_tmp).search_runs(["0"]) == []
