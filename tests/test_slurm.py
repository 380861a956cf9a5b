"""The slurm backend against a real two-node Slurm cluster started by these tests (tests/slurmcluster.py).

Every run goes through the real CLI (or the API in another process), sbatch, slurmctld,
a slurmd node and the runner inside the job; the outcome is checked in the ledger, in
MLflow tracking, in the job's output and in the process table.
"""
from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from clusterruns import ledger_row, started, submitted, wait_for

from conftest import assert_clean_error

# The job's PATH has no `python` on it (a batch job's PATH is whatever the cluster gives):
# the runner on the node must not need one. The commands below only use the shell.
BARE_PATH = "/usr/local/bin:/usr/bin:/bin"

SHELL_PROJECT = """
    name: on-slurm
    entry_points:
      main:
        parameters:
          alpha: {type: float, default: 0.5}
          secs: {type: float, default: 0}
          code: {type: int, default: 0}
        command: "echo alpha={alpha} node=$SLURMD_NODENAME; echo started > started; sleep {secs}; exit {code}"
"""


@pytest.fixture(scope="module")
def slurm_cluster():
    from slurmcluster import SlurmCluster

    yield from started(SlurmCluster())


@pytest.fixture
def slurm(slurm_cluster, monkeypatch):
    slurm_cluster.wait_idle()
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    return slurm_cluster


def _cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", *args], env={**os.environ, "PATH": BARE_PATH, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def _start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runner", *args], env={**os.environ, "PATH": BARE_PATH, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _ledger_row(run_id: str) -> dict:
    return ledger_row(_cli, run_id)


def _submitted(stderr: str) -> tuple[str, str]:
    return submitted(stderr, "Slurm")


def _detach(project: Path, *args: str, config: dict | None = None) -> tuple[str, str]:
    result = _cli("run", str(project), "-b", "slurm", "-c", json.dumps(config or {}), "--env-manager", "local",
                  "--detach", *args)
    assert result.returncode == 0, result.stderr
    run_id, word, job_id = result.stdout.split()[0], result.stdout.split()[1], result.stdout.split()[3]
    assert word == "slurm"
    return run_id, job_id


_wait_for = wait_for


def _processes_of(run_id: str) -> list[int]:
    from procs import processes_with

    return processes_with(f"MLPROJECT_RUN_ID={run_id}".encode())


def test_run_streams_output_and_records_the_same_run(slurm, make_project, _work_in_tmp):
    project = make_project(SHELL_PROJECT)
    result = _cli("run", str(project), "-b", "slurm", "-P", "alpha=0.7", "--env-manager", "local")
    assert result.returncode == 0, result.stderr + slurm.logs()
    assert "alpha=0.7 node=n" in result.stdout  # streamed from the node
    run_id, job_id = _submitted(result.stderr)
    assert f"=== Run (ID '{run_id}') succeeded ===" in result.stderr
    row = _ledger_row(run_id)
    assert (row["status"], row["exit_code"], row["backend"], row["job_id"]) == ("FINISHED", 0, "slurm", job_id)
    run = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.end_time
    assert run.data.params == {"alpha": "0.7", "secs": "0", "code": "0"}
    tags = run.data.tags
    assert tags["mlflow.project.backend"] == "slurm" and tags["mlproject.slurm.job_id"] == job_id
    assert tags["mlflow.source.name"] == str(project)  # the user's project, not its staged copy
    # The run's own log (the command's output) is an artifact, as for a local run.
    assert "output.log" in [a.path for a in MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").list_artifacts(run_id)]
    # The job's script only names the interpreter and the request: no parameters, no settings.
    script = (Path(os.environ["MLPROJECT_HOME"]) / "runs" / run_id / "job.sh").read_text()
    assert "alpha" not in script and "MLFLOW" not in script and "-m runner job" in script


def test_failed_command_exits_with_its_code(slurm, make_project, _work_in_tmp):
    project = make_project(SHELL_PROJECT)
    result = _cli("run", str(project), "-b", "slurm", "-P", "code=3", "--env-manager", "local")
    assert result.returncode == 3, result.stderr
    run_id, _ = _submitted(result.stderr)
    assert _ledger_row(run_id)["status"] == "FAILED"
    assert MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(run_id).info.status == "FAILED"


def test_detached_run_is_scheduled_until_its_job_starts(slurm, make_project, _work_in_tmp):
    project = make_project(SHELL_PROJECT)
    run_id, job_id = _detach(project, config={"sbatch_args": ["--hold"]})
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    assert client.get_run(run_id).info.status == "SCHEDULED"
    assert _ledger_row(run_id)["status"] == "SCHEDULED"
    shown = _cli("runs", "show", run_id)
    assert f"slurm job {job_id} (PENDING)" in shown.stdout, shown.stdout
    listed = _cli("runs", "list")
    assert any(run_id in line and "SCHEDULED" in line and f"slurm:{job_id}" in line for line in listed.stdout.splitlines())
    assert slurm.command("scontrol", "release", job_id).returncode == 0
    followed = _cli("runs", "logs", run_id, "-f", timeout=120)
    assert "alpha=0.5" in followed.stdout
    assert _ledger_row(run_id)["status"] == "FINISHED"
    assert client.get_run(run_id).info.status == "FINISHED"


def test_cancelled_while_pending_is_killed_everywhere(slurm, make_project, _work_in_tmp):
    project = make_project(SHELL_PROJECT)
    run_id, job_id = _detach(project, config={"sbatch_args": ["--hold"]})
    cancelled = _cli("runs", "cancel", run_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "KILLED" in cancelled.stderr and "CANCELLED" in cancelled.stderr
    row = _ledger_row(run_id)
    assert row["status"] == "KILLED" and row["tracking_ended"] == 1
    assert MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(run_id).info.status == "KILLED"


def test_ctrl_c_cancels_a_running_job_and_leaves_no_process(slurm, make_project, _work_in_tmp):
    project = make_project(SHELL_PROJECT)
    proc = _start_cli("run", str(project), "-b", "slurm", "-P", "secs=300", "--env-manager", "local")
    run_id = _wait_for(lambda: next((row["id"] for row in json.loads(_cli("runs", "list", "--json").stdout)
                                     if row["status"] == "RUNNING"), None), 60, "the job to start")
    _wait_for(lambda: _processes_of(run_id), 30, "the command on the node")
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    row = _ledger_row(run_id)
    assert row["status"] == "KILLED", row
    assert MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(run_id).info.status == "KILLED"
    _wait_for(lambda: not _processes_of(run_id), 30, "the job's processes to go")


def test_time_limit_is_failed_with_the_slurm_state(slurm, make_project, _work_in_tmp):
    project = make_project(SHELL_PROJECT)
    # Slurm's smallest limit is a minute, checked about every 30 s.
    result = _cli("run", str(project), "-b", "slurm", "-c", '{"time": "1"}', "-P", "secs=600", "--env-manager", "local",
                  timeout=240)
    assert result.returncode != 0, result.stderr
    run_id, job_id = _submitted(result.stderr)
    row = _ledger_row(run_id)
    assert row["status"] == "FAILED" and "TIMEOUT" in row["reason"], row
    assert "TIMEOUT" in result.stderr.splitlines()[-1]
    assert MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(run_id).info.status == "FAILED"
    assert _processes_of(run_id) == []


def test_a_cancelled_job_reads_cancelled_to_the_runner_inside_it(slurm, tmp_path):
    """Slurm signals every process of a cancelled job in no set order, so a command may exit
    (even with 0) before the runner hears the signal. The runner then asks the controller,
    which says COMPLETING with no reason while it takes a cancelled job down: that is a cancel."""
    answer = tmp_path / "answer.txt"
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n"
                      f"trap '{sys.executable} -c \"from runner.backends.slurm import stopped_by_cluster as s; "
                      f"print(s())\" > {answer}; exit 0' TERM\n"
                      f"touch {tmp_path / 'trapped'}\n"
                      "sleep 300 & wait\n")
    submitted = slurm.command("sbatch", "--parsable", "-o", str(tmp_path / "out.txt"), f"--chdir={tmp_path}",
                              str(script))
    job_id = submitted.stdout.strip()
    assert submitted.returncode == 0 and job_id, submitted.stderr
    # (Its trap set, not merely RUNNING: a job is RUNNING before its script's first line, and a
    # cancel that came first killed the shell before it had a trap, in a fresh clone's make test.)
    _wait_for((tmp_path / "trapped").exists, 60, "the job's script to set its trap")
    assert slurm.command("scancel", job_id).returncode == 0
    _wait_for(answer.exists, 30, "the job's answer")
    _wait_for(lambda: answer.read_text().strip() != "", 30, "the job's answer")
    assert answer.read_text().strip() == f"('KILLED', 'slurm job {job_id} ended CANCELLED')"


PYTHON_ENV_PROJECT = """
    name: shared-env
    python_env: python_env.yaml
    entry_points:
      main:
        parameters:
          n: {type: int, default: 0}
        command: "python -c 'import os, sys; print(\\"n={n} node\\", os.environ[\\"SLURMD_NODENAME\\"], sys.prefix)'"
"""


def test_two_jobs_at_once_on_two_nodes_share_one_environment_build(slurm, make_project, _work_in_tmp):
    project = make_project(PYTHON_ENV_PROJECT, {"python_env.yaml": f"python: '{sys.version_info[0]}.{sys.version_info[1]}'\ndependencies: []\n"})
    # Both queued before either starts: the two nodes build or wait for the same environment at once.
    # ("exclusive": a whole node each, so the two jobs run on the two nodes)
    jobs = [_detach(project, "-P", f"n={n}", "--env-manager", "uv", config={"exclusive": True, "sbatch_args": ["--hold"]})
            for n in (1, 2)]
    assert slurm.command("scontrol", "release", *[job for _, job in jobs]).returncode == 0
    outputs = []
    for run_id, _ in jobs:
        followed = _cli("runs", "logs", run_id, "-f", timeout=300)
        outputs.append(followed.stdout)
        assert _ledger_row(run_id)["status"] == "FINISHED", followed.stdout + followed.stderr
    nodes = {line.split(" node ")[1].split()[0] for out in outputs for line in out.splitlines() if " node " in line}
    prefixes = {line.split()[-1] for out in outputs for line in out.splitlines() if " node " in line}
    assert nodes == {"n1", "n2"}, json.dumps(outputs)
    assert len(prefixes) == 1, outputs  # one environment, built once
    listed = _cli("env", "list")
    assert listed.stdout.count("uv") == 1, listed.stdout


def test_submitter_killed_while_its_job_runs(slurm, make_project, _work_in_tmp):
    project = make_project(SHELL_PROJECT)
    proc = _start_cli("run", str(project), "-b", "slurm", "-P", "secs=2", "--env-manager", "local")
    run_id = _wait_for(lambda: next((row["id"] for row in json.loads(_cli("runs", "list", "--json").stdout)
                                     if row["status"] == "RUNNING"), None), 60, "the job to start")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # The job goes on without its submitter, and its runner records the end.
    row = _wait_for(lambda: (r := _ledger_row(run_id))["status"] != "RUNNING" and r, 60, "the run's end")
    assert row["status"] == "FINISHED"
    assert MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(run_id).info.status == "FINISHED"


def test_node_lost_during_a_job_fails_the_run_and_leaves_nothing_when_it_returns(slurm, make_project, _work_in_tmp):
    """A node stops answering while its job runs (its slurmd SIGKILLed, as a machine cut off
    would be): Slurm ends the job NODE_FAIL and the run is FAILED with that reason, with no exit
    code, and not run again (jobs go with --no-requeue; Slurm's default would requeue it). When
    the node returns, nothing of the run is left running there."""
    project = make_project(SHELL_PROJECT)
    lost = False
    try:
        with slurm.node_timeout(5):
            proc = _start_cli("run", str(project), "-b", "slurm", "-c", '{"sbatch_args": ["--nodelist=n2"]}',
                              "-P", "secs=300", "--env-manager", "local")
            try:
                run_id = _wait_for(lambda: next((row["id"] for row in json.loads(_cli("runs", "list", "--json").stdout)
                                                 if row["status"] == "RUNNING"), None), 60, "the job to start")
                _wait_for(lambda: _processes_of(run_id), 30, "the command on the node")
                slurm.lose_node("n2")
                lost = True
                _, stderr = proc.communicate(timeout=120)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 1, stderr
        run_id, job_id = _submitted(stderr)
        last = stderr.strip().splitlines()[-1]
        assert f"slurm job {job_id} ended NODE_FAIL" in last and "exit code" not in last, stderr
        row = _ledger_row(run_id)
        assert (row["status"], row["exit_code"]) == ("FAILED", None) and "NODE_FAIL" in row["reason"], row
        assert MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(run_id).info.status == "FAILED"
        job = slurm.command("scontrol", "show", "job", "-o", job_id).stdout
        assert "JobState=NODE_FAIL" in job and "Restarts=0" in job, job
        assert _processes_of(run_id), "the job's processes went with its node's slurmd: nothing is left to test"
    finally:
        if lost:
            slurm.return_node("n2")
    _wait_for(lambda: not _processes_of(run_id), 60, "Slurm to stop the job's processes on the returned node")
    assert _ledger_row(run_id)["status"] == "FAILED"


# Sleeps the first time (until its node is lost), ends at once the next: the marker says which.
RETRIED_PROJECT = """
    name: retried
    entry_points:
      main:
        parameters:
          marker: {type: string}
        command: "if [ -e '{marker}' ]; then echo again; else touch '{marker}'; sleep 300; fi"
"""


def _rows() -> list[dict]:
    return json.loads(_cli("runs", "list", "--json", "--limit", "100").stdout)


def _lose_n2_until(slurm, running: int, runs_before_return: int, proc: subprocess.Popen) -> str:
    """With `running` commands running on n2: n2 is lost, and returned once `runs_before_return`
    runs are in the ledger (the retries queued, pinned to n2). The CLI's stderr."""
    def all_running() -> bool:
        jobs = [row for row in _rows() if row["backend"] == "slurm" and row["status"] == "RUNNING"]
        return len(jobs) == running and all(_processes_of(row["id"]) for row in jobs)

    _wait_for(all_running, 90, "the commands on n2")
    slurm.lose_node("n2")
    try:
        _wait_for(lambda: len(_rows()) >= runs_before_return, 120, "the retries to be queued")
    finally:
        slurm.return_node("n2")
    _, stderr = proc.communicate(timeout=180)
    return stderr


def test_a_run_whose_node_is_lost_is_retried_as_a_new_tagged_run(slurm, make_project, _work_in_tmp, tmp_path):
    """--retries 1: the job ends NODE_FAIL (the infrastructure, not the command), so the run is
    submitted again as a new run tagged with its attempt and the run it retries; the first
    stays recorded FAILED with Slurm's word."""
    project = make_project(RETRIED_PROJECT)
    with slurm.node_timeout(5):
        proc = _start_cli("run", str(project), "-b", "slurm", "-c", '{"sbatch_args": ["--nodelist=n2"]}',
                          "-P", f"marker={tmp_path / 'marker'}", "--env-manager", "local", "--retries", "1")
        try:
            stderr = _lose_n2_until(slurm, 1, 2, proc)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr
    first, second = sorted(_rows(), key=lambda row: row["start_time"])
    assert (first["status"], second["status"]) == ("FAILED", "FINISHED"), (first, second)
    assert "NODE_FAIL" in first["reason"]
    assert f"run {first['id']} failed (slurm job {first['job_id']} ended NODE_FAIL): attempt 2 of 2" in stderr
    assert f"=== Run (ID '{second['id']}') succeeded ===" in stderr
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    tags = client.get_run(second["id"]).data.tags
    assert (tags["mlproject.retry.attempt"], tags["mlproject.retry.of"]) == ("2", first["id"])
    assert client.get_run(first["id"]).info.status == "FAILED"
    _wait_for(lambda: not _processes_of(first["id"]), 60, "the lost attempt's processes on the returned node")


@pytest.mark.parametrize("per_task", [1, 2], ids=["a-task-each", "carried"])
def test_a_sweeps_trials_whose_node_is_lost_are_retried_and_each_finishes_once(slurm, make_project, _work_in_tmp,
                                                                                tmp_path, per_task):
    """A sweep's job array on n2, n2 lost: each trial's task ends NODE_FAIL and the trial runs
    again as attempt 2 (not from the array); every trial ends FINISHED exactly once. Carried: one
    task holds both, lost while the first runs; the second, never started, is retried too."""
    project = make_project(RETRIED_PROJECT)
    markers = f"{tmp_path / 'a'},{tmp_path / 'b'}"
    if per_task > 1:
        (tmp_path / "b").touch()  # (the second trial's attempt that runs says "again" and ends)
    config = {"sbatch_args": ["--nodelist=n2"], "trials_per_task": per_task}
    with slurm.node_timeout(5):
        proc = _start_cli("sweep", str(project), "-b", "slurm", "-c", json.dumps(config),
                          "-P", f"marker={markers}", "--env-manager", "local", "--retries", "1",
                          "--max-parallel", "2")
        try:
            stderr = _lose_n2_until(slurm, 3 - per_task, 5, proc)  # the parent, two lost attempts, two retries
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr
    trials = [row for row in _rows() if row["backend"] == "slurm"]
    assert sorted(row["status"] for row in trials) == ["FAILED", "FAILED", "FINISHED", "FINISHED"], trials
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    failed = {row["id"]: row for row in trials if row["status"] == "FAILED"}
    assert all("NODE_FAIL" in row["reason"] for row in failed.values()), failed
    retries = [client.get_run(row["id"]).data.tags for row in trials if row["status"] == "FINISHED"]
    assert {tags["mlproject.retry.of"] for tags in retries} == set(failed)
    assert all(tags["mlproject.retry.attempt"] == "2" for tags in retries)
    assert "2/2 trials finished" in stderr


def test_a_node_that_does_not_share_mlproject_home_is_named_as_the_cause(slurm, make_project, mlproject_home,
                                                                         _work_in_tmp):
    """What goes wrong first on a real cluster: MLPROJECT_HOME is not on a file system the nodes
    share. The job cannot start the runner there, and the run's end says what to check."""
    project = make_project(SHELL_PROJECT)
    slurm.lose_node("n2")
    try:
        slurm.return_node("n2", hidden=mlproject_home)  # n2 sees an empty directory there
        result = _cli("run", str(project), "-b", "slurm", "-c", '{"sbatch_args": ["--nodelist=n2"]}',
                      "--env-manager", "local", timeout=120)
    finally:
        slurm.lose_node("n2")
        slurm.return_node("n2")
    assert result.returncode == 1, result.stderr
    run_id, job_id = _submitted(result.stderr)
    last = result.stderr.strip().splitlines()[-1]
    assert "its runner never started" in last and "the nodes must share MLPROJECT_HOME" in last, result.stderr
    row = _ledger_row(run_id)
    assert row["status"] == "FAILED" and "must share MLPROJECT_HOME" in row["reason"], row
    assert MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(run_id).info.status == "FAILED"


def test_job_gone_without_its_runner_is_reconciled(slurm, make_project, _work_in_tmp):
    """The submitter is gone (detached) and the job ends without its runner ever starting: the
    next invocation reads Slurm's word and ends the run in the ledger and in tracking."""
    project = make_project(SHELL_PROJECT)
    run_id, job_id = _detach(project, config={"sbatch_args": ["--hold"]})
    assert slurm.command("scancel", job_id).returncode == 0  # behind the runner's back
    _wait_for(lambda: "CANCELLED" in slurm.command("scontrol", "show", "job", "-o", job_id).stdout, 30, "the cancel")
    listed = _cli("runs", "list")
    assert any(run_id in line and "KILLED" in line for line in listed.stdout.splitlines()), listed.stdout
    row = _ledger_row(run_id)
    assert row["reason"] == f"slurm job {job_id} ended CANCELLED" and row["tracking_ended"] == 1
    assert MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(run_id).info.status == "KILLED"


def test_completion_log_answers_once_the_controller_forgets(slurm, make_project, _work_in_tmp):
    """The job completion log (jobcomp/filetxt) is read for jobs slurmctld no longer holds."""
    from runner.backends import slurm as backend

    project = make_project(SHELL_PROJECT)
    result = _cli("run", str(project), "-b", "slurm", "-P", "code=4", "--env-manager", "local")
    _, job_id = _submitted(result.stderr)
    assert backend._completion_log() == str(slurm.completion_log)
    line = next(line for line in slurm.completion_log.read_text().splitlines() if line.startswith(f"JobId={job_id} "))
    state = backend._state(backend._fields(line))
    assert (state.name, state.status, state.exit_code) == ("FAILED", "FAILED", 4)


def test_bad_partition_is_refused_before_anything_is_created(slurm, make_project, _work_in_tmp):
    project = make_project(SHELL_PROJECT)
    result = _cli("run", str(project), "-b", "slurm", "-c", '{"partition": "nosuch"}', "--env-manager", "local")
    assert_clean_error(result, 2, "no partition 'nosuch'")
    assert "debug" in result.stderr  # the hint names the partitions there are
    assert json.loads(_cli("runs", "list", "--json").stdout) == []
    assert MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").search_runs(["0"]) == []
    assert slurm.command("squeue", "-h").stdout.strip() == ""


@pytest.mark.parametrize("config", [None, '{"time": "1"}', '{"partition": "debug"}'])
def test_an_unreachable_controller_is_refused_before_anything_with_or_without_config(make_project, _work_in_tmp,
                                                                                    tmp_path, config):
    """Without -c (or with a config naming no partition) the controller was not asked: a FAILED
    run was created ('sbatch refused the job', exit 1) where -c with a partition was refused."""
    project = make_project(SHELL_PROJECT)
    nowhere = tmp_path / "slurm.conf"
    nowhere.write_text("ClusterName=gone\nSlurmctldHost=localhost\nSlurmctldPort=1\n")
    args = ["-c", config] if config else []
    result = _cli("run", str(project), "-b", "slurm", *args, "--env-manager", "local",
                  env={"SLURM_CONF": str(nowhere), "SLURMD_CONF": str(nowhere)}, timeout=120)
    assert_clean_error(result, 2, "cannot reach the Slurm controller")
    assert json.loads(_cli("runs", "list", "--json").stdout) == []
    assert MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").search_runs(["0"]) == []


def test_unknown_config_key_and_detach_on_local_are_refused(slurm, make_project, _work_in_tmp):
    project = make_project(SHELL_PROJECT)
    typo = _cli("run", str(project), "-b", "slurm", "-c", '{"partiton": "debug"}', "--env-manager", "local")
    assert_clean_error(typo, 2, "partiton")
    local = _cli("run", str(project), "--detach", "--env-manager", "local")
    assert_clean_error(local, 2, "--detach")


def test_credentials_reach_the_job_only_through_its_environment(slurm, make_project, mlflow_server, mlproject_home, _work_in_tmp):
    project = make_project(SHELL_PROJECT)
    secret = "sl-s3cr3t-77"
    with_password = mlflow_server.replace("http://", f"http://alice:{secret}@")
    script_file = _work_in_tmp / "job-script.sh"
    result = _cli("run", str(project), "-b", "slurm", "--env-manager", "local",
                  "-c", json.dumps({"sbatch-script-file": str(script_file), "exports": ["HOME"]}),
                  env={"MLFLOW_TRACKING_URI": with_password, "MLFLOW_TRACKING_TOKEN": "tok-" + secret})
    assert result.returncode == 0, result.stderr
    run_id, _ = _submitted(result.stderr)
    run = MlflowClient(mlflow_server).get_run(run_id)
    assert run.info.status == "FINISHED"  # the runner on the node reached the server
    assert secret not in result.stdout + result.stderr
    assert secret not in json.dumps(run.data.tags) + json.dumps(run.data.params)
    assert secret not in script_file.read_text()
    written = [p for base in (mlproject_home, _work_in_tmp) for p in base.rglob("*") if p.is_file()]
    assert any(p.name == "job.json" for p in written) and any(p.name == "job.log" for p in written)
    for path in written:
        assert secret.encode() not in path.read_bytes(), path


API_SUBMIT = """
import json, sys
import runner
submitted = runner.run(sys.argv[1], parameters={"secs": sys.argv[2]}, backend="slurm", env_manager="local",
                       backend_config={}, detach=True)
print(submitted.run_id)
"""


def test_api_from_another_process_waits_and_cancels(slurm, make_project, _work_in_tmp):
    import runner

    project = make_project(SHELL_PROJECT)
    ids = []
    for secs in ("300", "1"):
        made = subprocess.run([sys.executable, "-c", API_SUBMIT, str(project), secs], capture_output=True, text=True,
                              env={**os.environ, "PATH": BARE_PATH}, timeout=120)
        assert made.returncode == 0, made.stderr
        ids.append(made.stdout.split()[-1])
    long_run = runner.attach(ids[0])
    _wait_for(lambda: long_run.get_status() == "RUNNING", 60, "the long job to start")
    long_run.cancel()
    assert long_run.get_status() == "KILLED"
    short = runner.attach(ids[1][:12])  # a prefix names it, as on the command line
    assert short.wait() is True and short.get_status() == "FINISHED" and short.exit_code == 0
    again = runner.attach(ids[0])
    assert again.done and again.get_status() == "KILLED" and again.wait() is False


def test_local_projects_are_staged_by_content(make_project, tmp_path):
    """No cluster needed: the snapshot a job's node runs from."""
    from runner.backends.staging import snapshot
    from runner.sources import fetch

    project = make_project(SHELL_PROJECT, {"src/train.sh": "echo hi\n", ".git/HEAD": "ref: x\n", "mlflow.db": "store"})
    (project / "src" / "train.sh").chmod(0o755)
    (project / "link").symlink_to("src/train.sh")
    root = tmp_path / "staging"
    first = snapshot(project, root)
    assert snapshot(project, root) == first  # same contents, same directory, made once
    staged = sorted(p.relative_to(first).as_posix() for p in first.rglob("*"))
    assert staged == [".mlproject-staged", "MLproject", "link", "src", "src/train.sh"]
    assert (first / "src" / "train.sh").stat().st_mode & 0o111 and (first / "link").is_symlink()
    (project / "src" / "train.sh").write_text("echo changed\n")
    second = snapshot(project, root)
    assert second != first and (first / "src" / "train.sh").read_text() == "echo hi\n"
    # A run of a staged project works in its own copy: what it writes never reaches the snapshot.
    source = fetch(str(second), None, tmp_path)
    assert source.checkout == second
    copy = source.private_copy(tmp_path / "work")
    (copy / "written-by-run").write_text("x")
    assert not (second / "written-by-run").exists()


def test_a_staged_projects_key_is_read_once_per_state_of_its_files(make_project, mlproject_home, tmp_path):
    """Resubmitting an unchanged project (each trial of a sweep) does not read its files again:
    its key is remembered with the files' stat. Any write changes the stat (ctime at least), and
    a file written within the last seconds is always read."""
    import hashlib

    from runner.backends.staging import snapshot

    project = make_project(SHELL_PROJECT, {"data.csv": "a,b\n1,2\n"})
    root = tmp_path / "staging"
    fresh = snapshot(project, root)  # files just written: read, and not remembered
    remembered = mlproject_home / "cache" / "digests" / hashlib.sha256(f"staged\0{project.resolve()}".encode()).hexdigest()[:32]
    assert not remembered.exists()
    time.sleep(2.5)
    assert snapshot(project, root) == fresh and remembered.exists()
    stamp, key = remembered.read_text().split()
    assert key[:32] == fresh.name
    remembered.write_text(f"{stamp} {'0' * 64}\n")  # what is remembered for this very state is used, unread
    assert snapshot(project, root).name == "0" * 32
    data = project / "data.csv"
    before = data.stat()
    data.write_text("a,b\n3,4\n")  # same size, its times put back: only the ctime tells
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert snapshot(project, root) not in (fresh, root / ("0" * 32))


def test_cache_gc_removes_staged_projects_no_job_needs(slurm, make_project, mlproject_home, _work_in_tmp):
    """Every edit of a local project submitted to the cluster stages a copy: `cache gc` removes
    those unused for the period, never one that a queued job will still read, and what an
    interrupted staging left; a snapshot used again is dated anew."""
    project = make_project(SHELL_PROJECT)
    held, held_job = _detach(project, config={"sbatch_args": ["--hold"]})  # queued: needs its snapshot
    staging = mlproject_home / "staging"
    needed = Path(json.loads((mlproject_home / "runs" / held / "job.json").read_text())["uri"])
    (project / "extra.txt").write_text("an edit\n")
    done = _cli("run", str(project), "-b", "slurm", "--env-manager", "local")
    assert done.returncode == 0, done.stderr
    old = next(path for path in staging.iterdir() if (path / ".mlproject-staged").exists() and path != needed)
    leftover = staging / ".tmp-interrupted"
    leftover.mkdir()
    day_ago = time.time() - 86400
    for path in (needed / ".mlproject-staged", old / ".mlproject-staged", leftover):
        os.utime(path, (day_ago, day_ago))

    dry = _cli("cache", "gc", "--older-than", "1h", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove 1 staged project(s), 0 packed environment(s), 0 ended job(s)' files and 1 leftover(s)" in dry.stdout and "kept 1 named by queued" in dry.stdout
    assert old.exists() and leftover.exists()
    collected = _cli("cache", "gc", "--older-than", "1h")
    assert collected.returncode == 0, collected.stderr
    assert "removed 1 staged project(s), 0 packed environment(s), 0 ended job(s)' files and 1 leftover(s)" in collected.stdout, collected.stdout
    assert not old.exists() and not leftover.exists() and needed.exists()
    assert [p.name for p in staging.iterdir() if p.name.startswith(".tmp-")] == []

    assert slurm.command("scontrol", "release", held_job).returncode == 0  # the queued job still finds its project
    followed = _cli("runs", "logs", held, "-f")
    assert _ledger_row(held)["status"] == "FINISHED", followed.stdout + followed.stderr
    (project / "extra.txt").unlink()  # the first contents again: the same snapshot, used anew
    again, _ = _detach(project)
    assert json.loads((mlproject_home / "runs" / again / "job.json").read_text())["uri"] == str(needed)
    assert (needed / ".mlproject-staged").stat().st_mtime > day_ago + 3600
    _cli("runs", "logs", again, "-f")
    assert _ledger_row(again)["status"] == "FINISHED"
    kept = _cli("cache", "gc", "--older-than", "1h").stdout
    assert "removed 0 staged project(s)" in kept and "kept 0 named by queued or running jobs and 1 used recently," in kept
    assert needed.exists()


def test_git_commit_reaches_the_node_through_the_cache(slurm, make_project, _work_in_tmp):
    project = make_project(SHELL_PROJECT)
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    result = _cli("run", str(project), "-v", sha, "-b", "slurm", "-P", "alpha=0.25", "--env-manager", "local")
    assert result.returncode == 0, result.stderr
    assert "alpha=0.25 node=n" in result.stdout
    run_id, _ = _submitted(result.stderr)
    request = json.loads((Path(os.environ["MLPROJECT_HOME"]) / "runs" / run_id / "job.json").read_text())
    assert request["version"] == sha  # no snapshot: the node checks the commit out of the shared cache
    assert not (Path(os.environ["MLPROJECT_HOME"]) / "staging").exists()
    tags = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(run_id).data.tags
    assert tags["mlflow.source.git.commit"] == sha


def test_sweep_on_the_cluster(slurm, make_project, _work_in_tmp):
    """A grid whose trials are Slurm jobs, at most two queued or running at once."""
    project = make_project(SHELL_PROJECT)
    result = subprocess.run([sys.executable, "-m", "runner", "sweep", str(project), "-P", "alpha=0.1,0.2", "-P", "code=0,5",
                             "-b", "slurm", "--max-parallel", "2", "--env-manager", "local"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PATH": BARE_PATH})
    assert result.returncode == 1, result.stderr  # the trials with code=5 fail, and the sweep says so
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    parent = client.search_runs(["0"], "tags.`mlproject.sweep.id` != ''")[0]
    assert parent.info.status == "FAILED"
    children = client.search_runs(["0"], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted((c.data.params["code"], c.info.status) for c in children) == [
        ("0", "FINISHED"), ("0", "FINISHED"), ("5", "FAILED"), ("5", "FAILED")]
    assert all(c.data.tags["mlflow.project.backend"] == "slurm" for c in children)
    # One job array: one sbatch for the grid, each trial one of its tasks.
    jobs = sorted(c.data.tags["mlproject.slurm.job_id"] for c in children)
    assert len({job.split("_")[0] for job in jobs}) == 1 and [job.split("_")[1] for job in jobs] == ["0", "1", "2", "3"]
    assert "queued as slurm job array" in result.stderr


def test_a_sweep_larger_than_max_array_size_goes_out_as_arrays_one_after_another(slurm, make_project,
                                                                                  _work_in_tmp):
    """MaxArraySize=2 and five trials: three arrays (2, 2, 1), each queued to start once the one
    before has ended, so no more than the throttle run at once; every trial FINISHED once."""
    project = make_project(SHELL_PROJECT)
    with slurm.setting("MaxArraySize=2"):
        result = subprocess.run([sys.executable, "-m", "runner", "sweep", str(project), "-P",
                                 "alpha=0.1,0.2,0.3,0.4,0.5", "-b", "slurm", "--max-parallel", "2",
                                 "--env-manager", "local"],
                                capture_output=True, text=True, timeout=300, env={**os.environ, "PATH": BARE_PATH})
    assert result.returncode == 0, result.stderr
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    parent = client.search_runs(["0"], "tags.`mlproject.sweep.id` != ''")[0]
    children = client.search_runs(["0"], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.data.params["alpha"] for c in children) == ["0.1", "0.2", "0.3", "0.4", "0.5"]
    assert all(c.info.status == "FINISHED" for c in children)
    jobs = [c.data.tags["mlproject.slurm.job_id"] for c in children]
    arrays = sorted({job.split("_")[0] for job in jobs}, key=int)
    assert len(arrays) == 3 and sorted(job.split("_")[1] for job in jobs) == ["0", "0", "0", "1", "1"], jobs
    assert f"queued as slurm job arrays {', '.join(arrays)}, at most 2 at once" in result.stderr
    for before, after in zip(arrays, arrays[1:]):  # the completion log: each array ended before the next began
        ends = [_completion(slurm, job)["EndTime"] for job in jobs if job.startswith(before + "_")]
        starts = [_completion(slurm, job)["StartTime"] for job in jobs if job.startswith(after + "_")]
        assert max(ends) <= min(starts), (before, ends, after, starts)


def test_a_requeued_job_carries_its_run_on_to_its_end(slurm, make_project, _work_in_tmp):
    """`--requeue` in sbatch_args, and Slurm requeues the running job (`scontrol requeue`: what a
    preemption does under PreemptMode=REQUEUE): the run is not ended but waits SCHEDULED; the job's
    next start carries the same run on to FINISHED, once, its log holding both starts."""
    project = make_project(SHELL_PROJECT)
    proc = _start_cli("run", str(project), "-b", "slurm", "-c", '{"sbatch_args": ["--requeue"]}', "-P", "secs=5",
                      "--env-manager", "local")
    try:
        row = _wait_for(lambda: (rows := json.loads(_cli("runs", "list", "--json").stdout)) and
                        rows[0]["status"] == "RUNNING" and rows[0], 120, "the job to run")
        time.sleep(1.5)  # (the command is under way)
        assert slurm.command("scontrol", "requeue", row["job_id"]).returncode == 0
        requeued = _wait_for(lambda: _ledger_row(row["id"])["status"] == "SCHEDULED" and _ledger_row(row["id"]), 30,
                             "the run to wait for the job's next start")
        assert "requeued" in requeued["reason"]
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr + "\n--- the job's log:\n" + _cli("runs", "logs", row["id"]).stdout + slurm.logs()
    (only,) = json.loads(_cli("runs", "list", "--json").stdout)
    assert (only["id"], only["status"], only["exit_code"]) == (row["id"], "FINISHED", 0), only
    assert MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(row["id"]).info.status == "FINISHED"
    log = _cli("runs", "logs", row["id"]).stdout
    assert log.count("alpha=0.5 node=n") == 2, log  # (one line per start of the job)


def test_a_finished_job_launched_again_leaves_its_run_as_it_ended(slurm, make_project, _work_in_tmp):
    """After a controller restart Slurm may launch a job that has already run (seed 7:15: its
    runner continued the MLflow run, RUNNING again, found its ledger row ended, and left it
    RUNNING). Replayed by queueing the finished job's own batch script again, in the job's own
    environment: the runner runs nothing and gives the tracked run its recorded end back."""
    project = make_project(SHELL_PROJECT)
    result = _cli("run", str(project), "-b", "slurm", "--env-manager", "local")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(_cli("runs", "list", "--json").stdout)
    tracking = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    run_dir = Path(row["log_path"]).parent
    again = subprocess.run(["sbatch", "--parsable", f"--output={run_dir / 'again.log'}", f"--chdir={run_dir}",
                            str(run_dir / "job.sh")], capture_output=True, text=True, timeout=60,
                           env={**os.environ, **slurm.env,
                                "MLFLOW_TRACKING_URI": f"sqlite:///{_work_in_tmp / 'mlflow.db'}"})
    assert again.returncode == 0, again.stderr
    job_id = again.stdout.strip().split(";")[0]
    _wait_for(lambda: re.search(r"JobState=(COMPLETED|FAILED)", slurm.command("scontrol", "show", "job", "-o",
                                                                              job_id).stdout), 120, "the second launch")
    said = (run_dir / "again.log").read_text()
    assert "was ended before its job started" in said and "alpha=" not in said, said
    assert tracking.get_run(row["id"]).info.status == "FINISHED", said
    assert (_ledger_row(row["id"])["status"], _ledger_row(row["id"])["exit_code"]) == ("FINISHED", 0)


def test_a_sweeps_array_is_followed_by_one_thread_asking_the_controller_once_a_second(slurm, make_project,
                                                                                      _work_in_tmp, monkeypatch):
    """Twenty-four trials queued as one array, four at a time: one thread follows them all and
    asks the controller about all their jobs in one `scontrol` a second, not one per trial, and
    a trial takes a driver thread only once its task has left the queue (at 1,000 trials, one
    per trial was 1,000 threads and 1,000 commands a second on the submit host)."""
    import threading

    import runner

    project = make_project(SHELL_PROJECT)
    shims, calls = _work_in_tmp / "shims", _work_in_tmp / "scontrol.calls"
    shims.mkdir()
    (shims / "scontrol").write_text(f"#!/bin/sh\necho \"$(date +%s.%N) $*\" >> {calls}\nexec /usr/bin/scontrol \"$@\"\n")
    (shims / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}:{BARE_PATH}")
    followers, trial_threads, stop = [], [], threading.Event()

    def count_threads() -> None:
        while not stop.wait(0.05):
            names = [thread.name for thread in threading.enumerate()]
            followers.append(names.count("mlproject-follow"))
            trial_threads.append(sum(name.startswith("mlproject-trial") for name in names))

    sampler = threading.Thread(target=count_threads, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        result = runner.sweep(str(project), parameters={"alpha": ",".join(f"0.{n:02d}" for n in range(24)),
                                                        "secs": "1"},
                              backend="slurm", max_parallel=4, env_manager="local", cwd=_work_in_tmp)
    finally:
        stop.set()
        sampler.join()
    took = time.monotonic() - started
    assert result.succeeded and len(result.trials) == 24
    assert all(trial.status == "FINISHED" for trial in result.trials)
    assert max(followers) == 1, sorted(set(followers))
    assert max(trial_threads) <= 4 + 4 + 8, max(trial_threads)  # (the throttle, and as many again, and 8)
    # (the whole-cluster reads of the follower, beside the few a submission and its checks make)
    follows = [line for line in calls.read_text().splitlines() if line.split()[1:] == ["show", "job", "-o"]]
    assert len(follows) <= took + 2, (len(follows), took)


def _completion(slurm, job: str) -> dict[str, str]:
    """Job `job`'s line of the test cluster's job completion log, as fields."""
    array, _, task = job.partition("_")
    for line in slurm.completion_log.read_text().splitlines():
        fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
        if fields.get("JobId") == job or (fields.get("ArrayJobId") == array and fields.get("ArrayTaskId") == task):
            return fields
    raise AssertionError(f"job {job} is not in the completion log")


def test_a_sweep_asks_slurm_for_each_trials_gpus(slurm, make_project, _work_in_tmp):
    """`--gpus-per-trial 1` on Slurm: every array task asks for one GPU of its node (the test
    cluster's nodes have two each, files standing for devices), and Slurm grants it."""
    project = make_project("""
        name: gpus
        entry_points:
          main:
            parameters:
              alpha: {type: float, default: 0}
            command: "echo gpus=$SLURM_GPUS_ON_NODE; sleep 1"
    """)
    result = subprocess.run([sys.executable, "-m", "runner", "sweep", str(project), "-P", "alpha=0.1,0.2,0.3",
                             "-b", "slurm", "--max-parallel", "3", "--env-manager", "local", "--gpus-per-trial", "1"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PATH": BARE_PATH})
    assert result.returncode == 0, result.stderr
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    parent = client.search_runs(["0"], "tags.`mlproject.sweep.id` != ''")[0]
    children = client.search_runs(["0"], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 3
    for child in children:
        logs = _cli("runs", "logs", child.info.run_id)
        assert "gpus=1" in logs.stdout, logs.stdout
    # More than a node has: Slurm refuses the array, said in one line, and no trial is left open.
    result = subprocess.run([sys.executable, "-m", "runner", "sweep", str(project), "-P", "alpha=0.1,0.2",
                             "-b", "slurm", "--env-manager", "local", "--gpus-per-trial", "3"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PATH": BARE_PATH})
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    listed = json.loads(_cli("runs", "list", "--json", "--limit", "100").stdout)
    assert not [row for row in listed if row["status"] in ("SCHEDULED", "RUNNING")], listed


def test_ctrl_c_stops_a_sweep_on_the_cluster(slurm, make_project, _work_in_tmp):
    """Two of four trials run at once (the array's throttle), two wait; Ctrl-C cancels all four:
    the running ones and the waiting ones (never split out of the array's own record) are
    KILLED, the parent too, nothing is left queued or running, and the line names the resume."""
    project = make_project(SHELL_PROJECT)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "sweep", str(project), "-P", "alpha=0.1,0.2,0.3,0.4",
                             "-P", "secs=300", "-b", "slurm", "--max-parallel", "2", "--env-manager", "local"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PATH": BARE_PATH})
    try:
        running = _wait_for(lambda: (rows := [r for r in json.loads(_cli("runs", "list", "--json").stdout)
                                              if r["status"] == "RUNNING" and r["backend"] == "slurm"])
                            and len(rows) == 2 and rows, 60, "two trials running")
        for row in running:
            _wait_for(lambda run_id=row["id"]: _processes_of(run_id), 30, "the commands on the nodes")
        queue = slurm.command("squeue", "-h", "-o", "%i %t %r").stdout.split("\n")
        assert sorted(line.split()[1] for line in queue if line) == ["PD", "R", "R"], queue  # 2 run, [2-3] wait
        assert any("JobArrayTaskLimit" in line for line in queue), queue
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    sweep_id = next(line.split()[1].rstrip(":") for line in stderr.splitlines() if "trial(s) to run" in line)
    assert f"run the rest with: mlproject sweep --resume {sweep_id}" in stderr.splitlines()[-1]
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    parent = client.search_runs(["0"], f"tags.`mlproject.sweep.id` = '{sweep_id}'")[0]
    children = client.search_runs(["0"], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert parent.info.status == "KILLED"
    assert sorted(c.info.status for c in children) == ["KILLED"] * 4
    rows = {c.info.run_id: _ledger_row(c.info.run_id) for c in children}
    assert all((row["status"], row["reason"]) == ("KILLED", f"slurm job {row['job_id']} ended CANCELLED")
               for row in rows.values()), rows
    assert slurm.command("squeue", "-h").stdout.strip() == ""
    _wait_for(lambda: not any(_processes_of(run_id) for run_id in rows), 30, "the trials' processes to go")


def _slurm_rows() -> list[dict]:
    return [row for row in _rows() if row["backend"] == "slurm"]


def test_a_sweeps_array_tasks_carry_several_trials_each_its_own_run(slurm, make_project, _work_in_tmp):
    """`"trials_per_task": 3`: six trials as two array tasks, each carrying three one after another
    in one runner; every trial is still its own run: its own status and exit code (the command's,
    not the carrier's), its own log, its own tracked run, the job ID of its task."""
    project = make_project(SHELL_PROJECT)
    result = _cli("sweep", str(project), "-P", "alpha=0.1,0.2,0.3", "-P", "code=0,5", "-b", "slurm",
                  "-c", '{"trials_per_task": 3}', "--max-parallel", "2", "--env-manager", "local")
    assert result.returncode == 1, result.stderr  # (the trials with code=5 fail, and the sweep says so)
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    parent = client.search_runs(["0"], "tags.`mlproject.sweep.id` != ''")[0]
    children = client.search_runs(["0"], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted((c.data.params["alpha"], c.data.params["code"], c.info.status) for c in children) == [
        (alpha, code, "FINISHED" if code == "0" else "FAILED") for alpha in ("0.1", "0.2", "0.3") for code in ("0", "5")]
    jobs = [c.data.tags["mlproject.slurm.job_id"] for c in children]
    assert len({job.split("_")[0] for job in jobs}) == 1 and sorted(job.split("_")[1] for job in jobs) == ["0"] * 3 + ["1"] * 3
    for child in children:
        row = _ledger_row(child.info.run_id)
        assert row["exit_code"] == int(child.data.params["code"]), row
        said = re.findall(r"^alpha=\S+", _cli("runs", "logs", child.info.run_id).stdout, re.MULTILINE)
        assert said == [f"alpha={child.data.params['alpha']}"], said  # (its own output only)
    carriers = sorted(Path(_ledger_row(children[0].info.run_id)["log_path"]).parent.glob("task-*.log"))
    assert [path.name for path in carriers] == ["task-0.log", "task-1.log"]
    assert all(path.read_text().count("carrier: run ") == 3 for path in carriers)


def test_a_carried_trial_is_cancelled_alone_and_a_waiting_one_never_starts(slurm, make_project, _work_in_tmp):
    """Three trials carried by one task: the third, waiting its turn, is cancelled (`runs cancel`)
    and ends KILLED at once, never started; the first, running, is cancelled through the API
    from another process and only it stops; the second then runs to FINISHED; the task ends."""
    project = make_project(SHELL_PROJECT)
    proc = _start_cli("sweep", str(project), "-P", "secs=300,3,301", "-b", "slurm", "-c", '{"trials_per_task": 3}',
                      "--max-parallel", "1", "--env-manager", "local")
    try:
        running = _wait_for(lambda: [row for row in _slurm_rows() if row["status"] == "RUNNING"
                                     and _processes_of(row["id"])], 60, "the first trial's command")
        rows = {row["parameters"]["secs"]: row for row in _slurm_rows()}
        first, second, third = rows["300"], rows["3"], rows["301"]
        assert running[0]["id"] == first["id"] and (second["status"], third["status"]) == ("SCHEDULED", "SCHEDULED")
        cancelled = _cli("runs", "cancel", third["id"])
        assert cancelled.returncode == 0, cancelled.stderr
        assert f"run {third['id']}: KILLED (cancelled while waiting in slurm job {third['job_id']})" in cancelled.stderr
        api = subprocess.run([sys.executable, "-c", f"import runner; runner.attach({first['id']!r}).cancel()"],
                             capture_output=True, text=True, timeout=60)
        assert api.returncode == 0, api.stderr
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    ended = {row["parameters"]["secs"]: row for row in _slurm_rows()}
    assert [ended[secs]["status"] for secs in ("300", "3", "301")] == ["KILLED", "FINISHED", "KILLED"], stderr
    logs = {secs: _cli("runs", "logs", row["id"]).stdout for secs, row in ended.items()}
    assert "alpha=" in logs["300"] and "alpha=" in logs["3"] and "=== Running command" not in logs["301"], logs
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    assert [client.get_run(ended[secs]["id"]).info.status for secs in ("300", "3", "301")] == ["KILLED", "FINISHED", "KILLED"]
    _wait_for(lambda: not _processes_of(first["id"]), 30, "the cancelled trial's processes to go")
    _wait_for(lambda: slurm.command("squeue", "-h").stdout.strip() == "", 30, "the carrying task to end")


def test_an_arrays_trials_are_prepared_over_one_ledger_connection(slurm, make_project, _work_in_tmp):
    """80 trials under a limit of 64 open files: each prepared run held its own ledger connection
    (two files each) until the array was queued, so 1,000 trials held 2,000 files and ~140 MB;
    now they share one, and the sweep runs to its end."""
    import resource

    project = make_project(SHELL_PROJECT)
    result = subprocess.run([sys.executable, "-m", "runner", "sweep", str(project), "-P", "alpha=range(0,80)",
                             "-b", "slurm", "-c", '{"trials_per_task": 20}', "--max-parallel", "4", "--env-manager", "local"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": BARE_PATH},
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "80/80 trials finished" in result.stderr
    assert sorted(row["status"] for row in _slurm_rows()) == ["FINISHED"] * 80


def test_ctrl_c_stops_a_sweep_whose_tasks_carry_several_trials(slurm, make_project, _work_in_tmp):
    """Ctrl-C on a sweep of two tasks carrying two trials each: the arrays are cancelled whole, so
    the running trials and those waiting in their tasks all end KILLED, nothing stays queued."""
    project = make_project(SHELL_PROJECT)
    proc = _start_cli("sweep", str(project), "-P", "alpha=0.1,0.2,0.3,0.4", "-P", "secs=300", "-b", "slurm",
                      "-c", '{"trials_per_task": 2}', "--max-parallel", "2", "--env-manager", "local")
    try:
        _wait_for(lambda: len([row for row in _slurm_rows() if row["status"] == "RUNNING"
                               and _processes_of(row["id"])]) == 2, 60, "two trials running")
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    rows = _slurm_rows()
    assert sorted(row["status"] for row in rows) == ["KILLED"] * 4, rows
    assert slurm.command("squeue", "-h").stdout.strip() == ""
    _wait_for(lambda: not any(_processes_of(row["id"]) for row in rows), 30, "the trials' processes to go")


def test_trials_whose_jobs_a_restarted_controller_lost_run_again_when_resumed(slurm, make_project, _work_in_tmp):
    """slurmctld dies before it saved the array just queued, and comes back without it (seed
    5:26 and 8:1: a controller SIGKILLed and restarted 0.4-0.7 s after the submission). The
    trials are recorded FAILED as never started, and a resume runs them, once each (the resume
    kept them as failures and they never ran). Replayed by restarting the controller from the
    state it had saved before the sweep; the jobs are held so that none starts before."""
    project = make_project(SHELL_PROJECT)
    before = slurm.saved_state()
    proc = _start_cli("sweep", str(project), "-P", "alpha=0.1,0.2", "-b", "slurm", "-c", '{"sbatch_args": ["--hold"]}',
                      "--env-manager", "local")
    burned: list[str] = []
    resumed = None
    try:
        _wait_for(lambda: len([r for r in json.loads(_cli("runs", "list", "--json").stdout)
                               if r["backend"] == "slurm" and r["job_id"]]) == 2, 60, "the array queued")
        # (The IDs it hands out again stay held until the lost jobs are ended: cancelled, their
        # ends would read as the lost jobs'.)
        burned = slurm.restart_controller(from_state=before, cancel_burned=False)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 1, stderr
        lost = [r for r in json.loads(_cli("runs", "list", "--json").stdout) if r["backend"] == "slurm"]
        assert [r["status"] for r in lost] == ["FAILED", "FAILED"], lost
        assert all("its runner never started" in r["reason"] for r in lost), lost
        sweep_id = next(line.split()[1].rstrip(":") for line in stderr.splitlines() if "trial(s) to run" in line)
        resumed = _start_cli("sweep", "--resume", sweep_id)
        deadline = time.monotonic() + 180
        while resumed.poll() is None and time.monotonic() < deadline:  # (its jobs are held too)
            queued = slurm.command("squeue", "-h", "-t", "PD", "-o", "%i").stdout.split()
            held = {job.split("_")[0] for job in queued} - set(burned)
            if held:
                slurm.command("scontrol", "release", *held)
            time.sleep(0.5)
        _, resumed_said = resumed.communicate(timeout=30)
    finally:
        for started in (proc, resumed):
            if started is not None and started.poll() is None:
                os.killpg(started.pid, signal.SIGKILL)
        if burned:
            slurm.command("scancel", *burned)
    assert resumed.returncode == 0, resumed_said
    assert "0 trial(s) kept, 0 still running on the cluster, 2 to run" in resumed_said, resumed_said
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    parent = client.search_runs(["0"], f"tags.`mlproject.sweep.id` = '{sweep_id}'")[0]
    children = client.search_runs(["0"], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.info.status for c in children) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
    ran = [r for r in json.loads(_cli("runs", "list", "--json").stdout) if r["status"] == "FINISHED"
           and r["backend"] == "slurm"]
    said = [re.findall(r"^alpha=\S+", _cli("runs", "logs", r["id"]).stdout, re.MULTILINE) for r in ran]
    assert sorted(said) == [["alpha=0.1"], ["alpha=0.2"]], said  # (each trial once)
    assert parent.info.status == "FINISHED"
    slurm.wait_idle(30)


MESSAGE_PROJECT = """
    name: message
    entry_points:
      main:
        parameters:
          n: {type: int, default: 1}
        command: "echo n={n} $(cat message.txt) on $SLURMD_NODENAME"
"""


def test_dirty_run_is_rerun_on_the_cluster_with_its_changes(slurm, make_project, _work_in_tmp):
    project = make_project(MESSAGE_PROJECT, {"message.txt": "committed\n", ".gitignore": "mlflow.db\nmlruns/\n"})
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "first"]):
        subprocess.run(git + argv, cwd=project, check=True, capture_output=True)
    (project / "message.txt").write_text("uncommitted\n")
    original = _cli("run", str(project), "--env-manager", "local", "-P", "n=4")  # here
    assert original.returncode == 0 and "n=4 uncommitted on" in original.stdout, original.stderr
    run_id = original.stderr.split("in run with ID '")[1].split("'")[0]
    subprocess.run(git + ["commit", "-qam", "moved on"], cwd=project, check=True, capture_output=True)
    (project / "message.txt").write_text("later\n")

    again = _cli("rerun", run_id, "-b", "slurm")  # the same code and parameters, on a node
    assert again.returncode == 0, again.stderr + slurm.logs()
    assert re.search(r"n=4 uncommitted on n[12]", again.stdout), again.stdout
    rerun_id, _ = _submitted(again.stderr)
    tags = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(rerun_id).data.tags
    assert tags["mlproject.rerunOf"] == run_id and tags["mlproject.rerunChanged"] == "backend"
    assert tags["mlflow.project.backend"] == "slurm" and tags["mlproject.source.git.dirty"] == "true"


PLUGIN_RUN = """
import sys
import mlflow
r = mlflow.projects.run(sys.argv[1], backend="mlproject", backend_config={"backend": "slurm", "time": "5"},
                        parameters={"alpha": 0.7}, env_manager="local")
print("ok", r.run_id, r.get_status(), flush=True)
"""


def test_mlflow_projects_run_with_the_plugin_runs_on_slurm(slurm, make_project, _work_in_tmp):
    """MLflow's own API, with mlproject-runner as its backend plugin (runner/mlflow_plugin.py)."""
    project = make_project(SHELL_PROJECT)
    done = subprocess.run([sys.executable, "-c", PLUGIN_RUN, str(project)], capture_output=True, text=True,
                          env={**os.environ, "PATH": BARE_PATH}, timeout=300)
    assert done.returncode == 0, done.stderr + slurm.logs()
    _, run_id, status = next(line for line in done.stdout.splitlines() if line.startswith("ok ")).split()
    assert status == "FINISHED"
    row = _ledger_row(run_id)
    assert (row["status"], row["exit_code"], row["backend"]) == ("FINISHED", 0, "slurm") and row["job_id"]
    run = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlproject.slurm.job_id"] == row["job_id"]
    assert "alpha=0.7 node=n" in _cli("runs", "logs", run_id).stdout


def test_mlflow_run_with_the_plugin_queues_on_slurm(slurm, make_project, _work_in_tmp):
    """The `mlflow run` command with `-b mlproject -c '{"backend": "slurm"}'`: MLflow runs a plugin
    backend asynchronously, so it returns once the job is queued; the job runs to its end."""
    project = make_project(SHELL_PROJECT)
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    done = subprocess.run([mlflow, "run", str(project), "-b", "mlproject", "-c", '{"backend": "slurm", "time": "5"}',
                           "-P", "alpha=0.3", "--env-manager", "local"], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{BARE_PATH}"}, timeout=300)
    assert done.returncode == 0, done.stderr + slurm.logs()
    [run] = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").search_runs(["0"])
    run_id = run.info.run_id
    _wait_for(lambda: _ledger_row(run_id)["status"] not in ("SCHEDULED", "RUNNING"), 120, "the job's end")
    row = _ledger_row(run_id)
    assert (row["status"], row["backend"]) == ("FINISHED", "slurm") and row["job_id"]
    assert "alpha=0.3 node=n" in _cli("runs", "logs", run_id).stdout
    assert MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(run_id).info.status == "FINISHED"


SIX_PROJECT = """
    name: six-on-private-nodes
    python_env: python_env.yaml
    entry_points:
      main:
        parameters:
          code: {type: int, default: 0}
        command: "python -c 'import six, sys; print(\\"six\\", six.__version__, sys.prefix)'; echo node=$SLURMD_NODENAME; exit {code}"
"""


def test_nodes_that_share_only_the_staging_directory_unpack_the_environment_built_here(
        slurm, make_project, mlproject_home, _work_in_tmp, tmp_path):
    """`"shared_home": false`: each node has an MLPROJECT_HOME of its own (an empty file system
    over that path, in the node's own mount namespace); only staging_dir is shared. The
    environment is built once here and packed; each node unpacks it once into its own store;
    the node's runner keeps its own ledger and ends the tracked run; this host follows the job
    through Slurm, copies its output back and records its end. A sweep's array goes the same way."""
    project = make_project(SIX_PROJECT, {"python_env.yaml": 'python: "3.11"\ndependencies:\n  - six==1.16.0\n'})
    staging = tmp_path / "shared-staging"
    config = {"shared_home": False, "staging_dir": str(staging)}
    refused = _cli("run", str(project), "-b", "slurm", "-c", '{"shared_home": false}', "--env-manager", "uv")
    assert_clean_error(refused, 2, "staging_dir")
    for node in ("n1", "n2"):
        slurm.lose_node(node)
        slurm.return_node(node, hidden=mlproject_home)
    try:
        runs = []
        for node in ("n1", "n2", "n1"):
            chosen = json.dumps({**config, "sbatch_args": [f"--nodelist={node}"]})
            result = _cli("run", str(project), "-b", "slurm", "-c", chosen, "--env-manager", "uv", timeout=300)
            assert result.returncode == 0, result.stdout + result.stderr
            runs.append((node, _submitted(result.stderr)[0], result))
        failing = _cli("run", str(project), "-b", "slurm", "-c", json.dumps(config), "--env-manager", "uv",
                       "-P", "code=3", timeout=300)
        sweep = _cli("sweep", str(project), "-P", "code=0,4", "-b", "slurm", "-c", json.dumps(config),
                     "--env-manager", "uv", timeout=300)
    finally:
        for node in ("n1", "n2"):
            slurm.lose_node(node)
            slurm.return_node(node)
    builds = (mlproject_home / "envs" / ".builds.log").read_text().splitlines()
    [(event, name)] = [line.split()[1:3] for line in builds]
    assert event == "built"  # here, once
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    for index, (node, run_id, result) in enumerate(runs):
        # The node ran it in its own store's copy, at the same path, unpacked there the first time.
        assert f"six 1.16.0 {mlproject_home / 'envs' / name}\n" in result.stdout and f"node={node}" in result.stdout
        assert ("unpacking " + name in result.stdout) == (index < 2), result.stdout
        assert "building environment" not in result.stdout and "resolving" not in result.stdout
        row = _ledger_row(run_id)
        assert (row["status"], row["exit_code"]) == ("FINISHED", 0), row
        assert client.get_run(run_id).info.status == "FINISHED"
        assert "six 1.16.0" in _cli("runs", "logs", run_id).stdout  # copied back into the run's log here
        assert not (mlproject_home / "runs" / run_id / "timing.json").exists()  # (the node's runner kept it)
    assert failing.returncode == 3, failing.stderr
    failed = _submitted(failing.stderr)[0]
    row = _ledger_row(failed)
    assert (row["status"], row["exit_code"]) == ("FAILED", 3), row
    assert client.get_run(failed).info.status == "FAILED"
    assert sweep.returncode == 1 and "queued as slurm job array" in sweep.stderr, sweep.stderr
    parent = client.search_runs(["0"], "tags.`mlproject.sweep.id` != ''")[0]
    children = client.search_runs(["0"], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted((c.data.params["code"], c.info.status) for c in children) == [("0", "FINISHED"), ("4", "FAILED")]
    assert "six 1.16.0" in _cli("runs", "logs", next(c.info.run_id for c in children if c.data.params["code"] == "0")).stdout
    # Nothing of the jobs is in this host's store but what it built; the staging directory has
    # the jobs' files, the snapshot and the packed environment, which `cache gc` removes in time.
    assert sorted(p.name for p in staging.iterdir()) == sorted(["environments", "jobs", *(
        p.name for p in staging.iterdir() if (p / ".mlproject-staged").exists())])
    collected = _cli("cache", "gc", "--older-than", "0", "--staging-dir", str(staging))
    assert "1 packed environment(s) used recently" in collected.stdout, collected.stdout
