"""GPUs handed out to runs on this machine (runner.gpus): each run or trial its own devices,
never one device to two at once, the rest waiting. This machine has no GPU: the devices are
named (`--gpus a,b,c`), which is what the assignment is checked with; the command reports what
it was given and when it ran."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import assert_clean_error

# The command writes, per run, the devices it saw and when it started and ended.
REPORTER = """
    name: devices
    entry_points:
      main:
        parameters:
          x: {type: float, default: 0}
          secs: {type: float, default: 0.6}
        command: "python report.py {x} {secs}"
"""
REPORT_PY = """
    import json, os, sys, time
    started = time.time()
    time.sleep(float(sys.argv[2]))
    with open(os.path.join(os.environ["REPORT_DIR"], sys.argv[1] + ".json"), "w") as out:
        json.dump({"devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": started, "end": time.time()}, out)
"""


@pytest.fixture
def reporter(make_project, tmp_path, monkeypatch):
    reports = tmp_path / "reports"
    reports.mkdir()
    monkeypatch.setenv("REPORT_DIR", str(reports))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return make_project(REPORTER, {"report.py": REPORT_PY}), reports


def _reports(directory) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]


def _overlapping_pairs(reports: list[dict]):
    for i, first in enumerate(reports):
        for second in reports[i + 1:]:
            if first["start"] < second["end"] and second["start"] < first["end"]:
                yield first, second


def _most_at_once(reports: list[dict]) -> int:
    """The most commands running at one instant. Not how many others each one overlapped: a
    trial that started late can overlap the four beside it and the sixth that took a device
    freed before it ended, without six ever running at once."""
    return max(sum(1 for other in reports if other["start"] <= report["start"] < other["end"])
               for report in reports)


def _assert_never_shared(reports: list[dict], pool: set[str], per_run: int) -> None:
    for report in reports:
        devices = report["devices"].split(",")
        assert len(devices) == per_run and len(set(devices)) == per_run and set(devices) <= pool, report
    for first, second in _overlapping_pairs(reports):
        assert not set(first["devices"].split(",")) & set(second["devices"].split(",")), (first, second)


@pytest.mark.parametrize("per_trial", [1, 2])
def test_a_sweep_gives_each_trial_its_own_devices(reporter, _work_in_tmp, per_trial):
    project, reports = reporter
    pool = ["a", "b", "c", "d", "e"]
    done = subprocess.run([sys.executable, "-m", "runner", "sweep", str(project), "-P", "x=1,2,3,4,5,6",
                           "--env-manager", "local", "--max-parallel", "6", "--gpus", ",".join(pool),
                           "--gpus-per-trial", str(per_trial)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    found = _reports(reports)
    assert len(found) == 6
    _assert_never_shared(found, set(pool), per_trial)
    at_once = len(pool) // per_trial  # 5 trials of 1 device, or 2 of 2 (the fifth device stays free)
    assert f"{at_once} trial(s) at once" in done.stderr, done.stderr
    # They did run side by side, up to what the devices allow (each command sleeps 0.6 s).
    assert any(True for _ in _overlapping_pairs(found))
    assert _most_at_once(found) <= at_once
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").search_runs(["0"], "tags.`mlproject.gpus` != ''")
    assert len(runs) == 6
    assert sorted(r.data.tags["mlproject.gpus"] for r in runs) == sorted(r["devices"] for r in found)


def test_concurrent_api_runs_wait_for_a_free_device(reporter, _work_in_tmp):
    """Two runs from threads of one program and one from another process, one device between
    them: one at a time, in some order, each given it."""
    project, reports = reporter
    import runner

    notes: list[str] = []

    def one(x: int) -> None:
        runner.run(str(project), parameters={"x": x, "secs": 0.8}, env_manager="local", gpus=1, gpu_devices=["g0"],
                   notify=notes.append)

    other = subprocess.Popen([sys.executable, "-m", "runner", "run", str(project), "-P", "x=3", "-P", "secs=0.8",
                              "--env-manager", "local", "--gpus", "g0"], stderr=subprocess.PIPE, text=True)
    threads = [threading.Thread(target=one, args=(x,)) for x in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert other.wait(120) == 0, other.stderr.read()
    found = _reports(reports)
    assert len(found) == 3 and all(report["devices"] == "g0" for report in found)
    assert list(_overlapping_pairs(found)) == []
    waited = [note for note in notes if note.startswith("waiting for 1 free GPU(s) of g0")]
    assert waited, notes


def test_a_run_waiting_for_a_device_is_cancelled_cleanly(reporter, _work_in_tmp, mlproject_home):
    """Ctrl-C while a run waits for a device another run holds: it ends KILLED at once, and
    its command never starts."""
    project, reports = reporter
    holder = subprocess.Popen([sys.executable, "-m", "runner", "run", str(project), "-P", "x=1", "-P", "secs=30",
                               "--env-manager", "local", "--gpus", "only"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (mlproject_home / "gpus" / "only.lock").exists() or _free("only", mlproject_home):
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.1)
        waiter = subprocess.Popen([sys.executable, "-m", "runner", "run", str(project), "-P", "x=2",
                                   "--env-manager", "local", "--gpus", "only"], stderr=subprocess.PIPE, text=True)
        line = waiter.stderr.readline()
        while "waiting for 1 free GPU(s)" not in line:
            assert line, "the second run never said it waits"
            line = waiter.stderr.readline()
        waiter.send_signal(2)
        assert waiter.wait(15) == 130
    finally:
        holder.terminate()
        holder.wait(30)
    assert not (reports / "2.0.json").exists()
    listed = json.loads(subprocess.run([sys.executable, "-m", "runner", "runs", "list", "--json"], capture_output=True,
                                       text=True, timeout=60, check=True).stdout)
    assert sorted(row["status"] for row in listed) == ["KILLED", "KILLED"]


def _free(device: str, home) -> bool:
    import fcntl

    with open(home / "gpus" / f"{device}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def test_more_devices_per_trial_than_there_are_is_one_clear_error(reporter, _work_in_tmp, mlproject_home):
    project, _ = reporter
    done = subprocess.run([sys.executable, "-m", "runner", "sweep", str(project), "-P", "x=1,2", "--env-manager",
                           "local", "--gpus", "a", "--gpus-per-trial", "2"], capture_output=True, text=True, timeout=120)
    assert_clean_error(done, 2, "asks for 2 GPU(s) and this machine has only 1 (a)")
    # No GPU on this machine and none named: said before anything is created.
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = os.path.dirname(sys.executable) + ":/usr/bin:/bin"  # (no nvidia-smi here)
    done = subprocess.run([sys.executable, "-m", "runner", "run", str(project), "--env-manager", "local",
                           "--gpus-per-run", "1"], capture_output=True, text=True, timeout=120, env=env)
    assert_clean_error(done, 2, "asks for 1 GPU(s) and this machine has none")
    for bad in (["--gpus", "a,a"], ["--gpus", "a;b"], ["--gpus-per-run", "-1", "--gpus", "a"]):
        done = subprocess.run([sys.executable, "-m", "runner", "run", str(project), "--env-manager", "local", *bad],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stderr.startswith("error:") and "\nhint:" in done.stderr, (bad, done.stderr)
    assert not (mlproject_home / "ledger.db").exists() or json.loads(subprocess.run(
        [sys.executable, "-m", "runner", "runs", "list", "--json"], capture_output=True, text=True, timeout=60).stdout) == []


def test_devices_default_to_those_cuda_visible_devices_names(reporter, _work_in_tmp, monkeypatch):
    project, reports = reporter
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-7,GPU-9")
    done = subprocess.run([sys.executable, "-m", "runner", "sweep", str(project), "-P", "x=1,2,3", "--env-manager",
                           "local", "--gpus-per-trial", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    found = _reports(reports)
    assert len(found) == 3
    _assert_never_shared(found, {"GPU-7", "GPU-9"}, 1)
