"""Conda environments with no conda on the machine, against a real local channel
(tests/condachannel.py): solve, install, activation, the pip list, reuse, errors,
and concurrent first runs. Runs go through the real CLI and track into ./mlflow.db."""
from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from condachannel import condarc
from conftest import assert_clean_error

COMMAND = (
    "python -c 'import pyhello, sys; print(pyhello.greet(\"conda\")); print(\"prefix\", sys.prefix)'"
    " && greet && echo \"activated $GREETER_HOME $CONDA_PREFIX\""
)


def conda_project(make_project, conda_yaml: str, command: str = COMMAND, files: dict | None = None) -> Path:
    return make_project(
        f"name: condademo\nconda_env: conda.yaml\nentry_points:\n  main:\n    command: \"{_yaml_escape(command)}\"\n",
        {"conda.yaml": conda_yaml, **(files or {})},
    )


def _yaml_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


FULL = """
name: demo
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pyhello
  - greeter
  - pip:
    - -r requirements.txt
"""


def envs_built(home: Path) -> list[str]:
    log = home / "envs" / ".builds.log"
    return log.read_text().splitlines() if log.exists() else []


def runs_in(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("select count(*) from runs").fetchone()[0]


def test_conda_project_end_to_end(cli, channel, make_project, mlproject_home, _work_in_tmp):
    root = conda_project(make_project, FULL, files={"requirements.txt": "six==1.16.0\n"})
    result = cli("run", str(root))
    assert result.returncode == 0, result.stderr
    prefix = re.search(r"^prefix (\S+)$", result.stdout, re.M).group(1)
    assert prefix.startswith(str(mlproject_home / "envs" / "conda-"))
    assert "hello conda from a conda package" in result.stdout
    # The placeholder in greeter's script names the final prefix, not the temporary build.
    assert f"greeter lives in {prefix}/share/greeter" in result.stdout
    assert f"activated {prefix}/share/greeter {prefix}" in result.stdout  # activate.d ran, CONDA_PREFIX set
    # Files come hard-linked from the package cache in the store (a patched file is a copy).
    assert os.stat(Path(prefix) / "lib" / "python3.11" / "os.py").st_nlink >= 2
    assert os.stat(Path(prefix) / "bin" / "greet").st_nlink == 1
    packages = (Path(prefix) / ".mlproject" / "packages.txt").read_text()
    assert "python==3.11" in packages and "greeter==1.0=0" in packages and "six==1.16.0 (pip)" in packages
    assert channel in packages
    run_id = re.search(r"run with ID '([0-9a-f]{32})'", result.stderr).group(1)
    with sqlite3.connect(_work_in_tmp / "mlflow.db") as conn:
        tags = dict(conn.execute("select key, value from tags where run_uuid = ?", (run_id,)).fetchall())
    assert tags["mlflow.project.env"] == "conda"
    # Reused: the second run builds nothing and imports no solver.
    again = cli("run", str(root))
    assert again.returncode == 0 and len(envs_built(mlproject_home)) == 1


def test_key_ignores_order_comments_and_name_but_not_specs(cli, channel, make_project, mlproject_home):
    first = conda_project(make_project, "channels: [conda-forge]\ndependencies: [helper=1.0, datalib=1.0]\n", "true")
    same = conda_project(
        make_project, "# a comment\nname: other\nchannels: [conda-forge]\ndependencies:\n  - datalib=1.0   # why\n  - helper=1.0\n",
        "true",
    )
    different = conda_project(make_project, "channels: [conda-forge]\ndependencies: [helper=1.5, datalib=1.0]\n", "true")
    paths = [cli("env", "build", str(root)).stdout.strip() for root in (first, same, different)]
    assert paths[0] == paths[1] != paths[2]
    assert (Path(paths[0]) / "share" / "helper" / "VERSION").read_text() == "1.0\n"


def test_channels_resolve_like_conda(cli, channel_root, make_project, tmp_path, monkeypatch):
    # custom_channels: a name served from another base URL.
    monkeypatch.setenv("CONDARC", str(condarc(tmp_path / "rc", custom_channels={"conda-forge": f"file://{channel_root}"},
                                              channel_alias="file:///nonexistent")))
    root = conda_project(make_project, "channels: [conda-forge]\ndependencies: [greeter]\n", "greet")
    result = cli("run", str(root))
    assert result.returncode == 0, result.stderr
    # A file:// URL and an absolute path stand for themselves; conda-forge:: names a channel per spec.
    monkeypatch.setenv("CONDARC", str(condarc(tmp_path / "rc2", channel_alias=f"file://{channel_root}")))
    for yaml_text in (f"channels: ['{channel_root / 'conda-forge'}']\ndependencies: [greeter]\n",
                      "channels: [nowhere-else]\ndependencies: ['conda-forge::greeter']\n"):
        root = conda_project(make_project, yaml_text, "greet")
        result = cli("run", str(root))
        if "nowhere-else" in yaml_text:  # the listed channel does not exist: said clearly
            assert_clean_error(result, 2, "nowhere-else")
            continue
        assert result.returncode == 0, result.stderr


def test_conflict_names_the_packages_and_creates_nothing(cli, channel, make_project, mlproject_home, _work_in_tmp):
    root = conda_project(make_project, "channels: [conda-forge]\ndependencies: [datalib=2.0, tool]\n", "true")
    result = cli("run", str(root))
    assert_clean_error(result, 2, "cannot be satisfied together")
    line = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert "tool 1.0 requires helper <1.5" in line and "datalib 2.0 requires helper >=2.0" in line
    assert runs_in(_work_in_tmp / "mlflow.db") == 0
    assert not [p for p in (mlproject_home / "envs").glob("*") if p.name.startswith(("conda-", ".tmp-"))] if (mlproject_home / "envs").exists() else True


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("channels: [conda-forge]\ndependencies: [nosuchpkg]\n", "no package nosuchpkg in"),
        ("channels: [conda-forge]\ndependencies: [helper=9]\n", "no package helper 9.* in"),
        ("channels: [no-such-channel]\ndependencies: [helper]\n", "cannot read a conda channel"),
        ("channels: [conda-forge]\ndependencies: ['helper >=>1']\n", "invalid match spec"),
        ("channels: [conda-forge]\ndependencies: [helper]\nsurprise: 1\n", "conda.yaml"),
    ],
)
def test_bad_specs_are_one_clear_line(cli, channel, make_project, mlproject_home, _work_in_tmp, yaml_text, message):
    root = conda_project(make_project, yaml_text, "true")
    result = cli("run", str(root))
    if "surprise" in yaml_text:  # an unknown key is a warning with its line; the run goes on
        assert result.returncode == 0 and "conda.yaml:3" in result.stderr, result.stderr
        return
    assert_clean_error(result, 2, message)
    assert runs_in(_work_in_tmp / "mlflow.db") == 0
    if "no-such-channel" in yaml_text:  # the way to run it offline is named
        assert "--env-manager uv runs the project with its python and pip: list" in result.stderr


def test_conda_yaml_without_python_solves_as_conda_would(cli, channel, make_project):
    """mlflow/mlflow-example's form: pip and a pip: list, no python; conda brings python with pip."""
    root = conda_project(make_project, "channels: [conda-forge]\ndependencies:\n  - helper\n  - pip\n"
                                       "  - pip:\n    - six==1.16.0\n",
                         "python -c 'import sys, six; print(sys.version_info[:2], six.__version__)'")
    result = cli("run", str(root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(3, 11) 1.16.0"
    assert "note: conda.yaml names no python; the solve chose python 3.11" in result.stderr
    bare = conda_project(make_project, "channels: [conda-forge]\ndependencies:\n  - pip:\n    - six==1.16.0\n",
                         "python -c 'import six; print(six.__version__)'")
    result = cli("run", str(bare))  # not even pip named: the pip: list brings it, as conda does
    assert result.returncode == 0 and result.stdout.strip() == "1.16.0", result.stderr


def test_conda_env_export_pins(cli, channel, make_project):
    """`conda env export` writes name=version=build (and name==version): conda's own match specs."""
    from condachannel import _find_interpreter_prefix

    python = _find_interpreter_prefix("3.11").name  # the channel's python: this machine's 3.11 (see condachannel)
    root = conda_project(make_project, "name: exported\nchannels: [conda-forge]\ndependencies:\n"
                                       f"  - python={python}=h_local_0\n  - helper==1.5\n  - pyhello=0.1=py_0\n",
                         "cat $CONDA_PREFIX/share/helper/VERSION")
    result = cli("run", str(root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1.5"


def test_solve_timeout_is_reported(cli, channel, make_project, monkeypatch):
    root = conda_project(make_project, "channels: [conda-forge]\ndependencies: [python=3.11, pyhello, greeter]\n", "true")
    result = cli("run", str(root), env={"MLPROJECT_CONDA_SOLVE_TIMEOUT": "0.000001"})
    assert_clean_error(result, 2, "timed out")


def test_eight_concurrent_first_runs_build_once(channel, make_project, mlproject_home, _work_in_tmp):
    root = conda_project(make_project, "channels: [conda-forge]\ndependencies: [python=3.11, pyhello, greeter]\n")
    argv = [sys.executable, "-m", "runner", "run", str(root)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
             for _ in range(8)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "hello conda from a conda package" in out
    assert len(envs_built(mlproject_home)) == 1
    assert not list((mlproject_home / "envs").glob(".tmp-*"))


def test_seed_tutorial_conda_yaml(cli, channel_root, make_project, tmp_path, monkeypatch):
    """The salary tutorial's conda.yaml as such projects publish it (the `defaults`
    channel, python, pip, a pip: list), python pinned to one this machine has, and
    `defaults` pointed at the local channel by a .condarc."""
    monkeypatch.setenv("CONDARC", str(condarc(tmp_path / "rc", default_channels=[f"file://{channel_root / 'conda-forge'}"])))
    conda_yaml = textwrap.dedent("""
        name: salary
        channels:
          - defaults
        dependencies:
          - python=3.11
          - pip
          - pip:
            - six==1.16.0
    """)
    root = conda_project(make_project, conda_yaml, "pip --version && python -c 'import six; print(six.__version__)'")
    result = cli("run", str(root))
    assert result.returncode == 0, result.stderr
    assert re.search(r"^pip \S+ from \S+/envs/conda-\S+/lib/python3.11/site-packages/pip", result.stdout, re.M), result.stdout
    assert "1.16.0" in result.stdout


# -- conda-lock.yml ------------------------------------------------------------------------
def _publish_helper_3(channel_dir: Path) -> None:
    from condachannel import Package, PackageFile, index, write_package

    write_package(Package("helper", "3.0", files=[PackageFile("share/helper/VERSION", b"3.0\n")]), channel_dir)
    index(channel_dir)


LOCKED = """
channels: [conda-forge]
dependencies:
  - python=3.11
  - pyhello
  - helper
  - pip:
    - six==1.16.0
"""
SHOW = "cat $CONDA_PREFIX/share/helper/VERSION && python -c 'import six, pyhello; print(\"six\", six.__version__)'"


def test_lock_then_install_exactly_from_it(cli, own_channel, make_project, mlproject_home):
    root = conda_project(make_project, LOCKED, SHOW)
    result = cli("lock", str(root))
    assert result.returncode == 0, result.stderr
    lock = yaml_load(root / "conda-lock.yml")
    assert lock["version"] == 1 and list(lock["metadata"]["content_hash"]) == ["linux-64"]
    by_name = {p["name"]: p for p in lock["package"]}
    assert by_name["helper"]["version"] == "2.0" and by_name["six"]["manager"] == "pip"
    assert by_name["python"]["hash"]["md5"] and by_name["six"]["hash"]["sha256"]
    _publish_helper_3(own_channel)  # a solve would now pick helper 3.0; the lock keeps 2.0
    locked = cli("run", str(root), "--locked")
    assert locked.returncode == 0, locked.stderr
    assert locked.stdout.splitlines()[0] == "2.0" and "six 1.16.0" in locked.stdout
    assert "stale" not in locked.stderr
    (root / "conda-lock.yml").unlink()
    solved = cli("run", str(root))
    assert solved.returncode == 0 and solved.stdout.splitlines()[0] == "3.0", solved.stderr


def test_stale_or_missing_lock(cli, own_channel, make_project):
    root = conda_project(make_project, LOCKED, SHOW)
    assert cli("lock", str(root)).returncode == 0
    (root / "conda.yaml").write_text(LOCKED.replace("  - helper\n", "  - helper\n  - greeter\n"))
    stale = cli("run", str(root))
    assert stale.returncode == 0, stale.stderr
    assert "warning: conda-lock.yml is stale" in stale.stderr
    assert_clean_error(cli("run", str(root), "--locked"), 2, "--locked: conda-lock.yml is stale")
    (root / "conda-lock.yml").unlink()
    assert_clean_error(cli("run", str(root), "--locked"), 2, "no conda-lock.yml")
    # Reordering and comments are not changes: the lock stays current.
    assert cli("lock", str(root)).returncode == 0
    text = (root / "conda.yaml").read_text().replace("  - pyhello\n  - helper\n", "  - helper   # reordered\n  - pyhello\n")
    (root / "conda.yaml").write_text("# a comment\n" + text)
    current = cli("run", str(root), "--locked")
    assert current.returncode == 0 and "stale" not in current.stderr, current.stderr


def test_lock_for_several_platforms(cli, channel, make_project):
    root = conda_project(make_project, "channels: [conda-forge]\ndependencies: [datalib=1.0]\n", "true")
    result = cli("lock", str(root), "--platform", "linux-64", "--platform", "osx-arm64")
    assert result.returncode == 0, result.stderr
    lock = yaml_load(root / "conda-lock.yml")
    assert sorted(lock["metadata"]["content_hash"]) == ["linux-64", "osx-arm64"]
    assert {(p["platform"], p["name"]) for p in lock["package"]} == {
        (platform, name) for platform in ("linux-64", "osx-arm64") for name in ("datalib", "helper")
    }
    # python is only in the channel for linux-64: the other platform's solve says so.
    other = conda_project(make_project, "channels: [conda-forge]\ndependencies: [python=3.11]\n", "true")
    assert_clean_error(cli("lock", str(other), "--platform", "osx-arm64"), 2, "for osx-arm64")


@pytest.fixture(scope="module")
def conda_lock_tool(tmp_path_factory) -> Path:
    """The PyPI conda-lock package in a virtualenv of its own (it pulls ~60 packages: not ours to carry)."""
    from runner.envs.uvtool import uv_binary

    venv = tmp_path_factory.mktemp("conda-lock") / "venv"
    subprocess.run([uv_binary(), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    installed = subprocess.run([uv_binary(), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "conda-lock"],
                               capture_output=True, text=True)
    assert installed.returncode == 0, f"conda-lock could not be installed from the package index: {installed.stderr}"
    return venv / "bin"


def test_conda_lock_tool_renders_our_lock(cli, channel, make_project, conda_lock_tool):
    """The PyPI conda-lock tool reads the file we write (its `render` command)."""
    root = conda_project(make_project, LOCKED, SHOW)
    assert cli("lock", str(root)).returncode == 0
    rendered = subprocess.run([str(conda_lock_tool / "conda-lock"), "render", "-k", "explicit", "--platform", "linux-64",
                               "conda-lock.yml"], cwd=root, capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    explicit = (root / "conda-linux-64.lock").read_text()
    assert "@EXPLICIT" in explicit and "python-3.11" in explicit and "# pip six @ " in explicit


def test_lock_written_by_conda_lock_installs_with_locked(cli, own_channel, make_project, conda_lock_tool):
    """A conda-lock.yml made by conda-lock's own writer (and content hash) installs exactly, with --locked."""
    root = conda_project(make_project, "channels: [conda-forge]\ndependencies: [python=3.11, helper, pyhello]\n",
                         "cat $CONDA_PREFIX/share/helper/VERSION && python -c 'import pyhello; print(pyhello.greet(1))'")
    tool = Path(__file__).parent / "condalock_tool.py"
    written = subprocess.run([str(conda_lock_tool / "python"), str(tool), str(own_channel), str(root / "conda.yaml"),
                              "python=3.11", "helper=1.5", "pyhello"], capture_output=True, text=True)
    assert written.returncode == 0, written.stderr
    lock = yaml_load(root / "conda-lock.yml")
    assert lock["version"] == 1 and lock["metadata"]["content_hash"]["linux-64"]
    locked = cli("run", str(root), "--locked")
    assert locked.returncode == 0, locked.stderr
    assert locked.stdout.splitlines()[0] == "1.5"  # the lock's helper, where a solve picks 2.0
    assert "note: conda-lock.yml was not written by mlproject" in locked.stderr
    solved = cli("run", str(root))
    assert solved.returncode == 0 and solved.stdout.splitlines()[0] == "2.0", solved.stderr
    assert "warning: conda-lock.yml was not written by mlproject" in solved.stderr


def yaml_load(path: Path):
    import yaml

    return yaml.safe_load(path.read_text())
