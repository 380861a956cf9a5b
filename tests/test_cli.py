"""The `mlproject` command as a user meets it: exit codes, messages, validate."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click

import pytest

from conftest import assert_clean_error

ECHO_ARGS = """
entry_points:
  main:
    parameters:
      name: string
      n: {type: int, default: 1}
    command: "python show_args.py {name} {n}"
"""
SHOW_ARGS = {"show_args.py": "import json, sys\nprint(json.dumps(sys.argv[1:]))\n"}


def _run_id(stderr: str) -> str:
    return re.search(r"run with ID '([0-9a-f]{32})'", stderr).group(1)


def test_runs_and_streams_output_and_keeps_log(make_project, cli, mlproject_home):
    root = make_project(ECHO_ARGS, SHOW_ARGS)
    result = cli("run", str(root), "--env-manager", "local", "-P", "name=world", "-P", "n=2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["world", "2"]
    log = mlproject_home / "runs" / _run_id(result.stderr) / "output.log"
    assert json.loads(log.read_text()) == ["world", "2"]
    assert "succeeded" in result.stderr


def test_injection_reaches_program_as_one_argument(make_project, cli, tmp_path):
    root = make_project(ECHO_ARGS, SHOW_ARGS)
    marker = tmp_path / "INJECTED"
    hostile = f"friend; touch {marker}; $(touch {marker}) `touch {marker}` && touch {marker} | 'q\" \n"
    result = cli("run", str(root), "--env-manager", "local", "-P", f"name={hostile}", "-P", f"extra=$(touch {marker})")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [hostile, "1", "--extra", f"$(touch {marker})"]
    assert not marker.exists()


def test_command_exit_code_propagates(make_project, cli):
    root = make_project("entry_points:\n  main:\n    command: 'echo out; echo err >&2; exit 7'\n")
    result = cli("run", str(root), "--env-manager", "local")
    assert result.returncode == 7
    assert result.stdout == "out\n" and "err\n" in result.stderr
    assert "failed with exit code 7" in result.stderr


def test_pipes_in_commands_work(make_project, cli):
    root = make_project("entry_points:\n  main:\n    command: 'printf \"b\\na\\n\" | sort | tr a-z A-Z'\n")
    result = cli("run", str(root), "--env-manager", "local")
    assert result.returncode == 0 and result.stdout == "A\nB\n"


def test_runs_in_project_directory_from_elsewhere(make_project, cli, tmp_path):
    root = make_project("entry_points:\n  main:\n    command: pwd\n")
    result = cli("run", str(root), "--env-manager", "local", cwd=tmp_path)
    assert result.stdout.strip() == str(root)


def test_relative_uri_from_caller_directory(make_project, cli, tmp_path):
    root = make_project("entry_points:\n  main:\n    command: pwd\n", name="relproj")
    result = cli("run", "relproj", "--env-manager", "local", cwd=root.parent)
    assert result.returncode == 0 and result.stdout.strip() == str(root)


def test_path_parameter_from_repository_root(make_project, cli, tmp_path):
    """The seed tutorial's form: `mlflow run train -P data_file=data/sal_data.csv` from the repo root."""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "sal_data.csv").write_text("years,salary\n1,10\n")
    make_project("entry_points:\n  main:\n    parameters:\n      data_file: path\n    command: cat {data_file}\n", name="repo/train")
    result = cli("run", "train", "--env-manager", "local", "-P", "data_file=data/sal_data.csv", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "years,salary\n1,10\n"


def test_inferred_python_and_shell_entry_points(make_project, cli):
    root = make_project(files={"train.py": "import sys; print('py', sys.argv[1:])\n", "go.sh": "echo sh \"$@\"\n"})
    result = cli("run", str(root), "-e", "train.py", "--env-manager", "local", "-P", "alpha=0.5")
    assert result.returncode == 0 and result.stdout == "py ['--alpha', '0.5']\n"
    result = cli("run", str(root), "-e", "go.sh", "--env-manager", "local", env={"SHELL": "/bin/sh"})
    assert result.returncode == 0 and result.stdout == "sh\n"


def test_usage_errors_are_one_line(make_project, cli, tmp_path):
    root = make_project(ECHO_ARGS, SHOW_ARGS)
    assert_clean_error(cli("run", str(root), "--env-manager", "local"), contains="No value given for missing parameters: 'name'")
    assert_clean_error(cli("run", str(root), "--env-manager", "local", "-P", "name=a", "-P", "n=x"), contains="parameter 'n': value 'x' is not an int")
    assert_clean_error(cli("run", str(root), "--env-manager", "local", "-P", "name=a", "-P", "name=b"), contains="given more than once")
    assert_clean_error(cli("run", str(root), "--env-manager", "local", "-P", "noequals"), contains="expected NAME=VALUE")
    assert_clean_error(cli("run", str(root), "-e", "nope", "--env-manager", "local"), contains="Could not find nope among entry points")
    assert_clean_error(cli("run", str(root), "--env-manager", "bogus", "-P", "name=a"), contains="--env-manager 'bogus'")
    assert_clean_error(cli("run", str(tmp_path / "missing")), contains="does not exist")
    assert_clean_error(cli("run", str(root), "--no-such-flag"), contains="No such option '--no-such-flag'")
    assert_clean_error(cli("run"), contains="Missing argument 'URI'")


def test_invalid_spec_is_one_line_with_file_and_line(make_project, cli):
    root = make_project("name: x\nentry_points:\n  main:\n    parameters:\n      a: {type: 3}\n    command: echo\n")
    assert_clean_error(cli("run", str(root), "--env-manager", "local"), contains="MLproject:5: entry_points.main.parameters.a.type: expected a string, got a number 3")
    bad_yaml = make_project(files={"MLproject": "entry_points:\n  main:\n    command: [unclosed\n"})
    assert_clean_error(cli("run", str(bad_yaml), "--env-manager", "local"), contains="MLproject:3: invalid YAML")


def test_features_of_later_issues_fail_clearly(make_project, cli):
    root = make_project("entry_points:\n  main:\n    command: 'true'\n")
    assert_clean_error(cli("run", str(root), "-b", "databricks"), contains="backend 'databricks'")
    unreachable = cli("run", "https://user:secret@example.invalid/repo.git")
    assert_clean_error(unreachable, contains="cannot reach https://example.invalid/repo.git (Could not resolve host")
    assert "secret" not in unreachable.stderr
    assert_clean_error(cli("run", str(root), "-c", "{not json"), contains="--backend-config")


def test_no_traceback_without_debug_but_with_it(make_project, cli):
    root = make_project("entry_points:\n  main:\n    command: 'true'\n")
    result = cli("run", str(root), "-e", "nope", "--debug", "--env-manager", "local")
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_validate_prints_plan_and_starts_nothing(make_project, cli, mlproject_home, tmp_path):
    marker = tmp_path / "ran"
    root = make_project(
        f"name: v\nentry_points:\n  main:\n    parameters:\n      a: float\n    command: touch {marker} {{a}}\n",
        {"python_env.yaml": "python: '3.11'\n"},
    )
    result = cli("validate", str(root), "-P", "a=0.5", "--env-manager", "local")
    assert result.returncode == 0, result.stderr
    assert f"command: touch {marker} 0.5" in result.stdout
    assert "environment: python_env (python_env.yaml)" in result.stdout
    assert not marker.exists()
    assert not (mlproject_home / "runs").exists()


def test_validate_reports_every_problem(make_project, cli):
    root = make_project(
        "entry_points:\n  main:\n    parameters:\n      a: float\n    command: echo {a} {b}\n"
        "  other:\n    parameters:\n      n: {type: int, default: x}\n    command: echo {n} {m}\n"
    )
    result = cli("validate", str(root), "-P", "a=1")
    assert result.returncode == 2
    assert "command uses {b} but declares no parameter 'b'" in result.stderr
    assert "command uses {m} but declares no parameter 'm'" in result.stderr
    assert "parameter 'n': default 'x' is not an int" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_env_file_errors(make_project, cli):
    root = make_project("entry_points:\n  main:\n    command: echo\n", {"python_env.yaml": "python: [3]\n"})
    result = cli("validate", str(root))
    assert result.returncode == 2 and "python_env.yaml:1: python: expected a string" in result.stderr


def test_console_script_and_module_entry(tmp_path):
    script = Path(sys.executable).parent / "mlproject"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("mlproject-runner ")
    out = subprocess.run([sys.executable, "-m", "runner", "--version"], capture_output=True, text=True)
    assert out.returncode == 0


def test_warm_path_skips_yaml_and_validation(make_project, mlproject_home):
    root = make_project("name: w\nentry_points:\n  main:\n    parameters:\n      a: float\n    command: 'true'\n")
    probe = (
        "import sys\nfrom runner.cli import main\nrc = main(['run', sys.argv[1], '--env-manager', 'local', '-P', 'a=1'])\n"
        "watch = {'yaml', 'jsonschema', 'mlflow', 'git', 'docker'}\n"
        "heavy = sorted(w for w in watch if w in sys.modules)\n"
        "print(rc, heavy)\n"
    )
    env = {**os.environ}
    first = subprocess.run([sys.executable, "-c", probe, str(root)], capture_output=True, text=True, env=env)
    assert first.stdout.strip().endswith("0 ['jsonschema', 'yaml']"), first.stderr
    second = subprocess.run([sys.executable, "-c", probe, str(root)], capture_output=True, text=True, env=env)
    assert second.stdout.strip().endswith("0 []"), second.stderr


def test_shell_completion_of_commands_entry_points_and_parameters(make_project, tmp_path):
    """What bash (and zsh, fish: same protocol) gets from `_MLPROJECT_COMPLETE`, from the real command."""
    root = make_project("name: c\nentry_points:\n  main:\n    parameters:\n      alpha: float\n"
                        "      l1_ratio: {type: float, default: 0.1}\n    command: 'true'\n  train:\n    command: 'true'\n")
    script = Path(sys.executable).parent / "mlproject"

    def complete(words: str, shell: str = "bash") -> list[str]:
        env = {**os.environ, "_MLPROJECT_COMPLETE": f"{shell}_complete", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
        out = subprocess.run([str(script)], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return [line.split(",", 1)[1] for line in out.stdout.splitlines() if "," in line]

    for shell in ("bash", "zsh", "fish"):
        source = subprocess.run([str(script)], env={**os.environ, "_MLPROJECT_COMPLETE": f"{shell}_source"},
                                capture_output=True, text=True)
        assert source.returncode == 0 and "_MLPROJECT_COMPLETE" in source.stdout, (shell, source.stderr)
    assert sorted(complete("mlproject r")) == ["rerun", "run", "runs"]
    assert complete(f"mlproject run {root} -e ") == ["main", "train"]
    assert complete(f"mlproject run {root} -P ") == ["alpha=", "l1_ratio="]
    assert complete(f"mlproject run -e main {root} -P l") == ["l1_ratio="]
    assert complete(f"mlproject run {root} --env-manager c") == ["conda"]


def test_a_run_on_a_terminal_says_where_it_went(make_project, tmp_path):
    from terminal import run_on_terminal

    root = make_project("entry_points:\n  main:\n    command: 'true'\n")
    store = f"sqlite:///{tmp_path}/where.db"
    tracked = run_on_terminal("run", str(root), "--env-manager", "local", env={"MLFLOW_TRACKING_URI": store})
    assert tracked.returncode == 0, tracked.screen
    run_id = re.search(r"run with ID '([0-9a-f]{32})'", tracked.screen).group(1)
    assert f"tracked in {store} (experiment 0, run {run_id}); see it with: mlflow ui --backend-store-uri {store}" in tracked.screen
    untracked = run_on_terminal("run", str(root), "--env-manager", "local", env={"MLPROJECT_NO_TRACKING": "1"})
    assert "recorded in the local ledger only; see it with: mlproject runs show " in untracked.screen


def test_a_reader_that_goes_away_stops_nothing(make_project, cli, mlproject_home):
    """`mlproject run ... | head -2`: the run goes on to its end, all its output is in its log, and
    the runner's exit code is the command's; `runs list | head -1` prints no traceback."""
    root = make_project("entry_points:\n  main:\n    command: 'for i in $(seq 1 20000); do echo line $i; done; exit 3'\n")
    script = Path(sys.executable).parent / "mlproject"
    piped = subprocess.run(["bash", "-c", f'"{script}" run "{root}" --env-manager local | head -2; echo "rc=${{PIPESTATUS[0]}}" >&2'],
                           capture_output=True, text=True, timeout=120)
    assert piped.stdout == "line 1\nline 2\n"
    assert "rc=3" in piped.stderr and "Traceback" not in piped.stderr, piped.stderr
    [record] = json.loads(cli("runs", "list", "--json").stdout)
    assert record["status"] == "FAILED" and record["exit_code"] == 3
    assert cli("runs", "logs", record["id"]).stdout.splitlines()[-1] == "line 20000"
    from runner.tracking.ledger import Ledger, RunRecord

    ledger = Ledger()  # enough runs that the listing outgrows the pipe's buffer
    for i in range(2000):
        ledger.start(RunRecord(f"{i:032x}", str(root), str(root), "main", "true", "local", "/dev/null"))
    ledger.close()
    listed = subprocess.run(["bash", "-c", f'"{script}" runs list --limit 2000 | head -1'], capture_output=True, text=True,
                            timeout=60)
    assert listed.stdout.startswith("RUN ID") and listed.stderr == "", listed.stderr


def test_validate_resolve_reports_a_misspelled_requirement(make_project, cli, mlproject_home):
    root = make_project("entry_points:\n  main:\n    command: 'true'\n",
                        {"python_env.yaml": "python: '3.11'\ndependencies: [scikit-lern==0.0.1]\n"})
    result = cli("validate", str(root), "--resolve")
    assert result.returncode == 2
    assert "error: environment build failed: resolving dependencies" in result.stderr
    assert "scikit-lern" in result.stdout + result.stderr and "hint: 1 problem above" in result.stderr
    (root / "python_env.yaml").write_text("python: '3.11'\ndependencies: [six==1.16.0]\n")
    good = cli("validate", str(root), "--resolve")
    assert good.returncode == 0 and "environment: resolves" in good.stdout, good.stderr
    assert not (mlproject_home / "envs").exists() or not [p for p in (mlproject_home / "envs").iterdir() if p.name.startswith("uv-")]


def test_ctrl_c_twice_says_what_it_does(make_project, mlproject_home):
    """The first Ctrl-C stops the run (TERM, a grace period) and says so; the second kills it now."""
    import signal as signals

    from terminal import run_on_terminal

    root = make_project("entry_points:\n  main:\n    command: \"trap '' INT TERM; echo started; sleep 60\"\n")
    pressed = []

    def press(screen: str, process) -> None:
        # The command's own line, not the banner that quotes its text ("... echo started ..."):
        # Ctrl-C once the command runs, as the docstring says.
        if "\nstarted" in screen.replace("\r", "") and not pressed:
            pressed.append(1)
            process.send_signal(signals.SIGINT)
        elif "Ctrl-C again to kill now" in screen and len(pressed) == 1:
            pressed.append(2)
            process.send_signal(signals.SIGINT)

    result = run_on_terminal("run", str(root), "--env-manager", "local", env={"MLPROJECT_KILL_GRACE": "30"},
                             on_output=press, timeout=60)
    run_id = re.search(r"run with ID '([0-9a-f]{32})'", result.screen).group(1)
    assert f"stopping run {run_id} (Ctrl-C again to kill now)" in result.screen
    assert f"killing run {run_id} now" in result.screen
    assert result.returncode == 130 and f"Run (ID '{run_id}') killed by SIGINT" in result.screen


def test_no_conda_from_the_mlflow_1_tutorials_means_local(make_project, cli, mlproject_home):
    root = make_project("entry_points:\n  main:\n    command: \"python -c 'import sys; print(sys.prefix)'\"\n",
                        {"conda.yaml": "channels: [defaults]\ndependencies: [python=3.11]\n"})
    result = cli("run", str(root), "--no-conda")
    assert result.returncode == 0, result.stderr
    assert "note: --no-conda (MLflow 1.x) is taken as --env-manager local" in result.stderr
    envs = mlproject_home / "envs"
    assert not envs.exists() or not [p for p in envs.iterdir() if not p.name.startswith(".")]  # nothing was built
    assert_clean_error(cli("run", str(root), "--no-conda", "--env-manager", "uv"), contains="--no-conda means --env-manager local")


def test_the_command_sees_a_terminal_when_the_runner_has_one(make_project, cli, mlproject_home):
    """As under `mlflow run`: tqdm, rich and coloured logs see a terminal, of the terminal's size;
    the log gets the output as written. Through a pipe, nothing changes."""
    from terminal import run_on_terminal

    root = make_project("entry_points:\n  main:\n    command: \"python3 -c 'import os, sys; "
                        "print(sys.stdout.isatty(), sys.stderr.isatty(), os.get_terminal_size().columns if sys.stdout.isatty() else 0); "
                        "print(\\\"to stderr\\\", file=sys.stderr)'\"\n")
    shown = run_on_terminal("run", str(root), "--env-manager", "local")
    assert shown.returncode == 0, shown.screen
    assert "True True 120\r\nto stderr\r\n" in shown.screen
    run_id = re.search(r"run with ID '([0-9a-f]{32})'", shown.screen).group(1)
    assert (mlproject_home / "runs" / run_id / "output.log").read_bytes() == b"True True 120\nto stderr\n"
    piped = cli("run", str(root), "--env-manager", "local")
    assert piped.stdout.startswith("False False") and "to stderr" in piped.stderr


def test_help_says_what_every_option_and_command_is(cli):
    """The top-level list was cut off ('...'), `sweep --help` hid the sweep's options under
    `sweep start`, and run's experiment, run name and backend options had no description."""
    top = cli("--help")
    assert top.returncode == 0 and "..." not in top.stdout.split("Commands:")[1]
    sweep = cli("sweep", "--help")
    assert sweep.returncode == 0
    for option in ("--param-list", "--metric", "--max-parallel", "--resume", "--backend"):
        assert option in sweep.stdout, option
    from runner.cli import cli as commands

    context = click.Context(commands)
    undescribed = [f"{name} {param.name}" for name in ("run", "rerun", "validate")
                   for param in commands.get_command(context, name).params
                   if isinstance(param, click.Option) and not param.hidden and not param.help]
    assert undescribed == []
    assert "local|slurm|ray" in cli("run", "--help").stdout


# -- moved from the unit tier's files: these run the command ----------------------------------
def test_a_python_env_key_mlflow_does_not_know_is_a_warning(make_project, cli, _work_in_tmp):
    """A public project's `name:` in python_env.yaml (mlflow run: a TypeError) runs, with one warning."""
    root = make_project("python_env: python_env.yaml\nentry_points:\n  main:\n    command: \"echo ran\"\n",
                        files={"python_env.yaml": "name: published-env\npython: \"3.11\"\ndependencies: []\n"})
    from runner.project.envfiles import load_python_env

    env = load_python_env(root / "python_env.yaml")
    assert env.warnings == ("python_env.yaml:1: name: unknown key, ignored",)
    result = cli("run", str(root))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ran\n"
    assert result.stderr.count("warning: python_env.yaml:1: name: unknown key, ignored") == 1


def test_python_callers_get_hints_in_python_terms(make_project):
    import runner
    from runner.errors import ParameterError

    root = make_project("entry_points:\n  main:\n    parameters:\n      a: float\n      b: string\n    command: x {a} {b}\n")
    with pytest.raises(ParameterError) as info:
        runner.run(str(root), env_manager="local")
    assert info.value.hint == "give parameters={'a': ..., 'b': ...}"
    with pytest.raises(runner.UsageError) as info:
        runner.run(str(root), env_manager="bogus")
    assert info.value.hint == 'for example env_manager="uv"' and "--env-manager" not in info.value.hint


def test_a_near_miss_of_a_declared_name_is_warned_about(make_project, cli):
    root = make_project("entry_points:\n  main:\n    parameters:\n      alpha: {type: float, default: 0.5}\n"
                        "    command: 'echo {alpha}'\n")
    result = cli("run", str(root), "--env-manager", "local", "-P", "alpah=0.1", "-P", "seed=3")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == ["warning: -P alpah is not a parameter of entry point 'main', so it is passed on as --alpah; "
                        "did you mean alpha?"]
    assert result.stdout == "0.5 --alpah 0.1 --seed 3\n"


@pytest.mark.unit
def test_every_command_is_found_in_the_module_named_for_it():
    """The group imports a command's module only when the command is asked for (a run does not
    pay for the other commands' modules); every listed name must resolve to its command."""
    from runner.cli import cli as commands

    context = click.Context(commands)
    names = commands.list_commands(context)
    assert names[0] == "run" and len(names) == len(set(names))
    for name in names:
        assert commands.get_command(context, name).name == name
    assert commands.get_command(context, "no-such-command") is None


@pytest.mark.unit
def test_main_called_from_a_library_leaves_the_collector_alone():
    """Only a process started as a command tunes and, at its end, freezes the collector: a test
    or a program calling `main` goes on collecting its own garbage."""
    import gc

    from runner.cli import main

    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    assert main(["--version"]) == 0
    assert (gc.get_threshold(), gc.get_freeze_count()) == (thresholds, frozen)


def test_too_few_open_files_is_one_error_line_at_any_limit(make_project, cli, mlproject_home):
    """Run under limits of open files from too few to start up to enough: wherever the limit is
    reached (the ledger, the tracking store, the pending notes, starting the command), one
    `error:` line and a hint that names the limit, never a traceback nor a minute of retries, and
    no run left RUNNING."""
    import resource
    import time

    root = make_project("entry_points:\n  main:\n    command: 'echo ran'\n")
    outcomes = {}
    for limit in range(5, 17):
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "runner", "run", str(root), "--env-manager", "local"],
                                capture_output=True, text=True, timeout=60,
                                preexec_fn=lambda limit=limit: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
        outcomes[limit] = result.returncode
        assert time.monotonic() - started < 20, (limit, result.stderr)
        if result.returncode == 0:
            assert "ran" in result.stdout
            continue
        assert_clean_error(result, result.returncode)
        assert result.returncode in (1, 2) and "open files" in result.stderr, (limit, result.stderr)
    assert outcomes[16] == 0 and outcomes[5] != 0, outcomes
    listed = json.loads(cli("runs", "list", "--json").stdout)
    assert listed and not [r for r in listed if r["status"] in ("RUNNING", "SCHEDULED")], listed
