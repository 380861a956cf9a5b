"""The injection and escape corpus, end to end through the real CLI: every hostile parameter
value reaches the program as exactly one argument (or is refused in one line), nothing it
names is executed, and it is recorded as the same text in the ledger and in tracking."""
from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys

import pytest

from conftest import assert_clean_error

PROJECT = """
entry_points:
  main:
    parameters:
      name: string
      where: {type: path, default: data.txt}
    command: "python show_args.py {name}"
"""
SHOW_ARGS = {
    # Writes its arguments as the bytes it got (hex), so that non-UTF-8 survives the trip.
    "show_args.py": "import json, os, sys\nprint(json.dumps([os.fsencode(a).hex() for a in sys.argv[1:]]))\n",
    "data.txt": "inside\n",
}


def _corpus(marker: str) -> dict[str, str]:
    touch = f"touch {marker}"
    return {
        "single quote": "it's",
        "double quotes": 'say "hi"',
        "command substitution": f"$({touch})",
        "backticks": f"`{touch}`",
        "semicolon": f"x; {touch}",
        "and-and": f"x && {touch}",
        "pipe": f"x | {touch}",
        "redirection": f"x > {marker}",
        "newlines": f"line one\n{touch}\nline three",
        "carriage return": "a\rb",
        "tab and spaces": " \t leading and trailing \t ",
        "glob": "*",
        "variable": "$HOME ${PATH}",
        "brace and tilde": "~root/{a,b}",
        "dash option": "--help",
        "very long": "x" * 100_000,
        "rtl override and zero width": "abc\u202edcba\u200b\u200d",
        "combining and emoji": "e\u0301 \U0001f600 \u4e2d\u6587",
        "empty": "",
    }


@pytest.mark.parametrize("case", list(_corpus("M")))
def test_hostile_value_reaches_the_program_as_one_argument(case, make_project, cli, tmp_path, mlproject_home):
    root = make_project(PROJECT, SHOW_ARGS)
    marker = tmp_path / "INJECTED"
    value = _corpus(str(marker))[case]
    tracked = len(value) <= 6000  # MLflow's limit for a parameter's value; longer runs untracked below
    env = {} if tracked else {"MLPROJECT_NO_TRACKING": "1"}
    result = cli("run", str(root), "--env-manager", "local", "-P", f"name={value}", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == [value.encode().hex()]
    assert not marker.exists()
    run_id = re.search(r"run with ID '([0-9a-f]{32})'", result.stderr).group(1)
    [record] = json.loads(cli("runs", "list", "--json").stdout)
    assert record["parameters"]["name"] == value
    if tracked:
        with sqlite3.connect("mlflow.db") as db:
            [(logged,)] = db.execute("SELECT value FROM params WHERE run_uuid = ? AND key = 'name'", (run_id,)).fetchall()
        assert logged == value


def test_value_too_long_for_tracking_is_one_clear_error(make_project, cli):
    root = make_project(PROJECT, SHOW_ARGS)
    result = cli("run", str(root), "--env-manager", "local", "-P", "name=" + "x" * 100_000)
    assert_clean_error(result, 2, "too long for MLflow")
    assert result.stdout == ""


def test_nul_is_refused_in_one_line(make_project, cli):
    root = make_project(PROJECT, SHOW_ARGS)
    # argv cannot carry NUL; the API can.
    code = ("import runner, sys\n"
            "try:\n    runner.run(sys.argv[1], parameters={'name': 'a\\x00b'}, env_manager='local')\n"
            "except runner.RunnerError as exc:\n    print(exc.message); sys.exit(exc.exit_code)\n")
    result = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "NUL" in result.stdout and "Traceback" not in result.stderr


def test_non_utf8_bytes_are_refused_in_one_line(make_project, tmp_path):
    """A value that is not UTF-8 (Latin-1 bytes from an old shell) can be recorded neither in
    the ledger nor in MLflow: one clear line, exit 2, nothing started, tracked or not."""
    root = make_project(PROJECT, SHOW_ARGS)
    for assignments in ([b"-P", b"name=caf\xe9 \xff\xfe"], [b"-P", b"name=ok", b"-P", b"caf\xe9=1"]):
        argv = [os.fsencode(sys.executable), b"-m", b"runner", b"run", os.fsencode(root), b"--env-manager", b"local",
                *assignments]
        for env in ({}, {"MLPROJECT_NO_TRACKING": "1"}):
            result = subprocess.run(argv, capture_output=True, timeout=120, env={**os.environ, **env})
            err = result.stderr.decode(errors="replace")
            assert result.returncode == 2 and "not valid UTF-8" in err, err
            assert "Traceback" not in err and len(err.strip().splitlines()) == 2 and result.stdout == b""


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/passwd", "link/passwd", "sub/../../outside.txt"])
def test_path_parameter_reads_what_the_caller_named(path, make_project, cli, tmp_path):
    """A `path` parameter is the caller's own file name (as in MLflow): it is resolved, not
    confined, but it is passed as one argument and never expands into anything else."""
    root = make_project(PROJECT.replace("python show_args.py {name}", "python show_args.py {where}"), SHOW_ARGS)
    (root / "link").symlink_to("/etc")
    (root / "sub").mkdir()
    (root.parent / "outside.txt").write_text("the caller's data\n")
    result = cli("run", str(root), "--env-manager", "local", "-P", "name=x", "-P", f"where={path}")
    assert result.returncode == 0, result.stderr
    [given] = json.loads(result.stdout)
    assert os.path.isabs(bytes.fromhex(given).decode())


def test_project_path_that_is_not_utf8_is_one_clear_error(tmp_path):
    project = os.fsencode(tmp_path) + b"/caf\xe9"
    os.makedirs(project)
    with open(project + b"/MLproject", "w") as handle:
        handle.write("entry_points:\n  main:\n    command: echo ran\n")
    result = subprocess.run([os.fsencode(sys.executable), b"-m", b"runner", b"run", project, b"--env-manager", b"local"],
                            capture_output=True, timeout=120)
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 2 and "is not valid UTF-8" in err and "caf\\xe9" in err, err
    assert "Traceback" not in err and b"ran" not in result.stdout
