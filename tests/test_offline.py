"""Offline tracking: runs recorded on a machine that cannot reach its tracking server (or told
`--tracking offline`), and `mlproject runs sync` sending them there later, once, keeping the
ledger's run IDs, against a real `mlflow server` behind a proxy that can be switched off."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import assert_clean_error
from trackingproxy import FaultyProxy

TRAINER = """
name: trainer
entry_points:
  main:
    parameters:
      alpha: {type: float, default: 0.5}
      code: {type: int, default: 0}
    command: "python train.py {alpha} {code}"
"""
TRAIN_PY = """
import sys, mlflow
alpha, code = float(sys.argv[1]), int(sys.argv[2])
for step in range(3):
    mlflow.log_metric("loss", alpha / (step + 1), step=step)
with open("weights.txt", "w") as handle:
    handle.write(f"alpha={alpha}")
mlflow.log_artifact("weights.txt")
print("trained", alpha)
sys.exit(code)
"""
QUICK = "name: quick\nentry_points:\n  main:\n    parameters: {n: int}\n    command: 'echo quick {n}'\n"


@pytest.fixture
def proxy(mlflow_server):
    proxy = FaultyProxy(mlflow_server)
    yield proxy
    proxy.close()


def _ledger(cli, run_id: str) -> dict:
    result = cli("runs", "show", "--json", run_id)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _run_id(result) -> str:
    return re.search(r"run with ID '([0-9a-f]{32})'", result.stderr).group(1)


def _copies(client: MlflowClient, experiment_id: str, ledger_id: str, deleted: bool = False) -> list:
    from mlflow.entities import ViewType

    return client.search_runs([experiment_id], f"tags.`mlproject.offline.run_id` = '{ledger_id}'",
                              run_view_type=ViewType.ALL if deleted else ViewType.ACTIVE_ONLY)


def _offline_store(mlproject_home) -> MlflowClient:
    return MlflowClient(f"sqlite:///{mlproject_home / 'offline' / 'mlflow.db'}")


def test_runs_made_while_the_server_is_down_are_sent_once_when_it_is_back(make_project, cli, proxy, mlflow_server,
                                                                          mlproject_home, _work_in_tmp):
    root = make_project(TRAINER, {"train.py": TRAIN_PY})
    experiment = f"offline-{uuid.uuid4().hex[:8]}"
    proxy.stop()  # the node cannot reach its tracking server
    env = {"MLFLOW_TRACKING_URI": proxy.url}
    good = cli("run", str(root), "--env-manager", "local", "-P", "alpha=0.3", "--experiment-name", experiment, env=env)
    assert good.returncode == 0, good.stderr
    assert "warning: cannot reach the MLflow tracking server" in good.stderr and "runs sync" in good.stderr
    bad = cli("run", str(root), "--env-manager", "local", "-P", "alpha=0.9", "-P", "code=3",
              "--experiment-name", experiment, env=env)
    assert bad.returncode == 3, bad.stderr
    ids = [_run_id(good), _run_id(bad)]
    here = _offline_store(mlproject_home)
    for run_id, status in zip(ids, ("FINISHED", "FAILED")):
        record = _ledger(cli, run_id)
        assert (record["id"], record["status"]) == (run_id, status)
        assert record["tracking_uri"] == f"sqlite:///{mlproject_home / 'offline' / 'mlflow.db'}"
        offline_run = here.get_run(run_id)
        assert offline_run.info.status == status
        assert [m.value for m in here.get_metric_history(run_id, "loss")] == pytest.approx(
            [float(offline_run.data.params["alpha"]) / n for n in (1, 2, 3)])
    shown = cli("runs", "show", ids[0])
    assert "recorded offline, for `mlproject runs sync`" in shown.stdout, shown.stdout

    # The server still down: the sync says so in one line and keeps every run for later.
    refused = cli("runs", "sync", env=env)
    assert_clean_error(refused, 2, "cannot reach the MLflow tracking server")
    assert _ledger(cli, ids[0])["tracking_uri"].startswith("sqlite:///")

    proxy.restart()
    synced = cli("runs", "sync", env=env)
    assert synced.returncode == 0, synced.stderr
    assert "sent 2 run(s)" in synced.stdout and "View run" not in synced.stdout, synced.stdout
    server = MlflowClient(mlflow_server)
    experiment_id = server.get_experiment_by_name(experiment).experiment_id
    for run_id, status in zip(ids, ("FINISHED", "FAILED")):
        [copy] = _copies(server, experiment_id, run_id)
        original = here.get_run(run_id)
        assert copy.info.status == status
        assert (copy.info.start_time, copy.info.end_time) == (original.info.start_time, original.info.end_time)
        assert copy.info.run_name == original.info.run_name
        assert copy.data.params == original.data.params
        assert "mlproject.offline.target" not in copy.data.tags
        assert {k: v for k, v in copy.data.tags.items() if k != "mlproject.offline.run_id"} == {
            k: v for k, v in original.data.tags.items() if k != "mlproject.offline.target"}
        history = [(m.step, m.value, m.timestamp) for m in server.get_metric_history(copy.info.run_id, "loss")]
        assert sorted(history) == sorted((m.step, m.value, m.timestamp)
                                         for m in here.get_metric_history(run_id, "loss"))
        assert [step for step, _, _ in sorted(history)] == [0, 1, 2]
        artifacts = {a.path for a in server.list_artifacts(copy.info.run_id)}
        assert {"weights.txt", "output.log"} <= artifacts, artifacts
        weights = server.download_artifacts(copy.info.run_id, "weights.txt", str(_work_in_tmp))
        assert open(weights).read() == f"alpha={original.data.params['alpha']}"
        record = _ledger(cli, run_id)  # the ledger's ID stays; its run is the server's now
        assert (record["id"], record["tracking_uri"], record["tracking_run_id"]) == (run_id, proxy.url, copy.info.run_id)
        assert _ledger(cli, copy.info.run_id)["id"] == run_id  # (found by the server's ID too)

    again = cli("runs", "sync", env=env)
    assert again.returncode == 0 and "nothing to sync" in again.stdout, (again.stdout, again.stderr)
    assert len(server.search_runs([experiment_id])) == 2


def test_an_offline_sweep_is_sent_with_its_trials_under_their_parent(make_project, cli, mlflow_server, mlproject_home,
                                                                     _work_in_tmp):
    root = make_project(TRAINER, {"train.py": TRAIN_PY})
    server = MlflowClient(mlflow_server)
    experiment_id = server.create_experiment(f"offline-sweep-{uuid.uuid4().hex[:8]}")
    env = {"MLFLOW_TRACKING_URI": mlflow_server}  # reachable: offline because it is asked for
    # The driver SIGKILLed after its first trial: resumed, the rest of the sweep is recorded
    # offline too, under the same parent.
    log = _work_in_tmp / "sweep.err"
    with open(log, "w") as stderr_file:
        driver = subprocess.Popen([sys.executable, "-m", "runner", "sweep", str(root), "--env-manager", "local",
                                   "-P", "alpha=0.1,0.2,0.4", "--metric", "loss", "--max-parallel", "1",
                                   "--tracking", "offline", "--experiment-id", experiment_id],
                                  env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=stderr_file)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not re.search(r"^trial \S+ \(1/3\)", log.read_text(), re.MULTILINE):
        time.sleep(0.1)
    driver.kill()
    driver.wait()
    sweep_id = re.search(r"^sweep (\S+):", log.read_text(), re.MULTILINE).group(1)
    swept = cli("sweep", "--resume", sweep_id, env=env)
    assert swept.returncode == 0 and "trial(s) kept" in swept.stderr, swept.stderr
    parent = re.search(r"parent run ([0-9a-f]{32})", swept.stderr).group(1)
    rows = json.loads(cli("runs", "list", "--json").stdout)
    trials = [r for r in rows if r["id"] != parent and r["status"] == "FINISHED"]
    assert len(trials) == 3 and all(r["tracking_uri"].endswith("offline/mlflow.db") for r in rows)
    assert not server.search_runs([experiment_id])  # nothing reached the server yet

    synced = cli("runs", "sync", "--to", mlflow_server, env=env)
    # (the trial the driver's death cut short is there too, FAILED, and was run again)
    assert synced.returncode == 0 and f"sent {len(rows)} run(s)" in synced.stdout, (synced.stdout, synced.stderr)
    [parent_copy] = _copies(server, experiment_id, parent)
    assert parent_copy.data.tags["mlproject.sweep.trials"] == "3"
    for trial in trials:
        [copy] = _copies(server, experiment_id, trial["id"])
        assert copy.data.tags["mlflow.parentRunId"] == parent_copy.info.run_id
        assert copy.info.status == "FINISHED"
    assert len(server.search_runs([experiment_id])) == len(rows)
    again = cli("runs", "sync", "--to", mlflow_server, env=env)
    assert "nothing to sync" in again.stdout, again.stdout
    assert len(server.search_runs([experiment_id])) == len(rows)


def test_a_sync_killed_at_any_instant_sends_each_run_exactly_once(make_project, cli, mlflow_server, mlproject_home,
                                                                  _work_in_tmp):
    """SIGKILL at the named instants (a copy made, not ended; ended, the ledger not told), then at
    seeded random instants: the next sync deletes a partial copy and sends it again, adopts a
    whole one, and every run ends with exactly one copy on the server."""
    root = make_project(QUICK)
    server = MlflowClient(mlflow_server)
    experiment = f"offline-kill-{uuid.uuid4().hex[:8]}"
    ids = []
    for n in range(6):
        made = cli("run", str(root), "--env-manager", "local", "-P", f"n={n}", "--tracking", "offline",
                   "--experiment-name", experiment, env={"MLFLOW_TRACKING_URI": mlflow_server})
        assert made.returncode == 0, made.stderr
        ids.append(_run_id(made))

    def sync(fault: str | None = None) -> subprocess.Popen:
        env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
        if fault:
            env["MLPROJECT_FAULT_AT"] = fault
        return subprocess.Popen([sys.executable, "-m", "runner", "runs", "sync"], cwd=_work_in_tmp, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    for fault in ("sync.created:SIGKILL", "sync.ended:SIGKILL"):
        struck = sync(fault)
        struck.communicate(timeout=120)
        assert struck.returncode == -signal.SIGKILL, fault
    experiment_id = server.get_experiment_by_name(experiment).experiment_id
    assert len(_copies(server, experiment_id, ids[0], deleted=True)) == 2  # one cut short, one whole
    seed = 20261206
    strikes = random.Random(seed)
    for delay in [strikes.uniform(0.5, 4.0) for _ in range(4)]:  # (the import alone takes ~2 s)
        struck = sync()
        time.sleep(delay)
        struck.kill()
        struck.communicate(timeout=60)
    final = sync()
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    for run_id in ids:
        copies = _copies(server, experiment_id, run_id)
        assert len(copies) == 1 and copies[0].info.status == "FINISHED", (seed, run_id, copies)
        record = _ledger(cli, run_id)
        assert (record["tracking_uri"], record["tracking_run_id"]) == (mlflow_server, copies[0].info.run_id), seed
    assert len(server.search_runs([experiment_id])) == len(ids)
    assert "nothing to sync" in cli("runs", "sync", env={"MLFLOW_TRACKING_URI": mlflow_server}).stdout


def test_offline_is_refused_where_it_cannot_apply(make_project, cli):
    root = make_project(QUICK)
    continued = cli("run", str(root), "-P", "n=1", "--tracking", "offline", "--run-id", "0" * 32)
    assert_clean_error(continued, 2, "cannot be recorded offline")
    on_cluster = cli("run", str(root), "-P", "n=1", "--tracking", "offline", "-b", "slurm")
    assert_clean_error(on_cluster, 2, "--tracking offline records on this machine")
    nothing = cli("runs", "sync")
    assert nothing.returncode == 0 and "nothing to sync" in nothing.stdout


def test_the_warm_path_of_an_offline_run_does_not_import_mlflow(make_project, cli, mlproject_home):
    """Once the offline store exists, a run recorded there is written as any local store is
    (runner.tracking.sqlite_direct): no mlflow import on the way."""
    root = make_project(QUICK)
    first = cli("run", str(root), "-P", "n=1", "--env-manager", "local", "--tracking", "offline")
    assert first.returncode == 0, first.stderr
    probe = ("import runpy, sys\nsys.argv = ['mlproject', 'run', sys.argv[1], '-P', 'n=2', '--env-manager', 'local',"
             " '--tracking', 'offline']\ntry:\n    runpy.run_module('runner', run_name='__main__')\nexcept SystemExit:\n"
             "    pass\nprint('MLFLOW' if 'mlflow' in sys.modules else 'NO-MLFLOW', file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", probe, str(root)], capture_output=True, text=True,
                            env={**os.environ}, timeout=120)
    assert "NO-MLFLOW" in result.stderr, result.stderr


def test_the_python_api_records_offline_and_syncs(make_project, mlflow_server, _work_in_tmp, monkeypatch, cli,
                                                   mlproject_home):
    """runner.run(tracking="offline") and runner.sync_runs(); a rerun of an offline run is recorded
    offline too, for the same server; `cache gc` removes the offline originals of sent runs."""
    import runner

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    root = make_project(QUICK)
    submitted = runner.run(str(root), parameters={"n": 7}, env_manager="local", tracking="offline",
                           experiment_name=f"offline-api-{uuid.uuid4().hex[:8]}")
    assert submitted.get_status() == "FINISHED"
    again = runner.rerun(submitted.run_id)
    assert again.get_status() == "FINISHED"
    first = runner.sync_runs()
    assert sorted(first.sent) == sorted((run_id, mlflow_server, copy) for run_id, _, copy in first.sent)
    assert {ledger_id for ledger_id, _, _ in first.sent} == {submitted.run_id, again.run_id}
    server = MlflowClient(mlflow_server)
    copies = {ledger_id: copy for ledger_id, _, copy in first.sent}
    for copy in copies.values():
        assert server.get_run(copy).data.params == {"n": "7"}
    # (the rerun's tag names its original's copy on the server, as the parent of a sweep's trial)
    assert server.get_run(copies[again.run_id]).data.tags["mlproject.rerunOf"] == copies[submitted.run_id]
    assert runner.sync_runs().sent == []
    here = _offline_store(mlproject_home)
    originals = [Path(here.get_run(run_id).info.artifact_uri).parent for run_id in copies]
    assert all(directory.is_dir() for directory in originals)
    dry = cli("cache", "gc", "--older-than", "0", "--dry-run")
    assert "would remove the offline originals of 2 run(s)" in dry.stdout, dry.stdout
    assert all(directory.is_dir() for directory in originals)
    gc = cli("cache", "gc", "--older-than", "0")
    assert gc.returncode == 0 and "removed the offline originals of 2 run(s)" in gc.stdout, (gc.stdout, gc.stderr)
    assert not any(directory.exists() for directory in originals)
    assert {here.get_run(run_id).info.lifecycle_stage for run_id in copies} == {"deleted"}
    for ledger_id, copy in copies.items():  # the runs are the server's copies, whole
        assert server.get_run(copy).data.params == {"n": "7"}
        assert "output.log" in {a.path for a in server.list_artifacts(copy)}
        assert _ledger(cli, ledger_id)["tracking_run_id"] == copy
    assert "originals of 0 run(s)" in cli("cache", "gc", "--older-than", "0").stdout
    with pytest.raises(runner.UsageError, match="expected one of auto, offline, online"):
        runner.run(str(root), parameters={"n": 1}, env_manager="local", tracking="nowhere")


def test_runs_for_a_server_still_down_wait_while_the_others_are_sent(make_project, cli, mlflow_server):
    from conftest import free_port

    root = make_project(QUICK)
    dead = f"http://127.0.0.1:{free_port()}"
    down = cli("run", str(root), "-P", "n=1", "--env-manager", "local", env={"MLFLOW_TRACKING_URI": dead})
    assert down.returncode == 0 and "recorded offline" in down.stderr, down.stderr
    up = cli("run", str(root), "-P", "n=2", "--env-manager", "local", "--tracking", "offline",
             env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert up.returncode == 0, up.stderr
    synced = cli("runs", "sync", env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert_clean_error(synced, 2, f"cannot reach the MLflow tracking server at {dead}")
    assert "sent 1 run(s)" in synced.stdout and "1 waiting" in synced.stdout, synced.stdout
    assert _ledger(cli, _run_id(up))["tracking_uri"] == mlflow_server
    assert _ledger(cli, _run_id(down))["tracking_uri"].endswith("offline/mlflow.db")
