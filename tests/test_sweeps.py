"""Sweeps: real runs of real projects through the CLI (and the API), checked in the MLflow store."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import assert_clean_error

# loss = (x - 0.3)^2 + y, logged by the command itself; `fail` makes the command exit 3.
QUADRATIC = """
    name: quadratic
    entry_points:
      main:
        parameters:
          x: {type: float, default: 0}
          y: {type: int, default: 0}
          fail: {type: string, default: "no"}
          secs: {type: float, default: 0}
        command: "python quad.py {x} {y} {fail} {secs}"
"""
QUAD_PY = """
    import sys, time
    import mlflow
    x, y, fail, secs = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    time.sleep(secs)
    if fail == "yes":
        sys.exit(3)
    mlflow.log_metric("loss", (x - 0.3) ** 2 + y)
"""


@pytest.fixture
def quadratic(make_project):
    return make_project(QUADRATIC, {"quad.py": QUAD_PY})


def _sweep(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", "sweep", *args], capture_output=True, text=True,
                          timeout=timeout)


def _sweep_id(stderr: str) -> str:
    for line in stderr.splitlines():
        if line.startswith("sweep ") and "trial(s) to run" in line:
            return line.split()[1].rstrip(":")
    raise AssertionError(stderr)


def _client(cwd) -> MlflowClient:
    return MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")


def _children(client: MlflowClient, parent: str):
    return client.search_runs(["0"], f"tags.mlflow.parentRunId = '{parent}'")


def test_grid_records_a_parent_with_its_children_and_the_best(quadratic, _work_in_tmp):
    result = _sweep(str(quadratic), "-P", "x=range(0,1,0.25)", "-P", "y=1,2", "--metric", "loss", "--max-parallel", "2",
                    "--env-manager", "local")
    assert result.returncode == 0, result.stderr
    sweep_id = _sweep_id(result.stderr)
    client = _client(_work_in_tmp)
    parent = client.search_runs(["0"], f"tags.`mlproject.sweep.id` = '{sweep_id}'")
    assert len(parent) == 1
    parent = parent[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == f"sweep-{sweep_id}"
    children = _children(client, parent.info.run_id)
    assert len(children) == 8 and all(c.info.status == "FINISHED" for c in children)
    assert sorted((c.data.params["x"], c.data.params["y"]) for c in children) == sorted(
        (x, y) for x in ("0.0", "0.25", "0.5", "0.75") for y in ("1", "2"))
    best = min(children, key=lambda c: c.data.metrics["loss"])
    assert best.data.params == {"x": "0.25", "y": "1", "fail": "no", "secs": "0"}
    assert parent.data.tags["mlproject.sweep.best_run_id"] == best.info.run_id
    assert parent.data.tags["mlproject.sweep.best_metric"] == "loss=1.0025"
    assert parent.data.metrics["loss"] == pytest.approx(1.0025)
    assert json.loads(parent.data.tags["mlproject.sweep.space"]) == {"x": "range(0,1,0.25)", "y": "1,2"}
    csv_path = client.download_artifacts(parent.info.run_id, "trials.csv", str(_work_in_tmp / "dl"))
    lines = open(csv_path).read().splitlines()
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "loss.png"} <= artifacts  # and the plot of loss against x and y
    assert lines[0].startswith("trial,status,loss,duration_s,") and best.info.run_id in lines[1]
    # The table, best first, on stdout; `sweep show` prints it again later.
    assert result.stdout.splitlines()[1].split()[:3] == ["3", "FINISHED", "1.0025"]
    shown = subprocess.run([sys.executable, "-m", "runner", "sweep", "show", sweep_id[:6]], capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stdout.splitlines()[3].split()[:2] == ["3", "FINISHED"], shown.stdout
    plotted = subprocess.run([sys.executable, "-m", "runner", "sweep", "show", sweep_id, "--plot",
                              str(_work_in_tmp / "sweep.png")], capture_output=True, text=True)
    assert plotted.returncode == 0 and f"plot written to {_work_in_tmp / 'sweep.png'}" in plotted.stderr, plotted.stderr
    assert (_work_in_tmp / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trials = subprocess.run([sys.executable, "-m", "runner", "runs", "list", "--sweep", sweep_id, "--json"],
                            capture_output=True, text=True)
    assert sorted(r["id"] for r in json.loads(trials.stdout)) == sorted(c.info.run_id for c in children)


def test_random_search_is_reproducible_by_its_seed(quadratic, _work_in_tmp):
    from runner.sweeps.search import SearchSettings, make_search
    from runner.sweeps.space import parse_space

    space = parse_space({"x": "loguniform(1e-3,1)", "y": "int(uniform(0,5))", "fail": "no"})

    def drawn(seed: int) -> list[dict[str, str]]:
        return make_search("random", SearchSettings(space, 6, seed, None, "minimize")).planned()

    first, again = drawn(7), drawn(7)
    assert first == again and first != drawn(8)
    assert all(1e-3 <= float(t["x"]) <= 1 and t["y"] in {"0", "1", "2", "3", "4", "5"} for t in first)
    params = []
    for _ in range(2):
        result = _sweep(str(quadratic), "-P", "x=uniform(0,1)", "-P", "y=0,1", "--method", "random", "--max-runs", "3",
                        "--seed", "7", "--env-manager", "local")
        assert result.returncode == 0, result.stderr
        parent = _client(_work_in_tmp).search_runs(["0"], f"tags.`mlproject.sweep.id` = '{_sweep_id(result.stderr)}'")[0]
        params.append(sorted((c.data.params["x"], c.data.params["y"]) for c in _children(_client(_work_in_tmp), parent.info.run_id)))
    assert params[0] == params[1] and len(params[0]) == 3
    # (no --metric: nothing to plot, said as one error)
    unplotted = subprocess.run([sys.executable, "-m", "runner", "sweep", "show", _sweep_id(result.stderr), "--plot",
                                str(_work_in_tmp / "none.png")], capture_output=True, text=True)
    assert_clean_error(unplotted, 2, "has no metric to plot")
    assert not (_work_in_tmp / "none.png").exists()


def test_every_value_is_checked_before_the_first_trial(quadratic, _work_in_tmp):
    result = _sweep(str(quadratic), "-P", "x=0.1,0.2", "-P", "y=1,two", "--env-manager", "local")
    assert_clean_error(result, 2, "trial 2 (x=0.1 y=two)")
    assert "two" in result.stderr
    assert _client(_work_in_tmp).search_runs(["0"]) == []
    grid = _sweep(str(quadratic), "-P", "x=uniform(0,1)", "--env-manager", "local")
    assert_clean_error(grid, 2, "continuous")
    bad = _sweep(str(quadratic), "-P", "x=range(1,0)", "--env-manager", "local")
    assert_clean_error(bad, 2, "empty")


def test_failed_trials_are_recorded_and_the_sweep_goes_on(quadratic, _work_in_tmp):
    result = _sweep(str(quadratic), "-P", "fail=no,yes,no", "-P", "x=0.5", "--metric", "loss", "--max-parallel", "1",
                    "--env-manager", "local")
    assert result.returncode == 1, result.stderr
    assert "2/3 trials finished" in result.stderr
    parent = _client(_work_in_tmp).search_runs(["0"], f"tags.`mlproject.sweep.id` = '{_sweep_id(result.stderr)}'")[0]
    assert parent.info.status == "FAILED"
    statuses = sorted(c.info.status for c in _children(_client(_work_in_tmp), parent.info.run_id))
    assert statuses == ["FAILED", "FINISHED", "FINISHED"]
    stopped = _sweep(str(quadratic), "-P", "fail=yes,yes,no,no", "--max-failures", "0", "--max-parallel", "1",
                     "--env-manager", "local")
    assert stopped.returncode == 1 and "no more trials are started" in stopped.stderr
    parent = _client(_work_in_tmp).search_runs(["0"], f"tags.`mlproject.sweep.id` = '{_sweep_id(stopped.stderr)}'")[0]
    assert len(_children(_client(_work_in_tmp), parent.info.run_id)) == 1


def test_killed_sweep_resumes_without_losing_or_repeating_a_trial(quadratic, _work_in_tmp):
    log = _work_in_tmp / "sweep.err"
    with open(log, "w") as stderr_file:
        proc = subprocess.Popen([sys.executable, "-m", "runner", "sweep", str(quadratic), "-P", "x=0.1,0.2,0.3,0.4,0.5",
                                 "-P", "secs=1", "--metric", "loss", "--max-parallel", "1", "--env-manager", "local"],
                                stdout=subprocess.DEVNULL, stderr=stderr_file, start_new_session=True)
    client = _client(_work_in_tmp)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if sum(line.startswith("trial ") and " FINISHED " in line for line in log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)  # the driver only: its trial's command is left to reconcile
    proc.wait()
    stderr = log.read_text()
    sweep_id = _sweep_id(stderr)
    # What the sweep had recorded as finished. (A trial whose driver died while it ran is run
    # again: its command may have ended by itself, but its outcome was never recorded.)
    shown = subprocess.run([sys.executable, "-m", "runner", "sweep", "show", sweep_id], capture_output=True, text=True)
    kept = {line.split()[-1] for line in shown.stdout.splitlines()[3:] if line.split()[1] == "FINISHED"}
    assert len(kept) >= 2, shown.stdout
    resumed = _sweep("--resume", sweep_id)
    assert resumed.returncode == 0, resumed.stderr
    assert "trial(s) kept" in resumed.stderr
    parent = client.search_runs(["0"], f"tags.`mlproject.sweep.id` = '{sweep_id}'")[0]
    assert parent.info.status == "FINISHED"
    children = _children(client, parent.info.run_id)
    done = [c for c in children if c.info.status == "FINISHED"]
    assert sorted(c.data.params["x"] for c in done) == ["0.1", "0.2", "0.3", "0.4", "0.5"]  # each exactly once
    assert kept <= {c.info.run_id for c in done}  # what had finished was kept, not run again
    assert all(c.info.status in ("FINISHED", "FAILED", "KILLED") for c in children)  # nothing left RUNNING
    listed = json.loads(subprocess.run([sys.executable, "-m", "runner", "runs", "list", "--json", "--limit", "50"],
                                       capture_output=True, text=True).stdout)
    assert not [r for r in listed if r["status"] == "RUNNING"]


@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["", "started-with-SIGINT-ignored"])
def test_ctrl_c_stops_the_trials_and_ends_the_parent_killed(quadratic, _work_in_tmp, sigint_ignored):
    # (A background job of a script, `cmd &`, starts with SIGINT ignored; Python keeps that.)
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    proc = subprocess.Popen([sys.executable, "-m", "runner", "sweep", str(quadratic), "-P", "x=0.1,0.2,0.3",
                             "-P", "secs=60", "--max-parallel", "2", "--env-manager", "local"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=ignore)
    client = _client(_work_in_tmp)
    deadline = time.monotonic() + 120
    while len(client.search_runs(["0"], "attributes.status = 'RUNNING'")) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)  # the parent and two trials
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    runs = client.search_runs(["0"])
    assert sorted(r.info.status for r in runs) == ["KILLED", "KILLED", "KILLED"], stderr


def test_sweep_config_file_and_the_api(quadratic, _work_in_tmp):
    import runner

    config = _work_in_tmp / "sweep.yaml"
    config.write_text("method: grid\nmetric: loss\ngoal: minimize\nmax_parallel: 2\n"
                      "parameters:\n  x: [0.2, 0.3, 0.9]\n  y: 0\n")
    result = runner.sweep(str(quadratic), config=config, env_manager="local")
    assert result.succeeded and len(result.trials) == 3
    assert result.best.parameters["x"] == "0.3" and result.best.metric == pytest.approx(0.0)
    parent = _client(_work_in_tmp).get_run(result.parent_run_id)
    assert parent.data.tags["mlproject.sweep.best_run_id"] == result.best.run_id
    config.write_text("method: grid\nparameters:\n  x: {a: 1}\n")
    broken = _sweep(str(quadratic), "--config", str(config))
    assert_clean_error(broken, 2, "sweep.yaml")
    with pytest.raises(runner.UsageError) as raised:
        runner.sweep(str(quadratic), parameters={"x": "loguniform(0,1)"}, method="random")
    assert "0 < low" in raised.value.message


def test_optuna_gets_close_to_a_known_minimum_and_resumes(quadratic, _work_in_tmp):
    """loss = (x - 0.3)^2 over x in [-1, 1]: the search is killed halfway, resumed, and ends near x = 0.3."""
    log = _work_in_tmp / "optuna.err"
    args = [str(quadratic), "-P", "x=uniform(-1,1)", "--method", "optuna", "--metric", "loss", "--max-runs", "14",
            "--seed", "3", "--max-parallel", "2", "--env-manager", "local"]
    with open(log, "w") as stderr_file:
        proc = subprocess.Popen([sys.executable, "-m", "runner", "sweep", *args], stdout=subprocess.DEVNULL,
                                stderr=stderr_file, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if sum(line.startswith("trial ") and " FINISHED " in line for line in log.read_text().splitlines()) >= 5:
            break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    sweep_id = _sweep_id(log.read_text())
    resumed = _sweep("--resume", sweep_id)
    assert resumed.returncode == 0, resumed.stderr
    client = _client(_work_in_tmp)
    parent = client.search_runs(["0"], f"tags.`mlproject.sweep.id` = '{sweep_id}'")[0]
    finished = [c for c in _children(client, parent.info.run_id) if c.info.status == "FINISHED"]
    assert len(finished) == 14  # max_runs in all, across the kill
    best = min(c.data.metrics["loss"] for c in finished)
    assert best < 0.02 and parent.data.metrics["loss"] == pytest.approx(best)
    assert (Path(os.environ["MLPROJECT_HOME"]) / "sweeps" / sweep_id / "optuna.log").is_file()  # the study, kept
    no_metric = _sweep(str(quadratic), "-P", "x=uniform(-1,1)", "--method", "optuna")
    assert_clean_error(no_metric, 2, "--metric")


def test_runs_cancel_of_the_parent_stops_the_sweep(quadratic, _work_in_tmp):
    proc = subprocess.Popen([sys.executable, "-m", "runner", "sweep", str(quadratic), "-P", "x=0.1,0.2", "-P", "secs=60",
                             "--max-parallel", "2", "--env-manager", "local"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    client = _client(_work_in_tmp)
    deadline = time.monotonic() + 120
    while len(client.search_runs(["0"], "attributes.status = 'RUNNING'")) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    parent = client.search_runs(["0"], "tags.`mlproject.sweep.id` != ''")[0].info.run_id
    cancelled = subprocess.run([sys.executable, "-m", "runner", "runs", "cancel", parent], capture_output=True, text=True)
    assert cancelled.returncode == 0 and "KILLED" in cancelled.stderr, cancelled.stderr
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert sorted(r.info.status for r in client.search_runs(["0"])) == ["KILLED", "KILLED", "KILLED"]


def test_optuna_trials_a_killed_driver_left_unrecorded_take_no_place(tmp_path):
    """A driver killed inside ask() leaves the study a trial the sweep never recorded: the sweep
    counts its own trials, so a resumed sweep still runs max_runs of them."""
    from runner.sweeps.search import SearchSettings, make_search
    from runner.sweeps.space import parse_space

    settings = SearchSettings(parse_space({"x": "uniform(-1,1)"}), 3, 0, "loss", "minimize")
    killed = make_search("optuna", settings)
    killed.open(tmp_path, "sweep-t")
    killed.study.ask()  # type: ignore[attr-defined]  # asked, then the driver died before recording it
    resumed = make_search("optuna", settings)
    resumed.open(tmp_path, "sweep-t")
    asked = [resumed.ask(known) for known in range(4)]
    assert [trial is not None for trial in asked] == [True, True, True, False]
    assert len({trial.parameters["x"] for trial in asked[:3]}) == 3
