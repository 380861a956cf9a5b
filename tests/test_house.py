"""The house: its seams are typed contracts that the type checker holds every module to."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyright() -> str:
    found = shutil.which("pyright", path=str(Path(sys.executable).parent))
    if found is None:
        raise AssertionError("pyright is not installed: `make setup` installs the dev tools (pip install pyright)")
    return found


def _assert_satisfies(module, protocol_module: str, protocol: str, work: Path) -> None:
    """pyright says `module` (a file beside the tests) satisfies `protocol_module.protocol`."""
    name = module.__name__
    shutil.copy(Path(module.__file__), work / f"{name}.py")
    check = work / f"check_{name}.py"
    check.write_text(f"from {protocol_module} import {protocol}\nimport {name}\n\n_: {protocol} = {name}\n")
    done = subprocess.run([_pyright(), "--pythonpath", sys.executable, str(check)], cwd=work,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]


def test_the_runner_type_checks_clean():
    """pyright (basic, pyproject's [tool.pyright]) on runner/: 0 errors."""
    done = subprocess.run([_pyright()], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "0 errors" in done.stdout, done.stdout[-4000:] + done.stderr[-2000:]


@pytest.mark.parametrize("drift", ["def stopped_by_cluster(job_id: str)", "def cancel(job_id: int)"])
def test_a_backend_that_drifts_from_its_contract_is_an_error(tmp_path, drift):
    """What `stopped_by_cluster(job_id)` once did in a docstring: the type checker now refuses it."""
    copy = tmp_path / "house"
    shutil.copytree(ROOT / "runner", copy / "runner")
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    slurm = copy / "runner" / "backends" / "slurm.py"
    text = slurm.read_text()
    name = drift.split("(")[0]
    start = text.index(name + "(")
    slurm.write_text(text[:start] + drift + text[text.index(")", start) + 1:])
    config = copy / "pyproject.toml"
    config.write_text(config.read_text().replace('venvPath = "."', f'venvPath = "{ROOT}"'))
    done = subprocess.run([_pyright()], cwd=copy, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "ClusterBackend" in done.stdout, done.stdout[-3000:]


def test_a_toy_backend_is_one_module_and_one_registry_line(make_project, mlproject_home, _work_in_tmp, caplog):
    import logging

    import toybackend

    import runner
    from runner import seams

    # The module is held to the Backend contract by the type checker, as a registered one is.
    _assert_satisfies(toybackend, "runner.backends.base", "Backend", _work_in_tmp)

    seams.register_backend("toy", lambda: toybackend)
    try:
        root = make_project("name: toy\nentry_points:\n  main:\n    command: 'echo ran on the toy'\n")
        with caplog.at_level(logging.INFO, logger="runner"):
            submitted = runner.run(str(root), backend="toy", env_manager="local")
        assert submitted.get_status() == "FINISHED"
        assert "ran on the toy" in Path(submitted.log_path).read_text()  # type: ignore[arg-type]
        assert f"{toybackend.TAKEN} of main" in caplog.text
    finally:
        seams.unregister("toy")


def test_a_toy_env_manager_is_one_module_and_one_registry_line(make_project, mlproject_home, _work_in_tmp):
    """A manager that builds a directory with one script on PATH: the store builds it once
    (locks, atomic publication), the run finds the script, and a second run reuses it."""
    import toymanager

    import runner
    from runner import seams

    _assert_satisfies(toymanager, "runner.envs.base", "EnvManager", _work_in_tmp)

    seams.register_env_manager("toy", lambda: toymanager)
    try:
        root = make_project("name: toy\nentry_points:\n  main:\n    command: 'toy-hello'\n")
        first = runner.run(str(root), env_manager="toy")
        second = runner.run(str(root), env_manager="toy")
        for submitted in (first, second):
            assert submitted.get_status() == "FINISHED"
            assert "hello from the toy environment" in Path(submitted.log_path).read_text()  # type: ignore[arg-type]
        built = list((mlproject_home / "envs").glob("toy-*"))
        assert len(built) == 1, built
        assert (built[0] / "bin" / "toy-hello").is_file()
    finally:
        seams.unregister("toy")
