"""The wheel installs on its own: console script, `python -m runner`, schemas inside."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO


def test_wheel_ships_schemas_and_runs_installed(tmp_path, make_project):
    from runner.envs.uvtool import uv_binary

    uv = uv_binary()
    out = tmp_path / "dist"
    subprocess.run([uv, "build", "--wheel", "-q", "-o", str(out), str(REPO)], check=True)
    wheel = next(out.glob("mlproject_runner-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for schema in ("mlproject.schema.json", "python_env.schema.json", "conda_env.schema.json"):
        assert f"runner/schemas/{schema}" in names
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True)
    subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), str(wheel)], check=True)
    root = make_project("name: w\nentry_points:\n  main:\n    parameters:\n      a: {type: [float]}\n    command: echo {a}\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(venv / "bin" / "mlproject"), "validate", str(root)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "MLproject:5: entry_points.main.parameters.a.type: expected a string" in result.stderr
    located = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "runner", "--version"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert located.returncode == 0 and located.stdout.startswith("mlproject-runner ")
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import runner.project.schema as s; print(s.schema_dir())"],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )
    assert Path(where.stdout.strip()).is_relative_to(venv)
