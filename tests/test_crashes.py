"""The runner SIGKILLed at random moments (environment build, run start, the
command, the run's end), many times: afterwards no half-made environment is
reused, the next run succeeds, every started run is ended in the ledger and in
tracking, and nothing the killed runs started is left running.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

from conftest import pid_alive


def _ledger_statuses(home) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(home / "ledger.db") as conn:
        return conn.execute("select id, status, tracking_run_id from runs").fetchall()


def _processes_of(run_ids: set[str]) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"MLPROJECT_RUN_ID=") and item[len(b"MLPROJECT_RUN_ID="):].decode() in run_ids:
                if pid_alive(int(pid)):
                    found.append(int(pid))
    return found


def test_sigkill_at_random_moments(make_project, mlproject_home, _work_in_tmp, cli):
    root = make_project(
        "name: crashy\npython_env: python_env.yaml\nentry_points:\n  main:\n"
        "    command: \"python -c 'import time, six; time.sleep(1.0); print(six.__version__)'\"\n",
        {"python_env.yaml": "python: '3.11'\ndependencies: [six==1.16.0]\n"},
    )
    assert cli("env", "build", str(root)).returncode == 0  # warms uv's cache: builds below take ~0.3-1 s
    rng = random.Random(int(os.environ.get("MLPROJECT_CRASH_SEED", "20261121")))
    kills = 0
    for attempt in range(14):
        if attempt % 2 == 0:  # every other attempt rebuilds, so kills also land inside builds
            cli("env", "gc", "--older-than", "0")
        proc = subprocess.Popen([sys.executable, "-m", "runner", "run", str(root)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=False)
        time.sleep(rng.uniform(0.05, 1.2))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 7, f"only {kills} of 14 runs were still going when killed: the timing needs adjusting"

    result = cli("run", str(root))  # reconciles every orphan before it starts
    assert result.returncode == 0, result.stderr
    assert "1.16.0" in result.stdout
    statuses = _ledger_statuses(mlproject_home)
    assert all(status != "RUNNING" for _, status, _ in statuses), statuses
    with sqlite3.connect(_work_in_tmp / "mlflow.db") as conn:
        stuck = conn.execute("select run_uuid from runs where status = 'RUNNING'").fetchall()
    assert stuck == [], f"{len(stuck)} MLflow run(s) left RUNNING"
    deadline = time.monotonic() + 10
    while _processes_of({run_id for run_id, _, _ in statuses}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_of({run_id for run_id, _, _ in statuses}) == []
    assert not list((mlproject_home / "pending").glob("*.json"))  # every note cleared or acted on
    listing = cli("env", "list")
    assert listing.returncode == 0 and "uv" in listing.stdout


def test_run_created_in_tracking_but_not_in_the_ledger_is_ended(mlproject_home, _work_in_tmp, cli):
    """The narrowest window: the MLflow run exists, the runner is killed before the ledger has it."""
    from mlflow.tracking import MlflowClient

    from runner.tracking import pending

    uri = f"sqlite:///{_work_in_tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run("0")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    note = pending.note(run.info.run_id, uri)
    data = json.loads(note.read_text())
    data["pid"] = dead.pid  # written by a runner that has since died
    note.write_text(json.dumps(data))
    assert cli("runs", "list", env={"MLFLOW_TRACKING_URI": uri}).returncode == 0  # any invocation reconciles
    assert client.get_run(run.info.run_id).info.status == "FAILED"
    assert not note.exists()
