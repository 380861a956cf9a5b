"""MLflow tracking against the real thing: a live `mlflow server` on loopback and
sqlite stores, asserted through MlflowClient."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import BROKEN_PACKAGE, assert_clean_error, free_port

LOGGER = """
name: logger
entry_points:
  main:
    parameters:
      alpha: {type: float, default: 0.5}
      label: {type: string, default: "a b"}
      code: {type: int, default: 0}
    command: "python log.py {alpha} {label} {code}"
"""
LOG_PY = """
import os, sys, mlflow
given = os.environ["MLFLOW_RUN_ID"]  # mlflow.start_run() consumes the variable
with mlflow.start_run() as run:
    assert run.info.run_id == given, "attached to the runner's run"
    mlflow.log_metric("rmse", float(sys.argv[1]) * 2)
print("logged", given, os.environ["MLFLOW_EXPERIMENT_ID"])
sys.exit(int(sys.argv[3]))
"""


def _run_info(client: MlflowClient, run_id: str):
    return client.get_run(run_id)


def _run_id(stderr: str) -> str:
    import re

    return re.search(r"run with ID '([0-9a-f]{32})'", stderr).group(1)


def _check_project_run(client: MlflowClient, run_id: str, status: str, root: Path) -> None:
    run = client.get_run(run_id)
    assert run.info.status == status
    tags = run.data.tags
    assert tags["mlflow.source.type"] == "PROJECT"
    assert tags["mlflow.project.entryPoint"] == "main"
    assert tags["mlflow.project.backend"] == "local"
    assert tags["mlflow.source.name"] == str(root)
    assert tags["mlflow.user"]
    assert tags["mlflow.runName"] == run.info.run_name
    assert tags["mlproject.version"]
    assert run.data.params == {"alpha": "0.5", "label": "a b", "code": run.data.params["code"]}  # values, not quoted


def test_default_sqlite_store_in_working_directory(make_project, cli, _work_in_tmp):
    root = make_project(LOGGER, {"log.py": LOG_PY})
    (_work_in_tmp / "mlflow.db").unlink()
    for _ in range(2):  # the first has mlflow.db made (by the library, in a child), the second finds it
        result = cli("run", str(root), "--env-manager", "local", cwd=_work_in_tmp)
        assert result.returncode == 0, result.stderr
        run_id = _run_id(result.stderr)
        client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
        _check_project_run(client, run_id, "FINISHED", root)
        run = client.get_run(run_id)
        assert run.data.metrics == {"rmse": 1.0}
        artifacts = [a.path for a in client.list_artifacts(run_id)]
        assert "output.log" in artifacts
        assert result.stdout.startswith(f"logged {run_id} 0")


def test_a_store_that_does_not_exist_is_made_as_mlflow_makes_it_without_mlflow_in_the_runner(make_project, _work_in_tmp,
                                                                                              tmp_path):
    """A first run to a new sqlite store: the mlflow library makes it in a child process (its
    import, ~190 MB, stays out of the runner: a sweep's driver), with the default experiment
    MLflow itself makes, and the run is written to it directly."""
    (_work_in_tmp / "mlflow.db").unlink()
    child = make_project("entry_points:\n  main:\n    command: 'true'\n")
    script = ("import sys, runner\n"
              f"submitted = runner.run({str(child)!r}, env_manager='local')\n"
              "print(submitted.run_id, 'mlflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=_work_in_tmp, capture_output=True, text=True,
                         env={**os.environ, "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"})
    assert out.returncode == 0, out.stderr
    run_id, imported = out.stdout.splitlines()[-1].split()
    assert imported == "False", out.stderr
    assert MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(run_id).info.status == "FINISHED"
    (tmp_path / "by-mlflow").mkdir()
    subprocess.run([sys.executable, "-c", "from mlflow.tracking import MlflowClient; "
                    "MlflowClient(tracking_uri='sqlite:///mlflow.db').search_experiments()"],
                   cwd=tmp_path / "by-mlflow", check=True, capture_output=True)

    def default_experiment(directory: Path) -> tuple:
        with sqlite3.connect(directory / "mlflow.db") as db:
            row = db.execute("SELECT experiment_id, name, artifact_location, lifecycle_stage FROM experiments "
                             "WHERE experiment_id = 0").fetchone()
        return row[:2] + (row[2].replace(str(directory), "DIR"),) + row[3:]

    assert default_experiment(_work_in_tmp) == default_experiment(tmp_path / "by-mlflow")
    assert [p.name for p in _work_in_tmp.iterdir() if ".making-" in p.name] == []


def test_concurrent_first_runs_create_the_store_once(make_project, _work_in_tmp):
    """MLflow's own migrations break when several processes create a store at once."""
    (_work_in_tmp / "mlflow.db").unlink()
    root = make_project("entry_points:\n  main:\n    command: 'true'\n")
    procs = [subprocess.Popen([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local"], cwd=_work_in_tmp,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(6)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 6, [p.stderr.read()[-300:] for p in procs]
    runs = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").search_runs(["0"])
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}


def test_relative_tracking_uri_is_made_absolute_for_the_project(make_project, cli, _work_in_tmp):
    root = make_project(LOGGER, {"log.py": LOG_PY})
    result = cli("run", str(root), "--env-manager", "local", cwd=_work_in_tmp, env={"MLFLOW_TRACKING_URI": "sqlite:///rel.db"})
    assert result.returncode == 0, result.stderr
    assert (_work_in_tmp / "rel.db").exists() and not (root / "rel.db").exists()


def test_failed_command_ends_failed(make_project, cli, _work_in_tmp):
    root = make_project(LOGGER, {"log.py": LOG_PY})
    result = cli("run", str(root), "--env-manager", "local", "-P", "code=3", cwd=_work_in_tmp)
    assert result.returncode == 3
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    _check_project_run(client, _run_id(result.stderr), "FAILED", root)


def test_a_requirement_that_does_not_exist_is_refused_before_the_run(make_project, cli, _work_in_tmp, mlproject_home):
    """It created a FAILED run (the conda equivalent was refused before the run): the requirements
    of an environment that must be built are resolved before the run is created."""
    root = make_project(LOGGER, {"log.py": LOG_PY, "python_env.yaml": "dependencies: [no-such-package-mlproj-xyz==1]\n"})
    result = cli("run", str(root), cwd=_work_in_tmp)
    assert_clean_error(result, contains="resolving dependencies")
    assert "no-such-package-mlproj-xyz" in result.stderr  # the installer's own words, above the error
    assert json.loads(cli("runs", "list", "--json").stdout) == []
    assert MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").search_runs(["0"]) == []


def test_env_build_failure_ends_failed(make_project, cli, _work_in_tmp, mlproject_home):
    root = make_project(LOGGER, {"log.py": LOG_PY, "python_env.yaml": "dependencies: [./broken]\n", **BROKEN_PACKAGE})
    result = cli("run", str(root), cwd=_work_in_tmp)
    assert_clean_error(result, contains="environment build failed")
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    runs = client.search_runs(["0"])
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    ledger = json.loads(cli("runs", "list", "--json").stdout)
    assert ledger[0]["status"] == "FAILED" and ledger[0]["reason"].startswith("preparation: environment build failed")


def test_ctrl_c_ends_killed(make_project, _work_in_tmp):
    root = make_project("entry_points:\n  main:\n    command: 'echo started; sleep 300'\n")
    proc = subprocess.Popen([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local"],
                            cwd=_work_in_tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert proc.stdout.readline() == b"started\n"
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    run_id = _run_id(proc.stderr.read().decode())
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    assert client.get_run(run_id).info.status == "KILLED"


def test_sigkilled_runner_ends_failed_on_next_invocation(make_project, cli, _work_in_tmp):
    root = make_project("entry_points:\n  main:\n    command: 'echo started; sleep 300'\n")
    proc = subprocess.Popen([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local"],
                            cwd=_work_in_tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"started\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    run = client.search_runs(["0"])[0]
    assert run.info.status == "RUNNING"
    assert cli("runs", "list", cwd=_work_in_tmp).returncode == 0  # any next invocation reconciles
    assert client.get_run(run.info.run_id).info.status == "FAILED"


@pytest.mark.parametrize("store", ["sqlite", "rest", "library"])
def test_experiment_name_created_and_run_id_continued(store, make_project, cli, _work_in_tmp, request):
    """Through each of the three trackers: direct sqlite writes, REST, the mlflow library (a file store)."""
    root = make_project(LOGGER, {"log.py": LOG_PY})
    env, uri = {}, f"sqlite:///{_work_in_tmp / 'mlflow.db'}"
    if store == "library":
        uri = (_work_in_tmp / "filestore").as_uri()
        env = {"MLFLOW_TRACKING_URI": uri}
        request.getfixturevalue("monkeypatch").setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.x's opt-in
    if store == "rest":
        uri = request.getfixturevalue("mlflow_server")
        env = {"MLFLOW_TRACKING_URI": uri}
    experiment_name = f"team-exp-{os.urandom(4).hex()}"
    first = cli("run", str(root), "--env-manager", "local", "--experiment-name", experiment_name, "--run-name", "mine",
                "-P", "alpha=0.25", cwd=_work_in_tmp, env=env)
    assert first.returncode == 0, first.stderr
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    run_id = _run_id(first.stderr)
    run = client.get_run(run_id)
    assert run.info.experiment_id == experiment.experiment_id and run.info.run_name == "mine"
    again = cli("run", str(root), "--env-manager", "local", "--run-id", run_id, "-P", "alpha=0.25", cwd=_work_in_tmp, env=env)
    assert again.returncode == 0, again.stderr
    assert _run_id(again.stderr) == run_id
    continued = client.get_run(run_id)
    assert continued.info.status == "FINISHED" and continued.data.params["alpha"] == "0.25"
    # The continuation's own attempt tag replaced the first one's (its tags are logged on the run).
    assert continued.data.tags["mlproject.attempt"] != run.data.tags["mlproject.attempt"]
    # MLflow keeps a parameter's first value: a different one is refused before the run is touched.
    changed = cli("run", str(root), "--env-manager", "local", "--run-id", run_id, "-P", "alpha=0.75", cwd=_work_in_tmp, env=env)
    assert_clean_error(changed, 2, f"run {run_id} already has parameter alpha='0.25', not '0.75'")
    assert "logged" not in changed.stdout
    assert client.get_run(run_id).info.status == "FINISHED"


def test_parent_run_for_a_step_started_inside_a_run(make_project, cli, _work_in_tmp):
    child = make_project("entry_points:\n  main:\n    command: 'echo child'\n", name="child")
    parent = make_project(
        "entry_points:\n  main:\n    command: \"python -c 'import runner; runner.run(\\\"" + str(child) + "\\\", env_manager=\\\"local\\\")'\"\n",
        name="parent",
    )
    result = cli("run", str(parent), "--env-manager", "local", cwd=_work_in_tmp)
    assert result.returncode == 0, result.stderr
    parent_id = _run_id(result.stderr)
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    runs = {r.info.run_id: r for r in client.search_runs(["0"])}
    children = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert len(children) == 1 and children[0].info.status == "FINISHED"


def test_a_run_started_inside_an_active_mlflow_run_is_its_child(make_project, _work_in_tmp):
    """`with mlflow.start_run(): runner.run(...)` in one process, as with mlflow.projects.run; and a
    caller that never imported mlflow does not get it imported."""
    child = make_project("entry_points:\n  main:\n    command: 'echo child'\n", name="child")
    store = f"sqlite:///{_work_in_tmp / 'mlflow.db'}"
    script = (
        "import sys, mlflow, runner\n"
        f"mlflow.set_tracking_uri({store!r})\n"
        "with mlflow.start_run() as parent:\n"
        f"    submitted = runner.run({str(child)!r}, env_manager='local')\n"
        "print(parent.info.run_id, submitted.run_id)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI")}
    out = subprocess.run([sys.executable, "-c", script], cwd=_work_in_tmp, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    parent_id, child_id = out.stdout.splitlines()[-1].split()  # (after the child's own "child")
    assert MlflowClient(store).get_run(child_id).data.tags["mlflow.parentRunId"] == parent_id
    plain = ("import sys, runner\n"
             f"runner.run({str(child)!r}, env_manager='local')\n"
             "print('mlflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", plain], cwd=_work_in_tmp, env={**env, "MLFLOW_TRACKING_URI": store},
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "False", out.stderr


def test_direct_sqlite_writes_match_the_library(tmp_path):
    """The fast path writes exactly what MLflow's own store writes, for the verified schema."""
    from runner.tracking import StartRequest
    from runner.tracking.mlflow_lib import LibraryTracker
    from runner.tracking.sqlite_direct import VERIFIED_SCHEMAS, SqliteTracker, verified_schema

    db = tmp_path / "store.db"
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    client.search_experiments()  # creates the schema at MLflow's current version
    assert verified_schema(db), f"MLflow's schema is not one of {VERIFIED_SCHEMAS}"
    tags = {"mlflow.user": "u", "mlflow.source.name": "/p", "mlflow.source.type": "PROJECT", "mlflow.project.entryPoint": "main"}
    params = {"alpha": "0.5", "label": "a b"}
    for name in (None, "new-exp"):
        request = StartRequest(name, None, "same-name", tags, params)
        ours = SqliteTracker(uri, db).start(request)
        SqliteTracker(uri, db).record_start(request, ours.run_id)
        theirs = LibraryTracker(uri).start(request)
        LibraryTracker(uri).record_start(request, theirs.run_id)
        a, b = client.get_run(ours.run_id), client.get_run(theirs.run_id)
        assert a.info.experiment_id == b.info.experiment_id
        for field in ("status", "lifecycle_stage", "user_id", "run_name", "end_time"):
            assert getattr(a.info, field) == getattr(b.info, field), field
        assert a.info.artifact_uri.replace(ours.run_id, "ID") == b.info.artifact_uri.replace(theirs.run_id, "ID")
        assert a.data.tags == b.data.tags and a.data.params == b.data.params
        SqliteTracker(uri, db).end(ours.run_id, "FINISHED")
        LibraryTracker(uri).end(theirs.run_id, "FINISHED")
        a, b = client.get_run(ours.run_id), client.get_run(theirs.run_id)
        assert a.info.status == b.info.status == "FINISHED" and a.info.end_time and b.info.end_time
    raw = {
        row[0]: row[1:]
        for row in __import__("sqlite3").connect(db).execute(
            "SELECT run_uuid, source_type, source_name, entry_point_name, source_version, deleted_time FROM runs"
        )
    }
    assert len(set(raw.values())) == 1  # every column we do not read through the client is the same too


# -- a real tracking server ------------------------------------------------------------

def test_rest_server_run(make_project, cli, mlflow_server, _work_in_tmp):
    root = make_project(LOGGER, {"log.py": LOG_PY})
    result = cli("run", str(root), "--env-manager", "local", "--experiment-name", "rest-exp",
                 cwd=_work_in_tmp, env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert result.returncode == 0, result.stderr
    client = MlflowClient(mlflow_server)
    run_id = _run_id(result.stderr)
    _check_project_run(client, run_id, "FINISHED", root)
    assert client.get_run(run_id).data.metrics == {"rmse": 1.0}
    assert client.get_experiment_by_name("rest-exp").experiment_id == client.get_run(run_id).info.experiment_id
    artifacts = [a.path for a in client.list_artifacts(run_id)]
    assert "output.log" in artifacts
    assert MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").search_runs(["0"]) == []  # nothing went to the local store


def test_rest_run_with_environment_logs_package_list(make_project, cli, mlflow_server, _work_in_tmp):
    root = make_project("entry_points:\n  main:\n    command: \"python -c 'import six'\"\n", {"python_env.yaml": "dependencies: [six==1.16.0]\n"})
    result = cli("run", str(root), cwd=_work_in_tmp, env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert result.returncode == 0, result.stderr
    client = MlflowClient(mlflow_server)
    run_id = _run_id(result.stderr)
    run = client.get_run(run_id)
    assert run.data.tags["mlflow.project.env"] == "uv" and len(run.data.tags["mlproject.env.key"]) == 32
    assert [a.path for a in client.list_artifacts(run_id, "environment")] == ["environment/packages.txt", "environment/pylock.toml"]
    packages = client.download_artifacts(run_id, "environment/packages.txt", str(_work_in_tmp))
    assert Path(packages).read_text().strip() == "six==1.16.0"


def test_server_down_at_start_is_a_clear_error_and_starts_nothing(make_project, cli, _work_in_tmp, tmp_path):
    """With --tracking online (by default such a run is recorded offline: test_offline.py)."""
    marker = tmp_path / "ran"
    root = make_project(f"entry_points:\n  main:\n    command: 'touch {marker}'\n")
    dead = f"http://127.0.0.1:{free_port()}"
    result = cli("run", str(root), "--env-manager", "local", "--tracking", "online", cwd=_work_in_tmp,
                 env={"MLFLOW_TRACKING_URI": dead})
    assert_clean_error(result, contains="cannot reach the MLflow tracking server")
    assert not marker.exists()
    assert json.loads(cli("runs", "list", "--json").stdout) == []


def test_credentials_never_recorded(make_project, cli, mlflow_server, _work_in_tmp, mlproject_home):
    root = make_project(LOGGER, {"log.py": LOG_PY})
    secret = "s3cr3t-pa55"
    with_password = mlflow_server.replace("http://", f"http://alice:{secret}@")
    result = cli("run", str(root), "--env-manager", "local", cwd=_work_in_tmp, env={"MLFLOW_TRACKING_URI": with_password})
    assert result.returncode == 0, result.stderr
    run = MlflowClient(mlflow_server).get_run(_run_id(result.stderr))
    assert secret not in json.dumps(run.data.tags) + json.dumps(run.data.params)
    assert secret not in result.stdout + result.stderr
    dead = f"http://alice:{secret}@127.0.0.1:{free_port()}"
    failed = cli("run", str(root), "--env-manager", "local", "--tracking", "online", cwd=_work_in_tmp,
                 env={"MLFLOW_TRACKING_URI": dead})
    assert failed.returncode == 2 and secret not in failed.stderr
    offline = cli("run", str(root), "--env-manager", "local", cwd=_work_in_tmp, env={"MLFLOW_TRACKING_URI": dead})
    assert offline.returncode == 0 and "recorded offline" in offline.stderr and secret not in offline.stderr
    for path in mlproject_home.rglob("*"):  # (the offline store's runs too: their server is named masked)
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_tracking_settings_secrets_never_recorded(make_project, cli, mlflow_server, _work_in_tmp, mlproject_home, tmp_path):
    """A token and a password given as MLflow's settings (environment variables): in nothing a run
    writes: output, ledger, notes, logs, the store, tags, parameters, or the run's artifacts."""
    root = make_project(LOGGER, {"log.py": LOG_PY})
    token, password = "t0ken-Zq81x", "pa55-Yw27k"
    settings = {"MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_TRACKING_TOKEN": token,
                "MLFLOW_TRACKING_USERNAME": "bob", "MLFLOW_TRACKING_PASSWORD": password}
    result = cli("run", str(root), "--env-manager", "local", "-P", "alpha=0.3", cwd=_work_in_tmp, env=settings)
    assert result.returncode == 0, result.stderr
    run_id = _run_id(result.stderr)
    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert run.data.metrics  # the project logged into the run with the same settings
    downloaded = Path(client.download_artifacts(run_id, "", str(tmp_path / "artifacts")))
    written = [p for base in (mlproject_home, _work_in_tmp, downloaded) for p in base.rglob("*") if p.is_file()]
    assert any(p.name == "output.log" for p in written)
    for secret in (token, password):
        assert secret not in json.dumps(run.data.tags) + json.dumps(run.data.params)
        assert secret not in result.stdout + result.stderr
        for path in written:
            assert secret.encode() not in path.read_bytes(), path
    # Its server down: recorded offline, and the settings are in nothing it wrote there either.
    offline = cli("run", str(root), "--env-manager", "local", cwd=_work_in_tmp,
                  env={**settings, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
    assert offline.returncode == 0 and "recorded offline" in offline.stderr, offline.stderr
    for secret in (token, password):
        assert secret not in offline.stdout + offline.stderr
        for path in mlproject_home.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


def _start_server(root: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root}/server.db", "--artifacts-destination", str(root / "artifacts"),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("mlflow server did not start in 120 s")


def _stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_server_down_at_the_end_is_retried(make_project, cli, tmp_path, _work_in_tmp):
    root_dir = tmp_path / "server"
    root_dir.mkdir()
    port = free_port()
    server = _start_server(root_dir, port)
    url = f"http://127.0.0.1:{port}"
    project = make_project("entry_points:\n  main:\n    command: 'echo started; sleep 4; echo done'\n")
    runner = subprocess.Popen([sys.executable, "-m", "runner", "run", str(project), "--env-manager", "local"], cwd=_work_in_tmp,
                              env={**os.environ, "MLFLOW_TRACKING_URI": url, "MLPROJECT_TRACKING_RETRY_SECONDS": "90"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert runner.stdout.readline() == b"started\n"
    _stop_server(server)  # down while the command runs and when it ends
    time.sleep(6)
    server = _start_server(root_dir, port)  # back within the retry window
    try:
        assert runner.wait(timeout=120) == 0
        run_id = _run_id(runner.stderr.read().decode())
        assert MlflowClient(url).get_run(run_id).info.status == "FINISHED"
        [record] = json.loads(cli("runs", "list", "--json").stdout)
        assert record["status"] == "FINISHED" and record["tracking_run_id"] == run_id
    finally:
        _stop_server(server)


def test_without_mlflow_installed_runs_untracked_and_says_so(make_project, tmp_path, _work_in_tmp):
    """A runner whose Python has no mlflow: nothing asked -> ledger only and one line; asked -> exit 2."""
    from conftest import REPO
    from runner.envs.uvtool import uv_binary

    venv = tmp_path / "bare-venv"
    subprocess.run([uv_binary(), "venv", "-q", "-p", sys.executable, str(venv)], check=True)
    subprocess.run([uv_binary(), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "PyYAML", "click", "jsonschema"], check=True)
    (_work_in_tmp / "mlflow.db").unlink()
    project = make_project("entry_points:\n  main:\n    command: 'echo hi'\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    quiet = subprocess.run([str(venv / "bin" / "python"), "-m", "runner", "run", str(project), "--env-manager", "local"],
                           cwd=_work_in_tmp, env=env, capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.count("mlflow is not installed") == 1 and quiet.stdout == "hi\n"
    assert not (_work_in_tmp / "mlflow.db").exists()
    asked = subprocess.run([str(venv / "bin" / "python"), "-m", "runner", "run", str(project), "--env-manager", "local"],
                           cwd=_work_in_tmp, env={**env, "MLFLOW_TRACKING_URI": "sqlite:///asked.db"}, capture_output=True, text=True)
    assert_clean_error(asked, contains="needs the mlflow package")
    remote_project = make_project("entry_points:\n  main:\n    parameters:\n      data: path\n    command: 'cat {data}'\n")
    remote = subprocess.run([str(venv / "bin" / "python"), "-m", "runner", "run", str(remote_project), "--env-manager", "local",
                             "-P", "data=s3://bucket/key.csv"], cwd=_work_in_tmp, env=env, capture_output=True, text=True)
    assert_clean_error(remote, contains="remote path 's3://bucket/key.csv' needs the mlflow package")


def test_remote_path_parameter_is_downloaded_for_the_run(make_project, cli, _work_in_tmp, tmp_path):
    """A `path` given as runs:/ (an artifact of an earlier run) is downloaded, used, logged as the URI, then removed."""
    store = f"sqlite:///{_work_in_tmp / 'mlflow.db'}"
    client = MlflowClient(store)
    source_run = client.create_run("0")
    data = tmp_path / "data.csv"
    data.write_text("x,y\n1,2\n")
    client.log_artifact(source_run.info.run_id, str(data))
    client.set_terminated(source_run.info.run_id)
    root = make_project(
        "entry_points:\n  main:\n    parameters:\n      data: path\n    command: 'cat {data}; echo; echo {data} > used_path'\n"
    )
    uri = f"runs:/{source_run.info.run_id}/data.csv"
    result = cli("run", str(root), "--env-manager", "local", "-P", f"data={uri}", cwd=_work_in_tmp)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("x,y\n1,2\n")
    used = Path((root / "used_path").read_text().strip())
    assert used.name == "data.csv" and "inputs" in used.parts
    assert not used.exists()  # removed with the run
    run = client.get_run(_run_id(result.stderr))
    assert run.data.params == {"data": uri}


def test_remote_path_that_cannot_be_downloaded(make_project, cli, _work_in_tmp):
    root = make_project("entry_points:\n  main:\n    parameters:\n      data: path\n    command: 'cat {data}'\n")
    result = cli("run", str(root), "--env-manager", "local", "-P", "data=runs:/0123456789abcdef0123456789abcdef/nope.csv", cwd=_work_in_tmp)
    assert_clean_error(result, contains="cannot download 'runs:/0123456789abcdef0123456789abcdef/nope.csv'")
    [record] = json.loads(cli("runs", "list", "--json").stdout)
    assert record["status"] == "FAILED" and record["pgid"] is None


def test_path_parameters_are_logged_as_given(make_project, cli, _work_in_tmp):
    """As MLflow: the tutorial's `-P data_file=data/sal_data.csv` is logged as typed; the command
    still gets the absolute path."""
    (_work_in_tmp / "data").mkdir()
    (_work_in_tmp / "data" / "sal_data.csv").write_text("x\n")
    root = make_project("entry_points:\n  main:\n    parameters:\n      data_file: path\n      n: {type: int, default: 2}\n"
                        "    command: 'echo {data_file}'\n")
    result = cli("run", str(root), "--env-manager", "local", "-P", "data_file=data/sal_data.csv", cwd=_work_in_tmp)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(_work_in_tmp / "data" / "sal_data.csv")
    run = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(_run_id(result.stderr))
    assert run.data.params == {"data_file": "data/sal_data.csv", "n": "2"}
