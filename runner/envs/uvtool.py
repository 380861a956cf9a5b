"""The uv program, as every part of the runner that runs it needs it: the uv and virtualenv
managers, conda's pip step, locking (pylock.toml) and the store's administration."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from runner import home
from runner.errors import EnvironmentBuildError


def uv_binary() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        pass
    import shutil

    candidate = shutil.which("uv", path=os.path.dirname(sys.executable)) or shutil.which("uv")
    if candidate is None:
        raise EnvironmentBuildError("uv is not installed", hint="pip install uv (it comes with mlproject-runner)")
    return candidate


def uv_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "UV_CACHE_DIR": str(home.subdir("cache") / "uv"),
            "UV_PYTHON_DOWNLOADS": "never",  # no hidden download that hangs offline
            "UV_NO_PROGRESS": "1",
        }
    )
    for name in ("VIRTUAL_ENV", "CONDA_PREFIX", "UV_PROJECT_ENVIRONMENT", "PYTHONHOME"):
        env.pop(name, None)
    return env


def requirement_args(meta: Path, name: str, requirements) -> list[str]:
    req_file = meta / f"{name}.txt"
    req_file.write_text("\n".join(requirements.lines) + "\n")
    args = ["-r", str(req_file)]
    if requirements.constraints:
        constraints = meta / f"{name}-constraints.txt"
        constraints.write_text("\n".join(requirements.constraints) + "\n")
        args += ["-c", str(constraints)]
    return args
