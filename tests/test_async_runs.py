"""An asynchronous API run outlives its caller (runner.keeper), as under `mlflow.projects.run`:
a script starts a run with synchronous=False and exits; the run goes on to its end, which is
recorded in the ledger and in tracking; later processes wait for it or cancel it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from clusterruns import ledger_row, wait_for
from procs import processes_with

PROJECT = """
    name: outlives
    entry_points:
      main:
        parameters:
          secs: {type: float, default: 1}
          code: {type: int, default: 0}
        command: "echo started; (sleep 300 &); sleep {secs}; echo done > done.txt; echo finished; exit {code}"
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", *args], capture_output=True, text=True, timeout=120)


def _script(body: str, cwd: Path) -> subprocess.CompletedProcess:
    """A caller that starts a run and exits at once; its output read to its end (and its
    keeper's, which inherits its stdout, as MLflow's child does: so not waited for here)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    with open(cwd / "caller.err", "w+") as errors:
        proc = subprocess.Popen([sys.executable, "-c", body], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=errors, text=True)
        proc.wait(timeout=120)
        line = proc.stdout.readline()
        proc.stdout.close()
        errors.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, line, errors.read())


def _start_and_exit(project: Path, cwd: Path, **parameters) -> str:
    started = _script(
        "import runner\n"
        f"submitted = runner.run({str(project)!r}, parameters={parameters!r}, env_manager='local',"
        " synchronous=False, stream_output=False)\n"
        "print(submitted.run_id, submitted.get_status(), flush=True)\n", cwd)
    assert started.returncode == 0, started
    run_id, status = started.stdout.split()
    assert status == "RUNNING"
    return run_id


def _tracked(cwd: Path, run_id: str):
    return MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}").get_run(run_id)


def _left_behind(run_id: str) -> list[int]:
    return processes_with(f"MLPROJECT_RUN_ID={run_id}".encode())


def test_the_run_goes_on_after_its_caller_exits_and_its_end_is_recorded(make_project, _work_in_tmp):
    project = make_project(PROJECT)
    run_id = _start_and_exit(project, _work_in_tmp, secs=2)
    assert ledger_row(_cli, run_id)["status"] == "RUNNING"  # the caller is gone; the command is not
    wait_for(lambda: ledger_row(_cli, run_id)["status"] != "RUNNING", 60, "the run's end")
    row = ledger_row(_cli, run_id)
    assert (row["status"], row["exit_code"]) == ("FINISHED", 0)
    assert (project / "done.txt").read_text() == "done\n"  # it ran to its end
    assert _tracked(_work_in_tmp, run_id).info.status == "FINISHED"
    assert _cli("runs", "logs", run_id).stdout == "started\nfinished\n"
    wait_for(lambda: _left_behind(run_id) == [], 15, "the run's processes to be gone")


def test_a_failed_run_after_its_caller_exited_is_recorded_failed(make_project, _work_in_tmp):
    project = make_project(PROJECT)
    run_id = _start_and_exit(project, _work_in_tmp, secs=0.5, code=3)
    waited = _script(f"import runner\nrun = runner.attach({run_id!r})\nprint(run.wait(), run.get_status(), run.exit_code)\n",
                     _work_in_tmp)  # wait() from a later process
    assert waited.stdout.split() == ["False", "FAILED", "3"], waited
    assert _tracked(_work_in_tmp, run_id).info.status == "FAILED"


def test_a_later_process_cancels_it(make_project, _work_in_tmp):
    project = make_project(PROJECT)
    run_id = _start_and_exit(project, _work_in_tmp, secs=300)
    wait_for(lambda: _left_behind(run_id), 30, "the command to start")
    cancelled = _cli("runs", "cancel", run_id)
    assert cancelled.returncode == 0, cancelled.stderr
    row = ledger_row(_cli, run_id)
    assert (row["status"], row["exit_code"]) == ("KILLED", 143)
    assert _tracked(_work_in_tmp, run_id).info.status == "KILLED"
    wait_for(lambda: _left_behind(run_id) == [], 15, "the run's processes to be gone")  # (sleep 300 &) too


def test_errors_before_the_command_starts_are_raised_in_the_caller(make_project, _work_in_tmp):
    import runner

    project = make_project(PROJECT)
    notes = []
    try:
        runner.run(str(project), parameters={"code": "three"}, env_manager="local", synchronous=False,
                   notify=notes.append)
    except runner.ParameterError as exc:
        assert "code" in exc.message and exc.exit_code == 2 and exc.hint
    else:
        raise AssertionError("a bad parameter was not raised in the caller")
    submitted = runner.run(str(project), parameters={"secs": 0}, env_manager="local", synchronous=False,
                           stream_output=False, notify=notes.append)
    assert submitted.wait() is True and submitted.get_status() == "FINISHED"
    assert any(note.startswith("=== Running command") for note in notes), notes  # the keeper's notes, here


def test_the_commands_output_reaches_the_callers_stdout_as_under_mlflow(make_project, _work_in_tmp):
    project = make_project(PROJECT)
    body = ("import runner\n"
            f"r = runner.run({str(project)!r}, parameters={{'secs': 0.5}}, env_manager='local', synchronous=False)\n"
            "print(r.run_id, flush=True)\n")
    with open(_work_in_tmp / "caller.out", "w+") as out:  # (a file: a terminal's case, without one)
        done = subprocess.run([sys.executable, "-c", body], cwd=_work_in_tmp, stdout=out, stderr=subprocess.PIPE,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        run_id = next(line for line in (_work_in_tmp / "caller.out").read_text().split() if len(line) == 32)
        wait_for(lambda: ledger_row(_cli, run_id)["status"] == "FINISHED", 60, "the run's end")
        lines = (_work_in_tmp / "caller.out").read_text().split()
        assert [line for line in lines if line != run_id] == ["started", "finished"]


def test_a_caller_whose_output_is_captured_returns_once_the_command_started(make_project, _work_in_tmp):
    """`OUT=$(python -c '...synchronous=False...')` used to return when the run ended: the
    keeper held the caller's stdout pipe (as MLflow's child does: 12.9 s for an 8 s run)."""
    project = make_project(PROJECT)
    body = ("import runner\n"
            f"r = runner.run({str(project)!r}, parameters={{'secs': 8}}, env_manager='local', synchronous=False)\n"
            "print(r.run_id, flush=True)\n")
    done = subprocess.run([sys.executable, "-c", body], cwd=_work_in_tmp, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[0]
    assert ledger_row(_cli, run_id)["status"] == "RUNNING"  # returned while the command runs
    assert not (project / "done.txt").exists()
    wait_for(lambda: ledger_row(_cli, run_id)["status"] != "RUNNING", 60, "the run's end")
    assert ledger_row(_cli, run_id)["status"] == "FINISHED"
    assert _cli("runs", "logs", run_id).stdout == "started\nfinished\n"  # the output is in its log
