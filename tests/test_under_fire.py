"""Strikes at the named phases where the fault campaign (tests/chaos.py) found races: each
replays one deterministically through the runner's fault hook (runner/faults.py)."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from conftest import pid_alive
from procs import default_signals

SLOW = "entry_points:\n  main:\n    command: \"echo started; sleep 30\"\n"


def _statuses(home, cwd) -> tuple[list[str], list[str]]:
    with sqlite3.connect(home / "ledger.db") as ledger:
        rows = [r[0] for r in ledger.execute("select status from runs")]
    with sqlite3.connect(cwd / "mlflow.db") as store:
        tracked = [r[0] for r in store.execute("select status from runs")]
    return rows, tracked


def _marked(run_marker_prefix: bytes = b"MLPROJECT_RUN_ID=") -> list[int]:
    """Live processes that carry any run's marker (each test has its own runs only)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if any(item.startswith(run_marker_prefix) for item in environ) and pid_alive(int(pid)):
            found.append(int(pid))
    return found


def _struck_run_ends_killed(root, home, cwd, fault: str) -> None:
    """A run struck by a signal at a fault phase: the runner exits 128+N, with no traceback,
    and the run is KILLED in the ledger and in MLflow."""
    strike = fault.partition(":")[2]
    proc = subprocess.run([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "MLPROJECT_FAULT_AT": fault})
    assert proc.returncode == 128 + getattr(signal, strike), proc.stderr
    assert "Traceback" not in proc.stderr
    ledger, tracked = _statuses(home, cwd)
    assert ledger == ["KILLED"] and tracked == ["KILLED"], (ledger, tracked, proc.stderr)


def _no_process_left(deadline_s: float = 10) -> list[int]:
    deadline = time.monotonic() + deadline_s
    while (left := _marked()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.parametrize("strike", ["SIGINT", "SIGINT*2", "SIGTERM", "SIGHUP"])
def test_a_signal_while_the_command_is_being_started_is_carried_out(make_project, mlproject_home, _work_in_tmp, strike):
    """The handler used to wait on the run's lock, held by the Popen it interrupted: a hang."""
    root = make_project(SLOW)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MLPROJECT_FAULT_AT": f"launch.popen:{strike}"})
    assert time.monotonic() - started < 15, "the runner hung"
    signum = getattr(signal, strike.split("*")[0])
    assert proc.returncode == 128 + signum, proc.stderr
    assert "Traceback" not in proc.stderr
    ledger, tracked = _statuses(mlproject_home, _work_in_tmp)
    assert ledger == ["KILLED"] and tracked == ["KILLED"], (ledger, tracked, proc.stderr)
    assert _no_process_left() == []


def test_a_cancel_while_a_keeper_starts_the_command(make_project, mlproject_home, _work_in_tmp):
    """The keeper's handler (`runs cancel`, a caller's cancel()) has the same rule."""
    root = make_project(SLOW)
    script = ("import runner, sys\n"
              f"r = runner.run({str(root)!r}, env_manager='local', synchronous=False)\n"
              "r.wait(); print(r.get_status())\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MLPROJECT_FAULT_AT": "launch.popen:SIGTERM"})
    assert proc.stdout.splitlines()[-1] == "KILLED", proc.stderr  # (the command may have printed first)
    ledger, tracked = _statuses(mlproject_home, _work_in_tmp)
    assert ledger == ["KILLED"] and tracked == ["KILLED"]
    assert _no_process_left() == []


@pytest.mark.parametrize("how", ["ctrl-c", "own-end"])
def test_a_process_that_left_the_group_goes_with_the_run(make_project, mlproject_home, _work_in_tmp, how):
    """`setsid sleep 301 &` leaves the command's process group; it carries the run's marker."""
    command = "setsid sleep 301 & echo started; sleep 30" if how == "ctrl-c" else "setsid sleep 301 & echo started"
    root = make_project(f"entry_points:\n  main:\n    command: \"{command}\"\n")
    proc = subprocess.Popen([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 10
    while not _marked() and time.monotonic() < deadline:
        time.sleep(0.05)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == (130 if how == "ctrl-c" else 0), stderr
    assert _no_process_left() == [], "a process that left the group outlived its run"


def test_a_driver_killed_as_a_trial_starts_never_runs_it_twice(make_project, mlproject_home, _work_in_tmp):
    """Killed after a trial's command started but before its group was recorded: the command
    went on unseen, ended its own MLflow run FINISHED after the resume had run the trial again."""
    root = make_project("entry_points:\n  main:\n    parameters:\n      x: float\n"
                        "    command: \"python trial.py {x}\"\n",
                        {"trial.py": "import sys, time, mlflow\ntime.sleep(3)\nmlflow.log_metric('x', float(sys.argv[1]))\n"})
    first = subprocess.run([sys.executable, "-m", "runner", "sweep", str(root), "-P", "x=1,2", "--max-parallel", "1",
                            "--env-manager", "local"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "MLPROJECT_FAULT_AT": "launch.started:SIGKILL"})
    assert first.returncode == -signal.SIGKILL, first.stderr
    sweep_id = next(line.split()[1].rstrip(":") for line in first.stderr.splitlines() if "trial(s) to run" in line)
    resumed = subprocess.run([sys.executable, "-m", "runner", "sweep", "--resume", sweep_id], capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    time.sleep(4)  # longer than the killed trial's command would have run
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    finished = [r.data.params["x"] for r in client.search_runs(["0"], "attributes.status = 'FINISHED'")
                if "x" in r.data.params]
    assert sorted(finished) == ["1", "2"], finished  # each trial exactly once
    assert _no_process_left() == []


def test_an_interrupt_just_after_the_run_is_created_ends_it(make_project, mlproject_home, _work_in_tmp):
    """Ctrl-C right after the store's COMMIT: a ROLLBACK outside any transaction raised a store
    error that hid the interrupt (exit 2) and left the created MLflow run RUNNING for ever."""
    root = make_project(SLOW)
    proc = subprocess.run([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MLPROJECT_FAULT_AT": "tracking.created:SIGINT"})
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr
    assert subprocess.run([sys.executable, "-m", "runner", "runs", "list"], capture_output=True).returncode == 0
    with sqlite3.connect(_work_in_tmp / "mlflow.db") as store:
        tracked = [r[0] for r in store.execute("select status from runs")]
    assert tracked and "RUNNING" not in tracked, tracked


def test_a_caller_whose_keeper_died_is_told_and_returns(make_project, mlproject_home, _work_in_tmp):
    """A keeper SIGKILLed while its caller waits: the ended keeper is a zombie until the caller
    reaps it, and was taken for a live runner, so the caller followed the run for ever."""
    root = make_project(SLOW)
    script = ("import runner\n"
              f"r = runner.run({str(root)!r}, env_manager='local', synchronous=False)\n"
              "print('waiting', flush=True); print(r.wait(), r.get_status(), flush=True)\n")
    caller = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while (line := caller.stdout.readline()) and line.strip() != "waiting":
        pass
    keepers = [int(pid) for pid in filter(str.isdigit, os.listdir("/proc"))
               if b"runner.keeper" in open(f"/proc/{pid}/cmdline", "rb").read()
               and int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]) == caller.pid]
    assert len(keepers) == 1
    os.kill(keepers[0], signal.SIGKILL)
    out, err = caller.communicate(timeout=30)  # (before the fix: no answer, ever)
    assert out.strip().splitlines()[-1] == "False FAILED", (out, err)
    assert _no_process_left() == []


@pytest.mark.parametrize("strike", ["SIGINT", "SIGINT*2", "SIGTERM", "SIGHUP"])
def test_a_signal_while_the_runner_imports_exits_quietly(make_project, mlproject_home, _work_in_tmp, strike):
    """Struck while `runner/__init__.py` was imported, before the CLI held the signals: a
    KeyboardInterrupt traceback (`20261204:272`); and a held signal's SystemExit raised inside a
    class body came out as `RuntimeError: Error calling __set_name__` (`20261204:752`)."""
    root = make_project(SLOW)
    # As from a terminal: under nohup (a CI runner) SIGHUP arrives ignored, and an ignored
    # signal stays ignored while the runner starts.
    proc = subprocess.run([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MLPROJECT_FAULT_AT": f"import:{strike}"}, preexec_fn=default_signals)
    assert proc.returncode == 128 + getattr(signal, strike.split("*")[0]), proc.stderr
    assert proc.stderr == "" and proc.stdout == ""
    assert not (mlproject_home / "ledger.db").exists()  # nothing of a run existed


@pytest.mark.parametrize("raised", ["KeyboardInterrupt()", "RuntimeError('Error calling __set_name__')"])
def test_a_ctrl_c_before_the_signals_are_held_exits_quietly(raised):
    """A Ctrl-C in the instant between the package's first line and `startup.hold()` came out as
    a KeyboardInterrupt traceback through `runner/__init__.py` (exit -2): found by random SIGINTs
    at 0-15 ms of a start, 50 in 300, on 2026-12-05. Python raises it from whatever import is
    under way; here a finder raises it where `runner.startup` is looked up (and as 3.11 wraps one
    that lands in an enum member's creation)."""
    code = ("import sys\n"
            "class Strike:\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name == 'runner.startup':\n"
            f"            error = {raised}\n"
            "            if not isinstance(error, KeyboardInterrupt):\n"
            "                raise error from KeyboardInterrupt()\n"
            "            raise error\n"
            "sys.meta_path.insert(0, Strike())\n"
            "sys.argv[0] = '-m'  # (as during `python -m runner`'s package import)\n"
            "import runner\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "")


def test_a_ctrl_c_that_left_the_import_lock_held_exits_quietly(make_project, mlproject_home, _work_in_tmp):
    """Found by 400 random SIGINTs at 0-15 ms of `python -m runner run` (2026-12-05): one runner
    ran its command and never ended, not even on SIGTERM. Python's own handler had raised the
    Ctrl-C inside the import system, between `_imp.acquire_lock()` and the `try` that gives the
    global import lock back, and the interrupt was lost; the run's end then waited for ever on an
    import in another thread. Replayed here by the state it leaves: the lock held as the package
    starts. Before the fix this hangs; now the command exits 130 at once, with no run."""
    root = make_project(SLOW)
    code = ("import _imp, runpy, sys\n"
            f"sys.argv = ['-m', 'run', {str(root)!r}, '--env-manager', 'local']\n"
            "_imp.acquire_lock()\n"
            "runpy._run_module_as_main('runner')\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail("the runner hung with the import lock left held")
    assert (proc.returncode, out, err) == (130, "", "")
    assert not (mlproject_home / "ledger.db").exists() or _statuses(mlproject_home, _work_in_tmp)[0] == []


def test_a_handler_that_lands_inside_the_import_system_waits_until_it_is_out():
    """A raising handler struck in importlib's own frames is carried out a moment later, where its
    exception reaches the code it interrupted: given such a frame (the finder's caller, while the
    global import lock is held), it returns, and the KeyboardInterrupt follows once out."""
    code = ("import _imp, signal, sys, time\n"
            "from runner import startup\n"
            "handler = startup.where_safe(signal.default_int_handler)\n"
            "signal.signal(signal.SIGINT, handler)  # (the signal is delivered again to its handler)\n"
            "class Finder:\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name == 'not_a_module_anywhere':\n"
            "            assert _imp.lock_held()\n"
            "            handler(signal.SIGINT, sys._getframe(1))  # (importlib's _find_spec)\n"
            "            print('deferred', flush=True)\n"
            "sys.meta_path.insert(0, Finder())\n"
            "try:\n"
            "    import not_a_module_anywhere\n"
            "except ImportError:\n"
            "    pass\n"
            "try:\n"
            "    time.sleep(5)\n"
            "    print('lost')\n"
            "except KeyboardInterrupt:\n"
            "    print('raised', _imp.lock_held())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["deferred", "raised", "False"], done.stderr


@pytest.mark.parametrize("done_by", ["ignore", "exit"])
def test_a_delivery_still_due_never_kills_a_process_that_is_ending(done_by):
    """A signal put off (`where_safe`) and not delivered yet when the command is done (`ignore()`)
    or the process exits: Python hands SIGALRM back to its default as it shuts down, and the
    delivery's timer then ended a normal exit by SIGALRM (seed 20261210, strike 15: a second
    Ctrl-C during an abandoned preparation, exit -14). Reproduced with a slow finalizer."""
    code = ("import signal, time\n"
            "from runner import startup\n"
            "startup.RETRY_SECONDS = 0.2\n"
            "signal.signal(signal.SIGINT, startup.where_safe(lambda signum, frame: None))\n"
            "startup._deliver_later(signal.SIGINT)\n"
            + ("startup.ignore()\n" if done_by == "ignore" else "")
            + "class Slow:\n"
            "    def __del__(self):\n"
            "        time.sleep(0.5)  # (run as the interpreter shuts down, after its signal handlers)\n"
            "keep = Slow()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr)


@pytest.mark.parametrize("seed", [1, 2])
def test_ctrl_c_at_random_instants_of_imports_never_leaves_the_import_lock_held(seed):
    """A seeded storm: SIGINT at a random instant of each round of ~120 imports, for 8 s, through
    the handler the commands install. Python's own handler left the lock held within 30 s for
    seeds 1 and 2 (2026-12-05); through `where_safe` no round leaves it held or loses a Ctrl-C."""
    storm = os.path.join(os.path.dirname(__file__), "import_storm.py")
    done = subprocess.run([sys.executable, storm, "guarded", str(seed), "8"], capture_output=True, text=True,
                          timeout=120)
    report = json.loads(done.stdout)
    assert report["rounds"] > 20 and report["interrupted"] >= report["rounds"] - 2, report
    assert (report["lock_held"], report["lost"]) == (False, []), report


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_ctrl_c_before_the_commands_own_handlers_exits_quietly(make_project, mlproject_home, _work_in_tmp, command):
    """Between the CLI giving Ctrl-C back to Python and a command setting its own handlers,
    random SIGINTs at 0-120 ms of a start (2026-12-05) found a KeyboardInterrupt traceback from
    `_dispatch`, "aborted" followed by a death by SIGINT (exit -2, Python taking the interrupt
    for unhandled after all), and a RuntimeError from a dataclass's `__set_name__`."""
    root = make_project(SLOW)
    args = ["run", str(root)] if command == "run" else ["sweep", str(root), "--max-runs", "1"]
    proc = subprocess.run([sys.executable, "-m", "runner", *args, "--env-manager", "local"],
                          capture_output=True, text=True, timeout=60, preexec_fn=default_signals,
                          env={**os.environ, "MLPROJECT_FAULT_AT": "cli.dispatch:SIGINT"})
    assert (proc.returncode, proc.stderr) == (130, "aborted\n")


def test_a_library_that_imports_runner_keeps_its_keyboard_interrupt():
    """Only the project's own commands exit quietly on an early signal: `import runner` from a
    user's script leaves Python's handling alone."""
    code = "import signal, runner; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    # (As from a terminal: a CI job started in the background has SIGINT ignored, and Python
    # then keeps it ignored, runner or not.)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          preexec_fn=default_signals)
    assert done.stdout.strip() == "True", done.stderr


def test_a_second_ctrl_c_while_the_preparation_is_abandoned(make_project, mlproject_home, _work_in_tmp):
    """The second of two Ctrl-C landed in the cleanup of the first, or in its report: a traceback
    after "interrupted by SIGINT" (`20261204:580`)."""
    root = make_project(SLOW)
    proc = subprocess.run([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MLPROJECT_FAULT_AT": "pipeline.submit:SIGINT,pipeline.abandon:SIGINT*2"})
    err = proc.stderr
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    subprocess.run([sys.executable, "-m", "runner", "runs", "list"], capture_output=True, timeout=60, check=True)
    with sqlite3.connect(_work_in_tmp / "mlflow.db") as store:
        tracked = [r[0] for r in store.execute("select status from runs")]
    assert tracked == ["KILLED"], (tracked, err)


def test_a_signal_while_the_server_creates_the_run_ends_it_killed(make_project, mlproject_home, _work_in_tmp,
                                                                  mlflow_server):
    """SIGHUP after the creation was sent to the server and before its answer: the pending note's
    reconcile ended the run FAILED (a dead runner), where the runner had exited 129 (`20261204:929`)."""
    root = make_project(SLOW)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "MLPROJECT_FAULT_AT": "tracking.sent:SIGHUP"}
    proc = subprocess.run([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local",
                           "--experiment-name", "sent-then-hung-up"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 129, proc.stderr
    assert "Traceback" not in proc.stderr
    env.pop("MLPROJECT_FAULT_AT")
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("sent-then-hung-up")
    deadline = time.monotonic() + 60
    statuses: list[str] = []
    while time.monotonic() < deadline:  # (the note's reconcile waits until the server has the run)
        subprocess.run([sys.executable, "-m", "runner", "runs", "list"], capture_output=True, timeout=60, env=env)
        statuses = [r.info.status for r in client.search_runs([experiment.experiment_id])] if experiment else []
        if statuses and "RUNNING" not in statuses:
            break
        time.sleep(0.5)
        experiment = experiment or client.get_experiment_by_name("sent-then-hung-up")
    assert statuses == ["KILLED"], statuses
    assert not list((mlproject_home / "pending").glob("*.json"))


@pytest.mark.parametrize("strike", ["SIGINT", "SIGHUP"])
def test_a_signal_just_after_the_ledger_row_is_written_ends_it_killed(make_project, mlproject_home, _work_in_tmp,
                                                                      strike):
    """Struck between the ledger's INSERT and the code that ends the run on any way out: the
    runner exited 128+N, and the row, left RUNNING, was later recorded FAILED as a dead runner's
    (campaign seed 20261206, strikes 237, 1008, 1333, 1975: git, sweep and server runs)."""
    _struck_run_ends_killed(make_project(SLOW), mlproject_home, _work_in_tmp, f"ledger.started:{strike}")


@pytest.mark.parametrize("strike", ["SIGTERM", "SIGHUP"])
def test_a_signal_once_all_is_ready_but_before_the_command_starts_ends_the_run_killed(
        make_project, mlproject_home, _work_in_tmp, strike):
    """Struck after the environment was ready and before the command was started (while its
    command line was made or its artifacts listed): that stretch was outside the code that ends
    the run on any way out, and the row was left RUNNING (campaign seed 20261207, strike 478)."""
    _struck_run_ends_killed(make_project(SLOW), mlproject_home, _work_in_tmp, f"local.launching:{strike}")
    assert _no_process_left() == []


@pytest.mark.parametrize("strike", ["SIGINT", "SIGHUP"])
def test_a_signal_while_a_sweep_opens_its_parent_ends_the_parent_killed(make_project, mlproject_home, _work_in_tmp,
                                                                        strike):
    """Struck after the parent's rows were written and before the driver's loop took its signals
    over: the driver exited 128+N and the parent run stayed RUNNING, in the ledger and in MLflow,
    until a later command called it a dead runner's (campaign seed 20261207, strike 447)."""
    root = make_project("entry_points:\n  main:\n    parameters:\n      x: float\n"
                        "    command: \"echo {x}\"\n")
    proc = subprocess.run([sys.executable, "-m", "runner", "sweep", str(root), "-P", "x=1,2", "--env-manager", "local"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MLPROJECT_FAULT_AT": f"sweep.parent:{strike}"})
    assert proc.returncode == 128 + getattr(signal, strike), proc.stderr
    assert "Traceback" not in proc.stderr
    ledger, tracked = _statuses(mlproject_home, _work_in_tmp)
    assert ledger == ["KILLED"] and tracked == ["KILLED"], (ledger, tracked, proc.stderr)  # the parent; no trial ran
    assert not list((mlproject_home / "pending").glob("*.json"))


@pytest.mark.parametrize("strike", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_once_the_work_is_recorded_keeps_the_exit_code(make_project, mlproject_home, _work_in_tmp, strike):
    """Struck after the run's end was recorded, as the process shut down: exit -15 for a run
    recorded FINISHED (`20261204:50`, git, SIGTERM at 0.74 s). Signals are ignored from there."""
    root = make_project("entry_points:\n  main:\n    command: \"echo done\"\n")
    proc = subprocess.run([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local"],
                          capture_output=True, text=True, timeout=60, preexec_fn=default_signals,
                          env={**os.environ, "MLPROJECT_FAULT_AT": f"cli.done:{strike}"})
    assert proc.returncode == 0, proc.stderr
    assert "done" in proc.stdout and "Traceback" not in proc.stderr
    ledger, tracked = _statuses(mlproject_home, _work_in_tmp)
    assert ledger == ["FINISHED"] and tracked == ["FINISHED"], (ledger, tracked)


def test_ctrl_c_twice_while_a_sweeps_trials_start_stops_them_and_ends_the_parent(make_project, mlproject_home,
                                                                                 _work_in_tmp):
    """Two Ctrl-Cs 50 ms apart as the sweep's trials start: the second escaped as an uncaught
    KeyboardInterrupt (exit -2) while the first was being carried out (`1:32`, sweep, SIGINT
    twice at 0.59 s). Now: exit 130, no traceback, the trials and the parent KILLED, nothing left."""
    root = make_project("entry_points:\n  main:\n    parameters:\n      x: float\n"
                        "    command: \"sleep 30; echo {x}\"\n")
    proc = subprocess.run([sys.executable, "-m", "runner", "sweep", str(root), "-P", "x=1,2", "--max-parallel", "2",
                           "--env-manager", "local"], capture_output=True, text=True, timeout=60,
                          preexec_fn=default_signals, env={**os.environ, "MLPROJECT_FAULT_AT": "launch.started:SIGINT*2"})
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr, proc.stderr
    ledger, tracked = _statuses(mlproject_home, _work_in_tmp)
    assert ledger and set(ledger) == {"KILLED"} and set(tracked) == {"KILLED"}, (ledger, tracked, proc.stderr)
    assert _no_process_left() == []
