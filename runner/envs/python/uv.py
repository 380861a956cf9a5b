"""`--env-manager uv` (the default for Python projects): a uv virtualenv.

Built with `uv venv --relocatable` in the store's temporary directory and
installed with `uv pip install` (or `uv sync --frozen` for a uv.lock project),
with uv's cache inside the store so installs hard-link.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from runner.envs import EnvRecipe
from runner.envs.python import pylock
from runner.envs.python import spec as pythonenv
from runner.envs.build import relocate, run_step
from runner.envs.python.installed import installed_packages
from runner.envs.uvtool import requirement_args, uv_binary, uv_env

NAME = "uv"

OPTIONS: tuple[str, ...] = pythonenv.OPTIONS
LOCK_NAME: str | None = pylock.LOCK_NAME  # (recorded in every environment built)
NODE_NEEDS: tuple[str, ...] = ("uv",)
describe, plan, resolve, activate, write_lock = pythonenv.manager_api(NAME)


def build(plan: EnvRecipe, tmp: Path, final: Path, progress=None) -> None:
    contents = plan.contents
    uv = uv_binary()
    env = uv_env()
    log = tmp.parent / f"{tmp.name}.log"  # moved inside once the directory exists
    run_step([uv, "venv", "--relocatable", "--python", contents.interpreter.path, str(tmp)], "creating the virtualenv", env=env, log=log, progress=progress)
    python = str(tmp / "bin" / "python")
    meta = tmp / ".mlproject"
    meta.mkdir()
    os.replace(log, meta / "build.log")
    log = meta / "build.log"
    if contents.uv_project is not None:
        sync_env = {**env, "UV_PROJECT_ENVIRONMENT": str(tmp)}
        run_step(
            [uv, "sync", "--frozen", "--no-install-project", "--project", str(contents.uv_project), "--python", python],
            "installing from uv.lock (uv sync --frozen)",
            env=sync_env,
            log=log,
            progress=progress,
        )
    if contents.lock is not None:  # exactly the lock: what it names, each file checked against its hash
        recorded = meta / pylock.LOCK_NAME
        shutil.copyfile(contents.lock.path, recorded)
        run_step([uv, "pip", "install", "--python", python, *pylock.uv_install_args(recorded)],
                 f"installing {len(contents.lock.packages)} package(s) from {contents.lock.path.name}",
                 env=env, log=log, progress=progress)
    for label, requirements in (("build dependencies", contents.build_requirements), ("dependencies", contents.requirements)):
        if not requirements.lines or contents.lock is not None:
            continue
        args = requirement_args(meta, label.replace(" ", "-"), requirements)
        run_step([uv, "pip", "install", "--python", python, *args], f"installing {label}", env=env, log=log, progress=progress)
    finish(tmp, final, contents, log, progress)


def finish(tmp: Path, final: Path, contents, log: Path, progress) -> None:
    """What every Python environment keeps of itself: its package list, and what it holds as a
    pylock.toml (the lock a rerun installs); then its scripts name the final path."""
    from runner.platforms import platform_name

    meta = tmp / ".mlproject"
    (meta / "packages.txt").write_text("".join(line + "\n" for line in installed_packages(tmp)))
    if contents.lock is None:
        pylock.record_installed(tmp, contents.interpreter.version, platform_name(), log, progress)
    relocate(tmp, tmp, final)


def check(plan: EnvRecipe, progress=None) -> None:
    """Resolve the requirements for the project's Python without installing anything
    (`mlproject validate --resolve`): a misspelled or unsatisfiable requirement is reported."""
    import tempfile

    contents = plan.contents
    uv = uv_binary()
    with tempfile.TemporaryDirectory(prefix="mlproject-resolve-") as scratch:
        for label, requirements in (("build dependencies", contents.build_requirements), ("dependencies", contents.requirements)):
            if not requirements.lines:
                continue
            args = requirement_args(Path(scratch), label.replace(" ", "-"), requirements)[1:]  # compile takes the file itself
            run_step([uv, "pip", "compile", "--quiet", "--no-header", "--python", contents.interpreter.path, *args],
                     f"resolving {label}", env=uv_env(), progress=progress)
