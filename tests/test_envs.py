"""Python environments for real: uv and virtualenv builds from the package index,
keys, reuse, crashes, concurrency, gc. Small real packages (six) keep it quick."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BROKEN_PACKAGE, assert_clean_error
from runner.envs.python import spec as pythonenv
from runner.project.spec import load_project

SIX_PROJECT = """
name: sixer
entry_points:
  main:
    parameters:
      tag: {type: string, default: x}
    command: "python -c 'import os, sys, six; print(six.__version__, sys.prefix, os.environ.get(\\"VIRTUAL_ENV\\"), os.environ.get(\\"PYTHONHOME\\"), sys.argv[1])' {tag}"
"""


def _key(root: Path, manager: str = "uv") -> str:
    return pythonenv.plan(manager, load_project(root), None).key


def _envs(home: Path) -> list[Path]:
    root = home / "envs"
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def _builds(home: Path) -> list[str]:
    log = home / "envs" / ".builds.log"
    return log.read_text().splitlines() if log.exists() else []


# -- keys (no build needed) ------------------------------------------------------

def test_key_ignores_comments_blank_lines_order_and_name(make_project):
    a = make_project(SIX_PROJECT, {"python_env.yaml": "python: '3.11'\ndependencies:\n  - six==1.16.0\n  - packaging\n"})
    b = make_project(
        SIX_PROJECT,
        {"python_env.yaml": "# our env\ndependencies:\n  - packaging   # latest\n\n  - six==1.16.0\npython: '3.11'\n"},
    )
    assert _key(a) == _key(b)
    c = make_project(SIX_PROJECT, {"python_env.yaml": "python: '3.11'\ndependencies:\n  - six==1.17.0\n  - packaging\n"})
    assert _key(a) != _key(c)
    assert _key(a) != _key(a, "virtualenv")  # the manager is part of the key


def test_key_follows_requirement_files_and_local_packages(make_project):
    root = make_project(
        SIX_PROJECT,
        {
            "python_env.yaml": "python: '3.11'\ndependencies:\n  - -r requirements.txt\n  - ./localpkg\n",
            "requirements.txt": "six==1.16.0\n-c constraints.txt\n",
            "constraints.txt": "packaging<30\n",
            "localpkg/setup.py": "print('v1')\n",
        },
    )
    first = _key(root)
    (root / "requirements.txt").write_text("six==1.16.0  # pinned\n-c constraints.txt\n")
    assert _key(root) == first
    (root / "constraints.txt").write_text("packaging<31\n")
    second = _key(root)
    assert second != first
    (root / "localpkg" / "setup.py").write_text("print('v2')\n")
    assert _key(root) != second


def test_requirement_file_outside_project_is_refused(make_project, tmp_path):
    (tmp_path / "outside.txt").write_text("six\n")
    root = make_project(SIX_PROJECT, {"python_env.yaml": "dependencies: ['-r ../outside.txt']\n"})
    with pytest.raises(Exception, match="outside the project"):
        _key(root)


def test_conda_yaml_keeps_python_and_pip_list(make_project):
    root = make_project(
        SIX_PROJECT,
        {"conda.yaml": "name: x\nchannels: [conda-forge]\ndependencies:\n  - python=3.10\n  - numpy=1.26\n  - pip\n  - pip:\n    - six==1.16.0\n"},
    )
    notes: list[str] = []
    plan = pythonenv.plan("uv", load_project(root), notes.append)
    assert plan.contents.interpreter.version.startswith("3.10.")
    assert plan.contents.requirements.lines == ["six==1.16.0"]
    assert notes == ["warning: conda.yaml: --env-manager uv keeps python, pip and the pip: list; dropped conda packages: numpy"]
    assert plan.contents.build_requirements.lines == ["pip", "setuptools"]  # as conda's own environment has them


def test_conda_env_export_pins_are_read_by_the_python_managers(make_project):
    """`conda env export` writes name=version=build: python=3.11.7=h955ad1f_0 means Python 3.11.7."""
    root = make_project(SIX_PROJECT, {"conda.yaml": (
        "name: exported\nchannels: [defaults]\ndependencies:\n  - python=3.11.7=h955ad1f_0\n"
        "  - numpy=1.26.4=py311h08b1b3b_0\n  - pip=23.3.1=py311h06a4308_0\n  - pip:\n    - six==1.16.0\n")})
    notes: list[str] = []
    plan = pythonenv.plan("uv", load_project(root), notes.append)
    assert plan.contents.interpreter.version == "3.11.7"
    assert plan.contents.requirements.lines == ["six==1.16.0"]
    assert notes[0].endswith("dropped conda packages: numpy")


# -- real builds -------------------------------------------------------------------

def test_uv_build_run_and_reuse(make_project, cli, mlproject_home):
    root = make_project(SIX_PROJECT, {"python_env.yaml": "python: '3.10'\ndependencies: [six==1.16.0]\n"})
    first = cli("run", str(root), "-P", "tag=one")
    assert first.returncode == 0, first.stderr
    version, prefix, venv, home_var, tag = first.stdout.split()
    envs = _envs(mlproject_home)
    assert len(envs) == 1 and envs[0].name.startswith("uv-")
    assert (version, prefix, venv, tag) == ("1.16.0", str(envs[0]), str(envs[0]), "one")
    assert home_var == "None"
    second = cli("run", str(root), "-P", "tag=two")
    assert second.returncode == 0 and second.stdout.split()[0] == "1.16.0"
    assert len(_builds(mlproject_home)) == 1  # reused, not rebuilt
    packages = (envs[0] / ".mlproject" / "packages.txt").read_text()
    assert packages.strip() == "six==1.16.0"
    show = cli("env", "show", envs[0].name[3:15])
    assert show.returncode == 0 and "six==1.16.0" in show.stdout and "Using Python" not in show.stdout


def test_pythonhome_is_unset_inside(make_project, mlproject_home):
    root = make_project(SIX_PROJECT, {"python_env.yaml": "dependencies: [six==1.16.0]\n"})
    env = {**os.environ, "PYTHONHOME": sys.base_prefix}
    out = subprocess.run([sys.executable, "-m", "runner", "run", str(root)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[3] == "None"


def test_changed_requirement_builds_new_environment(make_project, cli, mlproject_home):
    root = make_project(SIX_PROJECT, {"python_env.yaml": "dependencies: [six==1.16.0]\n"})
    assert cli("run", str(root)).stdout.split()[0] == "1.16.0"
    (root / "python_env.yaml").write_text("# only a comment changed\ndependencies: [six==1.16.0]\n")
    assert cli("run", str(root)).returncode == 0
    assert len(_builds(mlproject_home)) == 1
    (root / "python_env.yaml").write_text("dependencies: [six==1.17.0]\n")
    assert cli("run", str(root)).stdout.split()[0] == "1.17.0"
    assert len(_builds(mlproject_home)) == 2 and len(_envs(mlproject_home)) == 2


def test_no_env_file_gets_empty_env_on_current_interpreter(make_project, cli, mlproject_home):
    root = make_project("entry_points:\n  main:\n    command: \"python -c 'import sys; print(sys.prefix, sys.version_info[:2])'\"\n")
    result = cli("run", str(root))
    assert result.returncode == 0, result.stderr
    prefix = result.stdout.split()[0]
    assert prefix == str(_envs(mlproject_home)[0])
    assert f"({sys.version_info[0]}, {sys.version_info[1]})" in result.stdout


def test_virtualenv_manager(make_project, cli, mlproject_home):
    root = make_project(SIX_PROJECT, {"python_env.yaml": "python: '3.11'\nbuild_dependencies: [pip]\ndependencies: [six==1.16.0]\n"})
    result = cli("run", str(root), "--env-manager", "virtualenv")
    assert result.returncode == 0, result.stderr
    envs = _envs(mlproject_home)
    assert envs[0].name.startswith("virtualenv-") and result.stdout.split()[1] == str(envs[0])
    # pip's scripts were rewritten from the temporary build path to the final one.
    pip_script = (envs[0] / "bin" / "pip").read_text()
    assert str(envs[0]) in pip_script and ".tmp-" not in pip_script
    assert subprocess.run([str(envs[0] / "bin" / "pip"), "--version"], capture_output=True).returncode == 0


def test_uv_lock_project_uses_uv_sync(make_project, cli, mlproject_home):
    from runner.envs.uvtool import uv_binary

    root = make_project(
        "entry_points:\n  main:\n    command: \"python -c 'import six; print(six.__version__)'\"\n",
        {"pyproject.toml": "[project]\nname = 'locked'\nversion = '0.1'\nrequires-python = '>=3.9'\ndependencies = ['six==1.16.0']\n[tool.uv]\npackage = false\n"},
    )
    subprocess.run([uv_binary(), "lock", "--project", str(root), "-q"], check=True, env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})
    result = cli("run", str(root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1.16.0"
    meta = json.loads((_envs(mlproject_home)[0] / ".mlproject" / "meta.json").read_text())
    assert meta["source"] == "uv.lock"


def test_python_version_not_on_machine(make_project, cli, mlproject_home):
    root = make_project(SIX_PROJECT, {"python_env.yaml": "python: '3.99'\n"})
    result = cli("run", str(root))
    assert_clean_error(result, contains="asks for Python 3.99, which is not on this machine; found ")
    assert "3.11" in result.stderr
    assert _envs(mlproject_home) == []


def test_a_run_its_rerun_and_its_locked_run_share_one_environment(make_project, cli, mlproject_home, _work_in_tmp):
    """A run (resolved), its rerun (the lock it recorded) and a `--locked` run (pylock.toml) install
    the same packages three ways, each with a key of its own: one environment holds them, built
    once (three copies before). A lock of other versions gets an environment of its own."""
    root = make_project(SIX_PROJECT, {"python_env.yaml": "python: '3.11'\ndependencies: [six==1.16.0, packaging]\n"})
    first = cli("run", str(root))
    assert first.returncode == 0, first.stderr
    [env] = _envs(mlproject_home)
    [row] = json.loads(cli("runs", "list", "--json").stdout)
    again = cli("rerun", row["id"])
    assert again.returncode == 0, again.stderr
    assert cli("lock", str(root)).returncode == 0
    locked = cli("run", str(root), "--locked")
    assert locked.returncode == 0, locked.stderr
    assert _envs(mlproject_home) == [env] and len(_builds(mlproject_home)) == 1, _builds(mlproject_home)
    rows = json.loads(cli("runs", "list", "--json").stdout)
    assert len(rows) == 3 and {r["env_key"] for r in rows} == {env.name.removeprefix("uv-")}, rows
    assert all(str(env) in run.stdout for run in (first, again, locked)), [r.stdout for r in (first, again, locked)]
    (root / "python_env.yaml").write_text("python: '3.11'\ndependencies: [six==1.17.0, packaging]\n")
    assert cli("lock", str(root)).returncode == 0
    other = cli("run", str(root), "--locked")
    assert other.returncode == 0 and "1.17.0" in other.stdout, other.stderr
    assert len(_envs(mlproject_home)) == 2


def test_failed_build_reports_installer_output_and_leaves_nothing(make_project, cli, mlproject_home):
    root = make_project(SIX_PROJECT, {"python_env.yaml": "dependencies: [./broken]\n", **BROKEN_PACKAGE})
    result = cli("run", str(root))
    assert_clean_error(result, contains="environment build failed: installing dependencies")
    assert "this package does not build" in result.stderr  # the installer's own words
    assert _envs(mlproject_home) == []
    assert not list((mlproject_home / "envs").glob(".tmp-*"))
    # The run was created (as MLflow does) and ended FAILED; its command never started.
    [record] = json.loads(cli("runs", "list", "--json").stdout)
    assert record["status"] == "FAILED" and record["pgid"] is None
    # The error names the run, and the installer's whole output is in the run's log.
    assert f"error: run {record['id']}: environment build failed" in result.stderr
    assert f"mlproject runs logs {record['id']}" in result.stderr
    logged = cli("runs", "logs", record["id"]).stdout
    assert "this package does not build" in logged and "$ " in logged and "pip install" in logged


SLOW_BUILD = {
    "python_env.yaml": "dependencies:\n  - six==1.16.0\n  - ./slowpkg\n",
    "slowpkg/pyproject.toml": "[build-system]\nrequires = ['setuptools']\nbuild-backend = 'setuptools.build_meta'\n[project]\nname = 'slowpkg'\nversion = '1.0'\n",
    "slowpkg/setup.py": "import time\ntime.sleep(3)\nfrom setuptools import setup\nsetup(py_modules=['slowpkg'])\n",
    "slowpkg/slowpkg.py": "VALUE = 42\n",
}


def test_sigkill_during_build_leaves_nothing_reusable(make_project, cli, mlproject_home):
    root = make_project("entry_points:\n  main:\n    command: \"python -c 'import slowpkg; print(slowpkg.VALUE)'\"\n", SLOW_BUILD)
    for delay in (0.3, 1.5, 3.0):
        proc = subprocess.Popen([sys.executable, "-m", "runner", "env", "build", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Whatever moment it died at, nothing at a final path is incomplete.
        for env in _envs(mlproject_home):
            assert (env / ".mlproject" / "complete").exists()
    result = cli("run", str(root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"
    assert len(_envs(mlproject_home)) == 1


def test_sigint_during_build_cleans_up(make_project, mlproject_home, cli):
    root = make_project("entry_points:\n  main:\n    command: 'true'\n", SLOW_BUILD)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "run", str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not list((mlproject_home / "envs").glob(".tmp-*")):
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=30)
    assert proc.returncode == 130
    stderr = proc.stderr.read().decode()
    assert "Traceback" not in stderr
    [record] = json.loads(cli("runs", "list", "--json").stdout)
    assert record["status"] == "KILLED" and record["pgid"] is None
    assert f"interrupted by SIGINT: run {record['id']} recorded as KILLED before its command started" in stderr
    assert _envs(mlproject_home) == []
    assert not list((mlproject_home / "envs").glob(".tmp-*"))


def test_concurrent_first_runs_build_once(make_project, mlproject_home):
    root = make_project("entry_points:\n  main:\n    command: \"python -c 'import slowpkg, sys; print(slowpkg.VALUE, sys.prefix)'\"\n", SLOW_BUILD)
    procs = [
        subprocess.Popen([sys.executable, "-m", "runner", "run", str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [o[1][-500:] for o in outputs]
    assert len({o[0] for o in outputs}) == 1 and outputs[0][0].startswith("42 ")
    assert len(_builds(mlproject_home)) == 1
    assert len(_envs(mlproject_home)) == 1


def test_gc_skips_environment_in_use(make_project, cli, mlproject_home):
    root = make_project("entry_points:\n  main:\n    command: 'touch started; sleep 3'\n", {"python_env.yaml": "dependencies: [six==1.16.0]\n"})
    assert cli("env", "build", str(root)).returncode == 0
    running = subprocess.Popen([sys.executable, "-m", "runner", "run", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (root / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    gc = cli("env", "gc", "--older-than", "0")
    assert gc.returncode == 0 and "in use" in gc.stdout
    assert len(_envs(mlproject_home)) == 1
    rm = cli("env", "rm", _envs(mlproject_home)[0].name[3:])
    assert_clean_error(rm, contains="in use")
    assert running.wait(timeout=30) == 0
    gc = cli("env", "gc", "--older-than", "0")
    assert "removed uv-" in gc.stdout
    assert _envs(mlproject_home) == []


def test_env_commands(make_project, cli, mlproject_home):
    root = make_project(SIX_PROJECT, {"python_env.yaml": "dependencies: [six==1.16.0]\n"})
    missing = cli("env", "path", str(root))
    assert_clean_error(missing, contains="not built yet")
    built = cli("env", "build", str(root))
    assert built.returncode == 0, built.stderr
    path = cli("env", "path", str(root)).stdout.strip()
    assert path == built.stdout.strip() and Path(path).is_dir()
    listing = cli("env", "list").stdout
    assert "uv" in listing and str(root) in listing
    assert_clean_error(cli("env", "gc", "--older-than", "soon"), contains="expected a duration")
    unitless = cli("env", "gc", "--older-than", "30")  # 30 what? it once meant seconds and deleted this env
    assert_clean_error(unitless, contains="--older-than '30' needs a unit")
    assert "hint: for example --older-than 30d" in unitless.stderr
    assert len(_envs(mlproject_home)) == 1
    assert_clean_error(cli("env", "show", "ffffffff"), contains="no environment with key")
    dry = cli("env", "gc", "--older-than", "0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert re.search(r"^would remove uv-\w+ \(\d+\.\d [KMG]B, .*\)$", dry.stdout, re.M), dry.stdout
    assert re.search(r"^1 environment\(s\) would be removed, \d+\.\d [KMG]B would be freed; nothing was removed \(--dry-run\)$",
                     dry.stdout, re.M), dry.stdout
    assert len(_envs(mlproject_home)) == 1 and Path(path).is_dir()


def test_env_list_sizes_add_up_to_du(make_project, cli, mlproject_home):
    """uv hard-links files from its cache into every environment: each counts once, as du counts it."""
    for version in ("1.16.0", "1.15.0"):
        root = make_project(SIX_PROJECT, {"python_env.yaml": f"dependencies: [six=={version}, pip]\n"})
        assert cli("env", "build", str(root)).returncode == 0
    from runner.envs.admin import list_rows

    rows = list_rows()
    envs = [row.path for row in rows]
    du = subprocess.run(["du", "-s", "-B1", *map(str, envs)], capture_output=True, text=True, check=True).stdout
    by_du = {line.split("\t")[1]: int(line.split("\t")[0]) for line in du.splitlines()}
    from runner.store import disk_usage

    ours = disk_usage(envs)
    for env, size in zip(envs, ours):
        assert abs(size - by_du[str(env)]) <= 64 * 1024, (env, size, by_du[str(env)])  # du also counts the directory itself
    assert ours[1] < ours[0] / 2  # the second shares pip's files with the first


def test_env_list_show_and_gc_give_one_size_per_environment(make_project, cli, mlproject_home):
    """env list, env show and env gc --dry-run gave three sizes for one environment (each counted
    the files it shares with others by hard links in its own order, or not at all)."""
    for version in ("1.16.0", "1.15.0"):
        root = make_project(SIX_PROJECT, {"python_env.yaml": f"dependencies: [six=={version}, pip]\n"})
        assert cli("env", "build", str(root)).returncode == 0
    listed = {line.split()[0]: " ".join(line.split()[2:4]) for line in cli("env", "list").stdout.splitlines()[1:]}
    shown = {}
    for key in listed:
        size_line = next(line for line in cli("env", "show", key).stdout.splitlines() if line.startswith("size: "))
        shown[key] = size_line[len("size: "):]
    dry = cli("env", "gc", "--older-than", "0", "--dry-run").stdout
    collected = {name.split("-", 1)[1][:12]: size for name, size in re.findall(r"^would remove (\S+) \(([^,]+),", dry, re.M)}
    assert len(listed) == 2 and listed == shown == collected, (listed, shown, collected)


def test_bytecode_goes_to_the_environment_not_the_project(make_project, cli, mlproject_home):
    root = make_project(
        "entry_points:\n  main:\n    command: \"python -c 'import helper, six'\"\n",
        {"python_env.yaml": "dependencies: [six==1.16.0]\n", "helper.py": "X = 1\n"},
    )
    result = cli("run", str(root), env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 0, result.stderr
    env = _envs(mlproject_home)[0]
    cached = [p.name for p in (env / ".pycache").rglob("*.pyc")]
    assert any(name.startswith("six.") for name in cached) and any(name.startswith("helper.") for name in cached)
    assert not (root / "__pycache__").exists()


def test_build_progress_off_and_on_a_terminal(make_project, cli, mlproject_home):
    """Off a terminal (a CI log): a plain line when each step starts and one when it ends, with its
    duration. On a terminal: a live line with the elapsed time, left as `done in`."""
    import re

    from terminal import run_on_terminal

    root = make_project(SIX_PROJECT, {"python_env.yaml": "python: '3.11'\nbuild_dependencies: [pip]\ndependencies: [six==1.16.0]\n"})
    piped = cli("run", str(root), "--env-manager", "virtualenv")
    assert piped.returncode == 0, piped.stderr
    assert "  installing dependencies with pip ...\n" in piped.stderr
    assert re.search(r"^  installing dependencies with pip: done in \d+\.\d s$", piped.stderr, re.M), piped.stderr
    assert re.search(r"^  building environment virtualenv-\w{12} \(.*\): done in \d+\.\d s$", piped.stderr, re.M)
    assert "\r" not in piped.stderr and "\033" not in piped.stderr  # nothing animated in a log
    (root / "python_env.yaml").write_text("python: '3.11'\ndependencies: [six==1.15.0]\n")
    live = run_on_terminal("run", str(root), columns=80)
    assert live.returncode == 0, live.screen
    assert re.search(r"  [|/\\-] installing dependencies  \d+\.\d s", live.screen), live.screen
    # On a terminal the inner steps collapse into the build's own line, as uv's do; and no live
    # line is wider than the terminal (a wrapped one left a stale copy per redraw, spinner and all).
    assert "installing dependencies: done in" not in live.screen, live.screen
    assert re.search(r"  building environment uv-\w{12} \(.*\): done in \d+\.\d s\r?\n", live.screen), live.screen
    drawn = [piece.split("\r")[0].split("\n")[0] for piece in live.screen.split("\033[K")[1:]]
    live_lines = [line for line in drawn if re.match(r"  [|/\\-] ", line)]
    assert live_lines and all(len(line) < 80 for line in live_lines), live_lines
    assert any(line.startswith("  ") and line.endswith("...") and "building environment" in line for line in live_lines)
