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


def test_a_thousand_trial_sweep_on_slurm_with_a_node_lost_midway_runs_each_trial_once(tmp_path, mlproject_home,
                                                                                      _work_in_tmp):
    """#27: 1,000 trials of one second as a throttled job array on the two-node test cluster (33
    tasks carrying up to 31 trials each); n2's slurmd is SIGKILLed once 300 have finished, and
    returned once Slurm has declared it down (or after 120 s). Every trial ends FINISHED exactly
    once; the trials of the tasks the lost node took down (those running and those waiting their
    turn in them) are retried as tagged attempts; the parent is FINISHED; the sweep exits 0."""
    import json
    import os
    from collections import Counter

    from clusterruns import started
    from slurmcluster import SlurmCluster

    trials = 1000
    project = tmp_path / "project"
    project.mkdir()
    (project / "MLproject").write_text("name: big\nentry_points:\n  main:\n    parameters:\n      x: {type: int, default: 0}\n"
                                       "    command: \"sleep 1; echo x={x}\"\n")
    for cluster in started(SlurmCluster()):
        env = {**os.environ, **cluster.env}
        err = tmp_path / "sweep.err"
        with cluster.node_timeout(5), open(err, "w") as said:
            proc = subprocess.Popen([sys.executable, "-m", "runner", "sweep", str(project), "-b", "slurm",
                                     "-P", "x=" + ",".join(map(str, range(trials))), "--env-manager", "local",
                                     "--retries", "2", "--max-parallel", "8"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=said, start_new_session=True)
            lost_at = None
            deadline = time.monotonic() + 1800
            try:
                while proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(2)
                    done = err.read_text().count(" FINISHED in ")
                    if lost_at is None and done >= 300:
                        cluster.lose_node("n2")
                        lost_at = time.monotonic()
                    elif lost_at is not None and lost_at > 0 and (_down(cluster, "n2") or time.monotonic() - lost_at > 120):
                        cluster.return_node("n2", busy_ok=True)  # (the sweep's tasks go on meanwhile)
                        cluster.return_to_service()
                        lost_at = -1.0
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, 9)
        assert lost_at == -1.0, "the sweep ended before n2 was lost and returned"
        assert proc.returncode == 0, err.read_text()[-3000:]
        listed = subprocess.run([sys.executable, "-m", "runner", "runs", "list", "--json", "--limit", "100000"],
                                env=env, capture_output=True, text=True)
        rows = [row for row in json.loads(listed.stdout) if row["backend"] == "slurm"]
        finished = Counter(row["parameters"]["x"] for row in rows if row["status"] == "FINISHED")
        assert len(finished) == trials and set(finished.values()) == {1}, Counter(finished.values())
        ended_by_the_node = {row["id"] for row in rows if row["status"] != "FINISHED"}
        with sqlite3.connect(_work_in_tmp / "mlflow.db") as db:
            retry_of = {value for (value,) in db.execute("SELECT value FROM tags WHERE key = 'mlproject.retry.of'")}
        assert retry_of == ended_by_the_node, (ended_by_the_node, retry_of)  # (each retried, as a tagged attempt)
        assert f"{trials}/{trials} trials finished" in err.read_text()


def _down(cluster, node: str) -> bool:
    """Whether Slurm has declared `node` down (its jobs end NODE_FAIL from then on)."""
    return cluster.command("sinfo", "-h", "-n", node, "-o", "%T").stdout.strip().startswith("down")
