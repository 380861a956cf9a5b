"""Load (`make stress`, not part of `make test`): 50 parallel runs of one git project
from a cold store while `env gc` and `cache gc` run in a loop beside them.

Expected: 50 successes, one clone, 50 FINISHED records in the ledger and in
MLflow, no run left RUNNING, no temporary build or checkout left behind.
"""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from gitservers import git

pytestmark = pytest.mark.stress

RUNS = 50


def test_fifty_parallel_runs_from_a_cold_store_with_gc_racing(tmp_path, mlproject_home, _work_in_tmp, cli):
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", "-b", "main", str(repo))
    (repo / "MLproject").write_text(
        "name: load\npython_env: python_env.yaml\nentry_points:\n  main:\n    parameters:\n      i: int\n"
        "    command: \"python -c 'import six, sys; print(\\\"run\\\", sys.argv[1], six.__version__)' {i}\"\n")
    (repo / "python_env.yaml").write_text("python: '3.11'\ndependencies: [six==1.16.0]\n")
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "load", cwd=repo)
    commit = git("rev-parse", "HEAD", cwd=repo)

    stop = threading.Event()
    gc_rounds = []

    def collect_garbage() -> None:
        while not stop.is_set():
            cli("env", "gc", "--older-than", "0", timeout=120)
            cli("cache", "gc", "--older-than", "0", timeout=120)
            gc_rounds.append(1)

    collector = threading.Thread(target=collect_garbage, daemon=True)
    collector.start()
    started = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "runner", "run", f"file://{repo}", "-v", commit, "-P", f"i={i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(RUNS)]
    outputs = [proc.communicate(timeout=900) for proc in procs]
    elapsed = time.monotonic() - started
    stop.set()
    collector.join(300)

    failures = [(proc.returncode, err[-500:]) for proc, (_, err) in zip(procs, outputs) if proc.returncode != 0]
    assert failures == [], failures
    assert sorted(int(out.split()[1]) for out, _ in outputs) == list(range(RUNS))
    with sqlite3.connect(mlproject_home / "ledger.db") as conn:
        statuses = [row[0] for row in conn.execute("select status from runs")]
    assert statuses.count("FINISHED") == RUNS and len(statuses) == RUNS
    with sqlite3.connect(_work_in_tmp / "mlflow.db") as conn:
        tracked = [row[0] for row in conn.execute("select status from runs")]
    assert tracked.count("FINISHED") == RUNS and len(tracked) == RUNS
    assert not list((mlproject_home / "envs").glob(".tmp-*"))
    assert not list((mlproject_home / "git" / "checkouts").glob(".tmp-*"))
    print(f"{RUNS} runs in {elapsed:.1f} s with {len(gc_rounds)} gc rounds racing them")
