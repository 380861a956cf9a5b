"""docker_env projects against a real Docker daemon started by the fixture (tests/dockerd.py),
with a locally made base image. Runs go through the real CLI."""
from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from conftest import assert_clean_error
from dockerd import BASE_IMAGE

# The host's mlflow, mounted into the container for the tracking tests (same Python minor version).
SITE_PACKAGES = str(Path(mlflow.__file__).resolve().parents[1])


@pytest.fixture(autouse=True)
def _docker_host(daemon, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", daemon.host)


SHOW_PY = """
import json, os, sys
print(json.dumps({"args": sys.argv[1:], "cwd": os.getcwd(), "greeting": os.environ.get("GREETING"),
                  "copied": os.environ.get("COPIED_VAR"), "run": os.environ.get("MLFLOW_RUN_ID"),
                  "files": sorted(os.listdir("."))}))
sys.exit(int(os.environ.get("EXIT_WITH", "0")))
"""


def docker_project(make_project, extra_env: str = "", volumes: str = "", command: str = "python3 show.py {msg}",
                   files: dict | None = None, image: str = BASE_IMAGE):
    mlproject = (
        "name: docker-demo\n"
        "docker_env:\n"
        f"  image: {image}\n"
        f"  environment: [[\"GREETING\", \"hi there\"]{extra_env}]\n"
        + (f"  volumes: [{volumes}]\n" if volumes else "")
        + "entry_points:\n  main:\n    parameters:\n      msg: {type: string, default: plain}\n"
        f"    command: \"{command}\"\n"
    )
    return make_project(mlproject, {"show.py": SHOW_PY, **(files or {})})


def shown(result) -> dict:
    import json

    line = next(line for line in result.stdout.splitlines() if line.startswith("{"))
    return json.loads(line)


def run_id_of(result) -> str:
    return re.search(r"run with ID '([0-9a-f]{32})'", result.stderr).group(1)


def tags_of(run_id: str, db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("select key, value from tags where run_uuid = ?", (run_id,)).fetchall())


def test_mounted_code_parameters_and_environment(cli, daemon, make_project, _work_in_tmp):
    root = docker_project(make_project, extra_env=', "COPIED_VAR"')
    tricky = "it's \"quoted\"; echo INJECTED $(id) `id` && exit 7"
    result = cli("run", str(root), "-P", f"msg={tricky}", env={"COPIED_VAR": "from the host"})
    assert result.returncode == 0, result.stderr
    seen = shown(result)
    assert seen["args"] == [tricky]  # one argument, exactly: nothing of it ran
    assert not any(line.startswith("INJECTED") for line in result.stdout.splitlines())
    assert seen["cwd"] == "/mlflow/projects/code" and "show.py" in seen["files"]
    assert seen["greeting"] == "hi there" and seen["copied"] == "from the host"
    run_id = run_id_of(result)
    assert seen["run"] == run_id
    tags = tags_of(run_id, _work_in_tmp / "mlflow.db")
    assert tags["mlflow.docker.image.uri"] == BASE_IMAGE and tags["mlflow.docker.image.id"].startswith("sha256:")
    assert tags["mlflow.project.env"] == "docker"
    assert daemon.containers() == []


def test_env_manager_local_still_runs_in_docker_as_mlflow_does(cli, daemon, make_project, _work_in_tmp):
    root = docker_project(make_project)
    result = cli("run", str(root), "--env-manager", "local", "-P", "msg=hello")
    assert result.returncode == 0, result.stderr
    assert shown(result)["cwd"] == "/mlflow/projects/code"  # inside the container, not on the host
    assert ("note: this project declares docker_env, so it runs in Docker as under mlflow run; "
            "--env-manager local does not apply to it") in result.stderr


def test_missing_host_variable_fails_before_anything(cli, daemon, make_project, _work_in_tmp, mlproject_home):
    root = docker_project(make_project, extra_env=', "NOT_SET_ANYWHERE"')
    result = cli("run", str(root))
    assert_clean_error(result, 2, "NOT_SET_ANYWHERE")
    with sqlite3.connect(_work_in_tmp / "mlflow.db") as conn:
        assert conn.execute("select count(*) from runs").fetchone()[0] == 0


def test_built_image_is_reused_and_rebuilt_on_change(cli, daemon, make_project, _work_in_tmp, mlproject_home):
    root = docker_project(make_project, files={".dockerignore": "secret.txt\n", "secret.txt": "not in the image\n"})
    first = cli("run", str(root), "--build-image", "-P", "msg=one")
    assert first.returncode == 0, first.stderr
    seen = shown(first)
    assert "show.py" in seen["files"] and "secret.txt" not in seen["files"]
    uri = tags_of(run_id_of(first), _work_in_tmp / "mlflow.db")["mlflow.docker.image.uri"]
    assert re.fullmatch(r"docker-demo:[0-9a-f]{12}", uri)
    second = cli("run", str(root), "--build-image", "-P", "msg=two")
    assert second.returncode == 0 and shown(second)["args"] == ["two"]
    assert tags_of(run_id_of(second), _work_in_tmp / "mlflow.db")["mlflow.docker.image.uri"] == uri  # reused
    assert len((mlproject_home / "envs" / ".builds.log").read_text().splitlines()) == 1
    (root / "show.py").write_text(SHOW_PY.replace("json.dumps({", "json.dumps({\"changed\": True, "))
    third = cli("run", str(root), "--build-image")
    assert third.returncode == 0 and shown(third).get("changed") is True
    assert tags_of(run_id_of(third), _work_in_tmp / "mlflow.db")["mlflow.docker.image.uri"] != uri
    # env list shows them; env gc removes the entries and the built images.
    assert "docker" in cli("env", "list").stdout
    assert cli("env", "gc", "--older-than", "0").returncode == 0
    assert daemon.docker("images", "-q", "docker-demo").stdout.strip() == ""


def test_volumes_docker_args_and_exit_code(cli, daemon, make_project, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "input.txt").write_text("volume content\n")
    root = docker_project(make_project, volumes=f"'{data}:/data:ro'", command="cat /data/input.txt && echo MEM=$LIMITED && python3 show.py {msg}")
    result = cli("run", str(root), "-A", "env=LIMITED=yes", "-A", "memory=256m", "-A", "init", env={"EXIT_WITH": "0"})
    assert result.returncode == 0, result.stderr
    assert "volume content" in result.stdout and "MEM=yes" in result.stdout
    failing = docker_project(make_project, command="echo failing && exit 3")
    result = cli("run", str(failing))
    assert result.returncode == 3 and "failing" in result.stdout
    assert_clean_error(cli("run", str(root), "-A", "no-such-option=1"), 2, "not a docker run option")
    assert daemon.containers() == []


def test_tracking_from_inside_to_sqlite_and_to_a_server(cli, daemon, make_project, _work_in_tmp, mlflow_server):
    log_py = "import mlflow\nwith mlflow.start_run():\n    mlflow.log_metric('inside', 42.0)\nprint('logged')\n"
    root = make_project(
        "name: tracked\n"
        "docker_env:\n"
        f"  image: {BASE_IMAGE}\n"
        f"  volumes: ['{SITE_PACKAGES}:/opt/site:ro']\n"
        "  environment: [[\"PYTHONPATH\", \"/opt/site\"]]\n"
        "entry_points:\n  main:\n    command: python3 log.py\n",
        {"log.py": log_py},
    )
    result = cli("run", str(root))  # the default ./mlflow.db, bind-mounted into the container
    assert result.returncode == 0, result.stderr
    run = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(run_id_of(result))
    assert run.data.metrics["inside"] == 42.0 and run.info.status == "FINISHED"
    result = cli("run", str(root), env={"MLFLOW_TRACKING_URI": mlflow_server})  # a server on 127.0.0.1
    assert result.returncode == 0, result.stderr
    run = MlflowClient(mlflow_server).get_run(run_id_of(result))
    assert run.data.metrics["inside"] == 42.0 and run.info.status == "FINISHED"


def test_cancel_stops_and_removes_the_container(daemon, make_project, _work_in_tmp):
    root = docker_project(make_project, command="echo started && sleep 120")
    proc = subprocess.Popen([sys.executable, "-m", "runner", "run", str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any("Up" in c for c in daemon.containers()):
        time.sleep(0.2)
    assert any("Up" in c for c in daemon.containers()), "the container did not start"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    deadline = time.monotonic() + 30
    while daemon.containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert daemon.containers() == []
    run_id = run_id_of(subprocess.CompletedProcess([], 0, out, err))
    with sqlite3.connect(_work_in_tmp / "mlflow.db") as conn:
        status = conn.execute("select status from runs where run_uuid = ?", (run_id,)).fetchone()[0]
    assert status == "KILLED"


def _paused_at(root: Path, phase: str, env: dict | None = None) -> tuple[subprocess.Popen, list[str]]:
    """`mlproject run ROOT` started and paused at fault phase `phase`: the process and what it
    said on stderr so far."""
    proc = subprocess.Popen([sys.executable, "-m", "runner", "run", str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MLPROJECT_FAULT_AT": f"{phase}:pause", **(env or {})})
    said = []
    for line in proc.stderr:  # type: ignore[union-attr]
        said.append(line)
        if f"fault: paused at {phase}" in line:
            break
    assert said and f"paused at {phase}" in said[-1], "".join(said)
    return proc, said


def test_a_launcher_killed_before_asking_for_its_container_holds_no_exit(daemon, make_project, _work_in_tmp):
    """Ctrl-C while the container's launcher has not yet asked the daemon for it, and the launcher
    killed after the grace: the runner exits at once, without waiting for a container no one asked
    for (seed 20261210:409, :426, :682: 10 s more, a creation wait on every such exit)."""
    root = docker_project(make_project)
    proc, said = _paused_at(root, "docker.launcher", {"MLPROJECT_KILL_GRACE": "1"})
    struck = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - struck
    assert proc.returncode == 130, err
    assert took < 6, f"{took:.1f} s from the Ctrl-C to the exit"
    assert daemon.containers() == []
    run_id = run_id_of(subprocess.CompletedProcess([], 0, out, "".join(said) + err))
    with sqlite3.connect(_work_in_tmp / "mlflow.db") as conn:
        status = conn.execute("select status from runs where run_uuid = ?", (run_id,)).fetchone()[0]
    assert status == "KILLED"


def test_a_ctrl_c_while_the_daemon_creates_the_container_removes_it_once_made(daemon, make_project, _work_in_tmp,
                                                                            tmp_path):
    """Ctrl-C while the launcher waits for the daemon to create its container (3 s: a proxy in
    front of the daemon holds the request back): the creation is let finish, the container is
    removed unstarted, the run ends KILLED with exit 130 (seed 5:3 and 6:0-6:11: the launcher
    died mid-request with a KeyboardInterrupt traceback, and the daemon finished making a
    container no one removed)."""
    from dockerproxy import DockerProxy

    proxy = DockerProxy(str(daemon.socket), tmp_path / "proxy.sock", hold_creation=3.0)
    try:
        root = docker_project(make_project, command="echo started")
        # (A grace longer than the creation: the launcher is not killed while it waits for it.)
        proc = subprocess.Popen([sys.executable, "-m", "runner", "run", str(root)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "DOCKER_HOST": proxy.host, "MLPROJECT_KILL_GRACE": "20"})
        assert proxy.creation_asked.wait(120), "the launcher never asked for its container"
        proc.send_signal(signal.SIGINT)  # (the runner hands it to its command: the launcher)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "started" not in out, err
        # (Made by the daemon whatever became of its asker: it is there, or it was removed.)
        assert proxy.creation_answered.wait(60), "the daemon never answered the creation"
    finally:
        proxy.close()
    assert daemon.containers() == [], err
    run_id = run_id_of(subprocess.CompletedProcess([], 0, out, err))
    with sqlite3.connect(_work_in_tmp / "mlflow.db") as conn:
        status = conn.execute("select status from runs where run_uuid = ?", (run_id,)).fetchone()[0]
    assert status == "KILLED"


def test_a_dead_runners_container_is_removed_by_the_next_command(daemon, make_project, _work_in_tmp):
    """The runner SIGKILLed while its launcher held a container made and not started: the next
    command's reconcile stopped the launcher and ended the run, and left the container `Created`
    for good (seed 20261211:122). It now removes the run's container as well."""
    root = docker_project(make_project)
    proc, _ = _paused_at(root, "docker.created")
    assert [c for c in daemon.containers() if "Created" in c], daemon.containers()
    proc.kill()
    proc.wait(timeout=30)
    listed = subprocess.run([sys.executable, "-m", "runner", "runs", "list", "--json"], capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode == 0 and '"FAILED"' in listed.stdout, listed.stdout + listed.stderr
    assert daemon.containers() == []


def test_a_removal_the_daemon_refuses_is_asked_again_until_the_container_is_gone(daemon, make_project, _work_in_tmp,
                                                                                 tmp_path):
    """Ctrl-C twice while the launcher holds a container made and not started: the second kills
    the launcher, and the run's cleanup removes the container. The daemon refuses a removal while
    another is under way (seed 20261206:318: the cleanup took its first refusal for an answer and
    left the container `Created`); here a proxy in front of the daemon refuses the first two."""
    from dockerproxy import DockerProxy

    proxy = DockerProxy(str(daemon.socket), tmp_path / "proxy.sock", refusals=2)
    try:
        root = docker_project(make_project)
        proc, said = _paused_at(root, "docker.created", {"DOCKER_HOST": proxy.host})
        assert [c for c in daemon.containers() if "Created" in c], daemon.containers()
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # (the second Ctrl-C: the launcher is killed at once)
        out, err = proc.communicate(timeout=60)
    finally:
        proxy.close()
    assert proc.returncode == 130, err
    assert (proxy.refused, proxy.removals_passed) == (2, 1), (proxy.refused, proxy.removals_passed, err)
    assert daemon.containers() == []
    run_id = run_id_of(subprocess.CompletedProcess([], 0, out, "".join(said) + err))
    with sqlite3.connect(_work_in_tmp / "mlflow.db") as conn:
        status = conn.execute("select status from runs where run_uuid = ?", (run_id,)).fetchone()[0]
    assert status == "KILLED"


def test_base_image_neither_local_nor_pullable(cli, daemon, make_project, _work_in_tmp):
    root = docker_project(make_project, image="example.invalid/nothing:here")
    result = cli("run", str(root), timeout=120)
    assert_clean_error(result, 2, "neither on the Docker daemon nor pullable")
    with sqlite3.connect(_work_in_tmp / "mlflow.db") as conn:
        assert conn.execute("select count(*) from runs").fetchone()[0] == 0
