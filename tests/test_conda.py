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

from condachannel import build_channel, condarc
from conftest import assert_clean_error

COMMAND = (
    "python -c 'import pyhello, sys; print(pyhello.greet(\"conda\")); print(\"prefix\", sys.prefix)'"
    " && greet && echo \"activated $GREETER_HOME $CONDA_PREFIX\""
)


@pytest.fixture(scope="session")
def channel_root(tmp_path_factory) -> Path:
    """A directory of channels: `conda-forge` (so unmodified projects resolve it
    through channel_alias) holding the test packages."""
    root = tmp_path_factory.mktemp("conda-channels")
    build_channel(root / "conda-forge")
    return root


@pytest.fixture
def channel(channel_root, tmp_path, monkeypatch) -> str:
    """The local channel as `conda-forge`, through a .condarc's channel_alias."""
    monkeypatch.setenv("CONDARC", str(condarc(tmp_path / "condarc", channel_alias=f"file://{channel_root}")))
    return f"file://{channel_root / 'conda-forge'}"


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
        ("channels: [conda-forge]\ndependencies: [helper, {pip: [six]}]\n", "needs python"),
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


def test_seed_tutorial_conda_yaml_unchanged(cli, channel, make_project):
    """MLflow's sklearn_elasticnet_wine-style conda.yaml, as published (conda-forge,
    a pinned python, a pip list), resolved against the local channel via channel_alias."""
    conda_yaml = textwrap.dedent("""
        name: tutorial
        channels:
          - conda-forge
        dependencies:
          - python=3.11
          - pip<=23.3
          - pip:
            - six==1.16.0
    """)
    # pip itself is not in the local channel: the published file needs it, so it says so clearly...
    root = conda_project(make_project, conda_yaml, "python -c 'import six; print(six.__version__)'")
    result = cli("run", str(root))
    assert_clean_error(result, 2, "no package pip")
    # ...and without the pip line (rattler needs no pip to install the pip: list) it runs.
    root = conda_project(make_project, conda_yaml.replace("  - pip<=23.3\n", ""), "python -c 'import six; print(six.__version__)'")
    result = cli("run", str(root))
    assert result.returncode == 0, result.stderr
    assert "1.16.0" in result.stdout
