"""Resource faults: a store on a small tmpfs that fills up during an environment build."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import assert_clean_error
from trackingproxy import POOL_EXHAUSTED, FaultyProxy


@pytest.fixture
def small_store(tmp_path, monkeypatch):
    """MLPROJECT_HOME on a 40 MB tmpfs (the uv download cache lives in it too)."""
    mount_point = tmp_path / "small-store"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        raise AssertionError(f"cannot mount a tmpfs for the disk-full test (needs root): {mounted.stderr.strip()}")
    monkeypatch.setenv("MLPROJECT_HOME", str(mount_point))
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_during_a_build_fails_clearly_and_leaves_the_store_usable(small_store, make_project, cli, _work_in_tmp):
    big = make_project("name: big\npython_env: python_env.yaml\nentry_points:\n  main:\n    command: 'true'\n",
                       {"python_env.yaml": "python: '3.11'\ndependencies: [numpy==2.4.6, pandas==3.1.1, scipy==1.17.1]\n"})
    result = cli("run", str(big), timeout=600)
    assert_clean_error(result, 2, "environment build failed")
    assert "No space left on device" in result.stderr or "no space" in result.stderr.lower(), result.stderr[-2000:]
    envs = small_store / "envs"
    assert not list(envs.glob(".tmp-*")), list(envs.glob(".tmp-*"))
    assert not [p for p in envs.glob("uv-*")], "no half-made environment may be published"
    runs = cli("runs", "list", "--json")
    assert runs.returncode == 0 and '"FAILED"' in runs.stdout  # the run was ended, not left RUNNING
    # The store is still usable: a small environment builds and runs.
    small = make_project("name: small\npython_env: python_env.yaml\nentry_points:\n  main:\n"
                         "    command: \"python -c 'import six; print(six.__version__)'\"\n",
                         {"python_env.yaml": "python: '3.11'\ndependencies: [six==1.16.0]\n"})
    cli("env", "gc", "--older-than", "0")  # frees the download cache the failed build filled
    ok = cli("run", str(small), timeout=600)
    assert ok.returncode == 0, ok.stderr
    assert "1.16.0" in ok.stdout


def test_disk_full_while_the_command_writes_its_log(small_store, make_project, cli, _work_in_tmp):
    """The log filled the disk: the tee and watcher threads died with OSError tracebacks
    (campaign seed 77:16, git, disk full). The output still reaches the terminal, the log is
    said to be incomplete, and the run's outcome is its command's."""
    root = make_project("name: loud\nentry_points:\n  main:\n"
                        "    command: \"yes 0123456789abcdef | head -c 60000000; echo done\"\n")
    result = cli("run", str(root), "--env-manager", "local", timeout=300)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "warning: the run's log is incomplete from here on: No space left on device" in result.stderr
    assert len(result.stdout) >= 60000000 and result.stdout.rstrip().endswith("done")
    for log in small_store.glob("runs/*/output.log"):  # the space the run's end needs
        log.unlink()
    listed = cli("runs", "list", "--json")
    assert listed.returncode == 0 and '"RUNNING"' not in listed.stdout, listed.stdout


def test_a_run_whose_end_cannot_be_recorded_says_so_and_exits_1(small_store, make_project, cli, _work_in_tmp):
    """The command filled MLPROJECT_HOME's disk and exited 0: its end could not be written to
    the ledger, and the runner exited 0, the run reconciled FAILED later (`1:1`, git, disk full at
    0.23 s). Now: exit 1 and an `error:` that says the end was not recorded, with its `hint:`."""
    root = make_project("name: filler\nentry_points:\n  main:\n"
                        "    command: \"head -c 60000000 /dev/zero > $MLPROJECT_HOME/filler; echo filled\"\n")
    result = cli("run", str(root), "--env-manager", "local", timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "but its end could not be recorded" in result.stderr and "hint: free space" in result.stderr, result.stderr
    (small_store / "filler").unlink()
    listed = cli("runs", "list", "--json")  # (space again: a later command records what happened)
    assert listed.returncode == 0 and '"RUNNING"' not in listed.stdout, listed.stdout


def test_a_sweep_that_meets_a_full_disk_at_its_end_warns_of_its_table_and_ends_its_parent(small_store, make_project,
                                                                                         cli, _work_in_tmp, tmp_path):
    """MLPROJECT_HOME's disk fills once the trials are over, as the sweep writes its table: the
    table and plot are a warning, and the parent run is ended all the same (`1:16`, sweep, disk
    full at 0.91 s: a traceback, and the parent never ended)."""
    from mlflow.tracking import MlflowClient

    root = make_project("name: two\nentry_points:\n  main:\n    parameters:\n      n: {type: int, default: 0}\n"
                        "    command: \"echo trial {n}\"\n")
    go = tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-m", "runner", "sweep", str(root), "-P", "n=1,2", "--env-manager", "local"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MLPROJECT_FAULT_AT": "sweep.closing:hold", "MLPROJECT_FAULT_GO": str(go)})
    said = []
    for line in proc.stderr:  # type: ignore[union-attr]
        said.append(line)
        if "fault: held at sweep.closing" in line:
            break
    assert said and "held at sweep.closing" in said[-1], "".join(said)
    with open(small_store / "filler", "wb") as filler:  # (the disk full from here on)
        try:
            while True:
                filler.write(b"\0" * 1_000_000)
                filler.flush()
        except OSError:
            pass
    go.touch()
    _, rest = proc.communicate(timeout=120)
    stderr = "".join(said) + rest
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "warning: the sweep's table and plot were not written" in stderr, stderr[-3000:]
    # (The ledger refused the parent's end too: said, as for a run whose end it refuses.)
    assert proc.returncode == 1 and "\nhint: free space" in stderr, stderr[-3000:]
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")

    def tracked() -> list:
        return client.search_runs([client.get_experiment_by_name("Default").experiment_id])

    parents = [run for run in tracked() if "mlflow.parentRunId" not in run.data.tags]
    assert len(tracked()) == 3 and len(parents) == 1, [(run.info.run_id, run.data.tags) for run in tracked()]
    assert parents[0].info.status == "FINISHED", (parents[0].info, stderr[-2000:])
    (small_store / "filler").unlink()
    listed = cli("runs", "list", "--json")  # (space again: a later command records what happened)
    assert listed.returncode == 0 and '"RUNNING"' not in listed.stdout, listed.stdout
    assert "RUNNING" not in [run.info.status for run in tracked()]


# -- a tracking server that fails or stalls: a fault-injecting proxy in front of a real one --
def _project(make_project):
    """A project with one parameter, so that a run also logs parameters (`runs/log-batch`)."""
    return make_project("name: t\nentry_points:\n  main:\n    parameters:\n      n: {type: int, default: 1}\n"
                        "    command: 'echo ran {n}'\n")


def test_tracking_server_refusing_the_run_starts_nothing(make_project, cli, mlflow_server, mlproject_home):
    proxy = FaultyProxy(mlflow_server, fail={"runs/create": 1000})
    try:
        result = cli("run", str(_project(make_project)), "--env-manager", "local",
                     env={"MLFLOW_TRACKING_URI": proxy.url, "MLPROJECT_TRACKING_RETRY_SECONDS": "1"})
    finally:
        proxy.close()
    assert_clean_error(result, 2, "refused /api/2.0/mlflow/runs/create (HTTP 503)")
    assert result.stderr.splitlines()[0].endswith("(HTTP 503)")  # no dangling ": " when the server says nothing
    assert proxy.seen.count(("runs/create", 503)) >= 2  # asked again before giving up
    assert "ran" not in result.stdout
    assert not (mlproject_home / "ledger.db").exists() or '"id"' not in cli("runs", "list", "--json").stdout
    assert not list((mlproject_home / "pending").glob("*.json"))  # refused: nothing to look for later


def test_tracking_server_refusing_the_parameters_fails_the_run_it_made(make_project, cli, mlflow_server):
    """Refused after the run was created: nothing starts, and the run is ended FAILED in
    MLflow and in the ledger, not left RUNNING."""
    import json

    from mlflow.tracking import MlflowClient

    proxy = FaultyProxy(mlflow_server, fail={"runs/log-batch": 1000})
    try:
        result = cli("run", str(_project(make_project)), "--env-manager", "local", "-P", "n=3",
                     env={"MLFLOW_TRACKING_URI": proxy.url, "MLPROJECT_TRACKING_RETRY_SECONDS": "1"})
    finally:
        proxy.close()
    assert_clean_error(result, 2, "refused /api/2.0/mlflow/runs/log-batch (HTTP 503)")
    assert "ran" not in result.stdout
    [row] = json.loads(cli("runs", "list", "--json").stdout)
    assert row["status"] == "FAILED" and "runs/log-batch (HTTP 503)" in row["reason"], row
    run = MlflowClient(mlflow_server).get_run(row["tracking_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["mlproject.attempt"], run.info


def test_tracking_server_failing_under_load_is_asked_again_without_duplicates(make_project, cli, mlflow_server):
    """503s to the experiment lookup and the creation are retried; a creation the server made but
    whose answer was lost is found by its attempt tag, not made twice."""
    from mlflow.tracking import MlflowClient

    experiment = f"load-{os.urandom(4).hex()}"
    proxy = FaultyProxy(mlflow_server, fail={"experiments/get-by-name": 2}, lose={"runs/create": 1})
    try:
        result = cli("run", str(_project(make_project)), "--env-manager", "local", "--experiment-name", experiment,
                     env={"MLFLOW_TRACKING_URI": proxy.url})
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr
    assert ("runs/create", -200) in proxy.seen and ("runs/search", 200) in proxy.seen
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", [(r.info.run_id, r.info.status) for r in runs]
    run_id = re.search(r"run with ID '([0-9a-f]{32})'", result.stderr).group(1)
    assert runs[0].info.run_id == run_id


def test_tracking_server_out_of_connections_is_asked_again(make_project, cli, mlflow_server):
    """An overloaded server's 400 "QueuePool limit reached" is asked again, unlike other 400s."""
    from mlflow.tracking import MlflowClient

    proxy = FaultyProxy(mlflow_server, fail={"runs/create": 1, "runs/log-batch": 2, "runs/update": 1},
                        failure=POOL_EXHAUSTED)
    try:
        result = cli("run", str(_project(make_project)), "--env-manager", "local", "-P", "n=3", env={"MLFLOW_TRACKING_URI": proxy.url})
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr
    for endpoint, refusals in (("runs/create", 1), ("runs/log-batch", 2), ("runs/update", 1)):
        assert proxy.seen.count((endpoint, 400)) == refusals and (endpoint, 200) in proxy.seen, proxy.seen
    run_id = re.search(r"run with ID '([0-9a-f]{32})'", result.stderr).group(1)
    assert MlflowClient(mlflow_server).get_run(run_id).info.status == "FINISHED"


def test_tracking_server_failing_at_the_end_is_retried(make_project, cli, mlflow_server):
    from mlflow.tracking import MlflowClient

    proxy = FaultyProxy(mlflow_server, fail={"runs/update": 2}, delay={"runs/create": 1.0})  # slow, then failing
    try:
        result = cli("run", str(_project(make_project)), "--env-manager", "local", env={"MLFLOW_TRACKING_URI": proxy.url})
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr
    assert ("runs/update", 503) in proxy.seen and proxy.seen.count(("runs/update", 200)) >= 1
    run_id = re.search(r"run with ID '([0-9a-f]{32})'", result.stderr).group(1)
    assert MlflowClient(mlflow_server).get_run(run_id).info.status == "FINISHED"


def test_tracking_end_that_never_got_through_is_completed_by_a_later_invocation(make_project, cli, mlflow_server):
    """The server refuses the end for longer than the retry budget: the run's outcome stays in the
    ledger, and the next invocation of any command ends the MLflow run with it."""
    import json

    from mlflow.tracking import MlflowClient

    proxy = FaultyProxy(mlflow_server, fail={"runs/update": 1000})
    try:
        env = {"MLFLOW_TRACKING_URI": proxy.url, "MLPROJECT_TRACKING_RETRY_SECONDS": "1"}
        result = cli("run", str(_project(make_project)), "--env-manager", "local", env=env)
        assert result.returncode == 0, result.stderr  # the command succeeded; tracking is warned about
        assert "warning: tracking:" in result.stderr
        run_id = re.search(r"run with ID '([0-9a-f]{32})'", result.stderr).group(1)
        client = MlflowClient(mlflow_server)
        assert client.get_run(run_id).info.status == "RUNNING"
        [record] = json.loads(cli("runs", "list", "--json", env=env).stdout)  # still refused: kept for later
        assert record["status"] == "FINISHED" and record["tracking_ended"] == 0
        proxy.fail.clear()  # the server accepts again
        assert cli("runs", "list", env=env).returncode == 0
        assert client.get_run(run_id).info.status == "FINISHED"
        [record] = json.loads(cli("runs", "list", "--json", env=env).stdout)
        assert record["tracking_ended"] == 1
    finally:
        proxy.close()


def test_artifacts_of_a_run_that_ended_while_the_server_was_down_are_delivered_later(make_project, cli, mlflow_server):
    """The server stops while the command runs: the run's end and its artifacts (output.log and
    every other a run leaves) reach it from the next invocation once it is back, not only its status."""
    from mlflow.tracking import MlflowClient

    root = make_project("entry_points:\n  main:\n    command: \"echo hello; sleep 2\"\n")
    proxy = FaultyProxy(mlflow_server)
    try:
        env = {"MLFLOW_TRACKING_URI": proxy.url, "MLPROJECT_TRACKING_RETRY_SECONDS": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local"],
                                env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "hello"
        proxy.stop()
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "warning: tracking:" in stderr, stderr
        run_id = re.search(r"run with ID '([0-9a-f]{32})'", stderr).group(1)
        client = MlflowClient(mlflow_server)
        assert client.get_run(run_id).info.status == "RUNNING"
        assert [a.path for a in client.list_artifacts(run_id)] == []
        proxy.restart()
        assert cli("runs", "list", env=env).returncode == 0  # any later invocation delivers
        assert client.get_run(run_id).info.status == "FINISHED"
        local = client.download_artifacts(run_id, "output.log")
        assert open(local).read() == "hello\n"
        # What a run that ended with the server up has: the same artifacts, no fewer.
        control = subprocess.run([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local"],
                                 env={**os.environ, **env}, capture_output=True, text=True)
        control_id = re.search(r"run with ID '([0-9a-f]{32})'", control.stderr).group(1)
        assert ({a.path for a in client.list_artifacts(run_id)} == {a.path for a in client.list_artifacts(control_id)})
    finally:
        proxy.close()
