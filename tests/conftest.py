"""Shared fixtures: an isolated MLPROJECT_HOME, project builders, and the real CLI."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitservers import free_port  # noqa: F401 - shared with the tests that import it from here

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def mlproject_home(tmp_path_factory, monkeypatch) -> Path:
    home = tmp_path_factory.mktemp("mlproject-home")
    monkeypatch.setenv("MLPROJECT_HOME", str(home))
    monkeypatch.setenv("MLPROJECT_KILL_GRACE", "2")
    # Tracking is tested on its own; keep other tests from writing ./mlflow.db.
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    # `python` in a project run with --env-manager local is this interpreter (it has mlflow).
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return home


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store made once by MLflow itself (creating one costs ~3 s)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def _work_in_tmp(request, tmp_path, monkeypatch):
    """Each test works in a directory of its own. Runs track to ./mlflow.db of the working
    directory: a test gets one, already created (tests of store creation remove it first),
    unless it is of the unit tier (marked `unit`), which needs no mlflow at all."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    if request.node.get_closest_marker("unit") is None:
        _place_mlflow_db(request.getfixturevalue("empty_mlflow_db"), work)
    return work


def _place_mlflow_db(template: Path, work: Path) -> None:
    import shutil

    import sqlite3

    shutil.copyfile(template, work / "mlflow.db")
    # MLflow puts the Default experiment's artifacts in ./mlruns/0 of the directory where it
    # made the store: here, as if it had been made in this test's directory, not the checkout.
    with sqlite3.connect(work / "mlflow.db") as db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (str(work / "mlruns" / "0"),))
    db.close()


# -- tiers and what a test needs -------------------------------------------------------------------
# What a test needs is marked from the fixtures it uses (`-m "not cluster"` leaves the Slurm and
# Ray tests out, and so on); the unit tier is marked by hand, and `make unit` runs it with mlflow
# made unimportable, so that a unit test that needs it fails there.
_NEEDS = {  # (fixture, the module defining it) -> marker
    ("slurm_cluster", "test_slurm"): "cluster", ("ray_cluster", "test_ray"): "cluster",
    ("daemon", "conftest"): "docker", ("demo", "test_git"): "git_servers", ("mlflow_server", "conftest"): "mlflow_server",
}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        for name in item.fixturenames:
            for definition in definitions.get(name, ()):
                marker = _NEEDS.get((name, getattr(definition.func, "__module__", "")))
                if marker is not None:
                    item.add_marker(marker)


class _NoMlflow:
    """(The unit tier.) mlflow and its database layer cannot be imported."""

    BLOCKED = ("mlflow", "sqlalchemy", "alembic")

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ImportError(f"{name}: the unit tier runs without mlflow (MLPROJECT_TESTS_UNIT_TIER)")
        return None


if os.environ.get("MLPROJECT_TESTS_UNIT_TIER"):
    sys.meta_path.insert(0, _NoMlflow())


def pytest_ignore_collect(collection_path, config):
    """(The unit tier.) Only the files that hold unit tests are collected: the others import mlflow."""
    if os.environ.get("MLPROJECT_TESTS_UNIT_TIER") and collection_path.suffix == ".py":
        return "pytest.mark.unit" not in collection_path.read_text(encoding="utf-8")
    return None


def write_project(root: Path, mlproject: str | None = None, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if mlproject is not None:
        (root / "MLproject").write_text(textwrap.dedent(mlproject).lstrip())
    for name, content in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content).lstrip())
    return root


@pytest.fixture
def make_project(tmp_path):
    counter = iter(range(1000))

    def make(mlproject: str | None = None, files: dict[str, str] | None = None, name: str | None = None) -> Path:
        return write_project(tmp_path / (name or f"project{next(counter)}"), mlproject, files)

    return make


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 180) -> Result:
    """The real `mlproject` command in a fresh interpreter."""
    completed = subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


@pytest.fixture
def cli():
    return run_cli


def assert_clean_error(result: Result, code: int = 2, contains: str | None = None) -> None:
    """One `error:` line and one `hint:` line, the documented exit code, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr
    hint_lines = [line for line in result.stderr.splitlines() if line.startswith("hint: ")]
    assert len(hint_lines) == 1, result.stderr
    if contains is not None:
        assert contains in error_lines[0], error_lines[0]


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


# With MLflow's default SQLAlchemy pool (5 + 10 connections), 50 parallel runs made the
# sqlite-backed server stop answering for 30 s (the pool's timeout) and then answer
# 400 "QueuePool limit ... reached" (seen here and in a CI failure); with a larger pool,
# no stall in 7 runs. A server meant for 50 parallel runs is sized for
# them; the runner's handling of that answer is tested through the proxy (test_faults.py).
SERVER_POOL = {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "20", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "80"}


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` with a sqlite backend and proxied artifacts (one per test session)."""
    import signal
    import socket
    import time
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root}/server.db", "--artifacts-destination", str(root / "artifacts"),
         "--workers", "1"],
        stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, **SERVER_POOL},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("mlflow server exited: " + (root / "server.log").read_text()[-2000:]) from None
            time.sleep(0.3)
    else:
        raise RuntimeError("mlflow server did not start in 120 s: " + (root / "server.log").read_text()[-2000:])
    # Its job consumers keep both cores busy for seconds after the port opens; tests that
    # start many runs at once would otherwise meet a server still starting (pool timeouts).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from harness import wait_until_idle

    wait_until_idle(proc.pid, limit=60)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def channel_root(tmp_path_factory) -> Path:
    """A directory of channels: `conda-forge` (so unmodified projects resolve it
    through channel_alias) holding the test packages."""
    from condachannel import build_channel

    root = tmp_path_factory.mktemp("conda-channels")
    build_channel(root / "conda-forge")
    return root


@pytest.fixture
def channel(channel_root, tmp_path, monkeypatch) -> str:
    """The local channel as `conda-forge`, through a .condarc's channel_alias."""
    from condachannel import condarc

    monkeypatch.setenv("CONDARC", str(condarc(tmp_path / "condarc", channel_alias=f"file://{channel_root}")))
    return f"file://{channel_root / 'conda-forge'}"


@pytest.fixture
def own_channel(channel_root, tmp_path, monkeypatch) -> Path:
    """A private copy of the channel, as `conda-forge`, that a test may publish to."""
    import shutil

    from condachannel import condarc

    root = tmp_path / "channels"
    shutil.copytree(channel_root / "conda-forge", root / "conda-forge")
    monkeypatch.setenv("CONDARC", str(condarc(tmp_path / "condarc-own", channel_alias=f"file://{root}")))
    return root / "conda-forge"


@pytest.fixture(scope="session")
def daemon():
    """A private dockerd (tests/dockerd.py) with the locally made base image loaded."""
    from dockerd import Daemon

    server = Daemon()
    server.start()
    try:
        server.load_base_image()
        yield server
    finally:
        server.stop()


# A local package that resolves (its metadata is static) and fails to build: a build failure
# after the requirements resolved, which ends the run FAILED.
BROKEN_PACKAGE = {
    "broken/pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n\n'
                             '[project]\nname = "broken"\nversion = "1.0"\ndependencies = []\n',
    "broken/backend.py": 'def build_wheel(*args, **kwargs):\n    raise SystemExit("this package does not build")\n',
}
