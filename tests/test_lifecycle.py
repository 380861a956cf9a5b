"""The run lifecycle with real processes: signals, grandchildren, cancel, threads."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import runner
from conftest import pid_alive

# A command that leaves a child and a grandchild running, records their PIDs,
# and then waits. `$$` is the shell that runs the command.
TREE = """
entry_points:
  main:
    parameters:
      ignore_term: {type: bool, default: false}
    command: "bash tree.sh {ignore_term}"
"""
TREE_SH = """
if [ "$1" = "True" ] || [ "$1" = "true" ]; then trap '' TERM; fi
sleep 300 & echo $! >> pids
( sleep 300 & echo $! >> pids; wait ) & echo $! >> pids
echo $$ >> pids
echo started
wait
"""


def _pids(root: Path, count: int = 4, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = root / "pids"
        if path.exists():
            lines = path.read_text().split()
            if len(lines) >= count:
                return [int(p) for p in lines]
        time.sleep(0.05)
    raise AssertionError("the command did not start its processes")


def _wait_gone(pids: list[int], timeout: float = 5) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if pid_alive(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if pid_alive(p)]


def _start_runner(root: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own group, like a shell job; killpg reaches only it
    )


@pytest.mark.parametrize(
    "signum,code,to_group",
    [
        (signal.SIGINT, 130, True),  # Ctrl-C: the terminal signals the foreground group
        (signal.SIGINT, 130, False),
        (signal.SIGTERM, 143, False),
        (signal.SIGHUP, 129, False),
    ],
)
def test_signal_stops_whole_tree(make_project, signum, code, to_group):
    root = make_project(TREE, {"tree.sh": TREE_SH})
    proc = _start_runner(root)
    pids = _pids(root)
    (os.killpg if to_group else os.kill)(proc.pid, signum)
    proc.wait(timeout=15)
    assert proc.returncode == code, proc.stderr.read()
    assert _wait_gone(pids) == []
    assert "Traceback" not in proc.stderr.read().decode()


def test_term_ignoring_child_is_killed_after_grace(make_project):
    root = make_project(TREE, {"tree.sh": TREE_SH})
    proc = _start_runner(root, "-P", "ignore_term=true")
    pids = _pids(root)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)
    elapsed = time.monotonic() - started
    assert proc.returncode == 143
    assert 1.5 <= elapsed < 8, elapsed  # MLPROJECT_KILL_GRACE=2 in tests
    assert _wait_gone(pids) == []


def test_background_leftovers_are_stopped_after_normal_exit(make_project, cli):
    root = make_project("entry_points:\n  main:\n    command: 'sleep 300 & echo $! > pids; echo done'\n")
    started = time.monotonic()
    result = cli("run", str(root), "--env-manager", "local")
    assert result.returncode == 0 and result.stdout == "done\n"
    assert time.monotonic() - started < 10
    assert _wait_gone([int((root / "pids").read_text())]) == []


def test_api_async_status_and_cancel(make_project):
    root = make_project(TREE, {"tree.sh": TREE_SH})
    submitted = runner.run(str(root), env_manager="local", synchronous=False, stream_output=False)
    assert len(submitted.run_id) == 32
    pids = _pids(root)
    assert submitted.get_status() == "RUNNING"
    submitted.cancel()
    assert submitted.get_status() == "KILLED"
    assert submitted.wait() is False
    assert submitted.exit_code == 128 + signal.SIGTERM
    assert _wait_gone(pids) == []
    assert "started" in submitted.log_path.read_text()


def test_api_synchronous_success_and_failure(make_project):
    ok = make_project("entry_points:\n  main:\n    parameters:\n      x: float\n    command: 'echo {x}'\n")
    submitted = runner.run(str(ok), parameters={"x": 0.4}, env_manager="local", stream_output=False)
    assert submitted.get_status() == "FINISHED" and submitted.exit_code == 0
    assert submitted.log_path.read_text() == "0.4\n"
    bad = make_project("entry_points:\n  main:\n    command: 'exit 3'\n")
    with pytest.raises(runner.RunFailedError) as info:
        runner.run(str(bad), env_manager="local", stream_output=False)
    assert info.value.exit_code == 3
    assert info.value.submitted_run.get_status() == "FAILED"


def test_api_errors_are_runner_errors(make_project):
    root = make_project("entry_points:\n  main:\n    parameters:\n      x: float\n    command: 'echo {x}'\n")
    with pytest.raises(runner.ParameterError):
        runner.run(str(root), parameters={"x": "nope"}, env_manager="local")
    with pytest.raises(runner.RunnerError):
        runner.run(str(root), entry_point="missing", env_manager="local")


def test_twenty_concurrent_runs_in_threads(make_project):
    root = make_project(
        "entry_points:\n  main:\n    parameters:\n      i: int\n    command: 'sleep 0.2; echo run-{i}; exit $(( {i} % 3 == 0 ? 0 : 0 ))'\n"
    )
    results: dict[int, runner.SubmittedRun] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results[i] = runner.run(str(root), parameters={"i": i}, env_manager="local", stream_output=False)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(results) == list(range(20))
    assert len({r.run_id for r in results.values()}) == 20
    for i, submitted in results.items():
        assert submitted.get_status() == "FINISHED"
        assert submitted.log_path.read_text() == f"run-{i}\n"


def test_api_cancel_from_another_thread_while_waiting(make_project):
    root = make_project(TREE, {"tree.sh": TREE_SH})
    submitted = runner.run(str(root), env_manager="local", synchronous=False, stream_output=False)
    pids = _pids(root)
    threading.Timer(0.2, submitted.cancel).start()
    assert submitted.wait() is False
    assert submitted.get_status() == "KILLED"
    assert _wait_gone(pids) == []
