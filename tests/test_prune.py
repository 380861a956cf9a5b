"""Early stopping (`mlproject sweep --prune`): real sweeps whose trials log a metric with a step,
read back from the MLflow store as they run; the trials that fall behind are stopped."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from conftest import assert_clean_error
from test_sweeps import _sweep, _sweep_id

# loss at step s is x + 1/(s+1): a larger x is behind at every step. 8 steps, 0.25 s apart.
CURVES = """
    name: curves
    entry_points:
      main:
        parameters:
          x: {type: float, default: 0}
        command: "python curve.py {x}"
"""
CURVE_PY = """
    import sys, time
    import mlflow
    x = float(sys.argv[1])
    for step in range(8):
        mlflow.log_metric("loss", x + 1 / (step + 1), step=step)
        time.sleep(0.25)
"""
GOOD, BAD = ["0.1", "0.2", "0.3"], ["0.9", "1.0", "1.1"]


@pytest.fixture
def curves(make_project):
    return make_project(CURVES, {"curve.py": CURVE_PY})


def _trials(sweep_id: str) -> dict[str, dict]:
    """x -> the trial's row in the ledger (status, reason, run ID), through `runs list --json`."""
    shown = subprocess.run([sys.executable, "-m", "runner", "sweep", "show", sweep_id], capture_output=True,
                           text=True, timeout=60, check=True).stdout
    rows = json.loads(subprocess.run([sys.executable, "-m", "runner", "runs", "list", "--json", "--limit", "100"],
                                     capture_output=True, text=True, timeout=60, check=True).stdout)
    by_id = {row["id"]: row for row in rows}
    trials = {}
    for line in shown.splitlines():
        cells = line.split()
        if not cells or not cells[0].isdigit():  # (the sweep's own lines, the header)
            continue
        x = next(cell.split("=", 1)[1] for cell in cells if cell.startswith("x="))
        trials[x] = {"shown": cells[1], **by_id.get(cells[-1], {"status": cells[1], "id": None})}  # (not started: no run)
    return trials


def test_trials_that_fall_behind_are_pruned_not_failed(curves, _work_in_tmp):
    done = _sweep(str(curves), "-P", f"x={','.join(GOOD + BAD)}", "--metric", "loss", "--prune", "median",
                  "--max-parallel", "1", "--env-manager", "local")
    assert done.returncode == 0, done.stderr
    sweep_id = _sweep_id(done.stderr)
    trials = _trials(sweep_id)
    for x in GOOD:
        assert trials[x]["status"] == "FINISHED" and trials[x]["shown"] == "FINISHED", trials[x]
    for x in BAD:
        trial = trials[x]
        assert trial["status"] == "KILLED", trial
        step = int(trial["shown"].split("@")[1])
        assert trial["shown"].startswith("PRUNED@") and trial["reason"] == f"pruned at step {step}", trial
        assert step < 7  # stopped before its end
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    for x in BAD:
        run = client.get_run(trials[x]["id"])
        assert run.info.status == "KILLED"
        assert run.data.tags["mlproject.sweep.pruned_at"] == trials[x]["shown"].split("@")[1]
        assert len(client.get_metric_history(run.info.run_id, "loss")) < 8
    parent = client.search_runs(["0"], f"tags.`mlproject.sweep.id` = '{sweep_id}'")[0]
    assert parent.info.status == "FINISHED"  # (pruned trials are not failures)
    assert "3/6 trials finished" in done.stderr.splitlines()[-1], done.stderr


def test_a_resumed_sweep_keeps_its_pruning_decisions(curves, _work_in_tmp):
    """The driver SIGKILLed after it pruned a trial: resumed, that trial stays pruned (same run,
    not run again), and the trials after it are still held to the finished ones."""
    values = GOOD + BAD + ["1.2"]
    driver = subprocess.Popen([sys.executable, "-m", "runner", "sweep", str(curves), "-P", f"x={','.join(values)}",
                               "--metric", "loss", "--prune", "median", "--max-parallel", "1", "--env-manager", "local"],
                              stderr=subprocess.PIPE, text=True)
    said = []
    for line in driver.stderr:  # (the first pruned trial's end recorded: "trial 4 (4/7) PRUNED@2 in ...")
        said.append(line)
        if re.match(r"trial \d+ \(\d+/\d+\) PRUNED@", line):
            break
    time.sleep(0.5)  # (into the next trial)
    driver.send_signal(signal.SIGKILL)
    driver.wait(30)
    sweep_id = _sweep_id("".join(said))
    before = _trials(sweep_id)
    first_pruned = next(x for x in BAD if before[x]["shown"].startswith("PRUNED@"))
    done = _sweep("--resume", sweep_id)
    assert done.returncode == 0, done.stderr
    after = _trials(sweep_id)
    assert after[first_pruned]["id"] == before[first_pruned]["id"], (before, after)
    assert after[first_pruned]["shown"] == before[first_pruned]["shown"]
    assert all(after[x]["status"] == "FINISHED" for x in GOOD)
    assert all(after[x]["shown"].startswith("PRUNED@") for x in BAD + ["1.2"]), after


def test_optuna_prunes_with_successive_halving(curves, _work_in_tmp):
    done = _sweep(str(curves), "-P", "x=uniform(0,2)", "--method", "optuna", "--max-runs", "8", "--seed", "3",
                  "--metric", "loss", "--prune", "asha", "--max-parallel", "1", "--env-manager", "local")
    assert done.returncode == 0, done.stderr
    trials = _trials(_sweep_id(done.stderr))
    pruned = [t for t in trials.values() if t["shown"].startswith("PRUNED@")]
    assert pruned and all(t["status"] == "KILLED" and t["reason"].startswith("pruned at step") for t in pruned)
    assert all(t["status"] == "FINISHED" for t in trials.values() if t not in pruned)


def test_prune_asks_for_what_it_needs(curves, _work_in_tmp):
    assert_clean_error(_sweep(str(curves), "-P", "x=1,2", "--prune", "median"), 2, "--prune median needs --metric")
    assert_clean_error(_sweep(str(curves), "-P", "x=1,2", "--prune", "asha", "--metric", "loss"), 2,
                       "--prune asha needs --method optuna")
