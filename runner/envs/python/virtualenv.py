"""`--env-manager virtualenv`: the virtualenv package plus pip, for pip's behaviour.

Built in the store's temporary directory, then its scripts are rewritten for
the final path (virtualenv has no relocatable mode). pip's cache lives in the
store.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from runner import home
from runner.envs import EnvRecipe
from runner.envs.python import spec as pythonenv
from runner.envs.build import run_step
from runner.envs.python import pylock
from runner.envs.python.uv import check, finish  # noqa: F401 - check: the same resolution as uv's
from runner.envs.uvtool import requirement_args

NAME = "virtualenv"

OPTIONS: tuple[str, ...] = pythonenv.OPTIONS
LOCK_NAME: str | None = pylock.LOCK_NAME  # (recorded in every environment built)
NODE_NEEDS: tuple[str, ...] = ("virtualenv",)
describe, plan, resolve, activate, write_lock = pythonenv.manager_api(NAME)


def build(plan: EnvRecipe, tmp: Path, final: Path, progress=None) -> None:
    contents = plan.contents
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_CACHE_DIR"] = str(home.subdir("cache") / "pip")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["VIRTUALENV_OVERRIDE_APP_DATA"] = str(home.subdir("cache") / "virtualenv")
    log = tmp.parent / f"{tmp.name}.log"  # moved inside once the directory exists
    run_step(
        [sys.executable, "-m", "virtualenv", "--no-periodic-update", "--python", contents.interpreter.path, str(tmp)],
        "creating the virtualenv",
        env=env,
        log=log,
        progress=progress,
    )
    python = str(tmp / "bin" / "python")
    meta = tmp / ".mlproject"
    meta.mkdir()
    os.replace(log, meta / "build.log")
    log = meta / "build.log"
    if contents.lock is not None:
        # pip installs no pylock.toml yet: the same pins, with every file's hash, so pip takes the
        # file for this machine and checks it, and installs nothing the lock does not name.
        shutil.copyfile(contents.lock.path, meta / pylock.LOCK_NAME)
        (meta / "pylock-requirements.txt").write_text("\n".join(pylock.pip_requirement_lines(contents.lock)) + "\n")
        run_step([python, "-m", "pip", "install", "--no-deps", "--require-hashes", "-r", str(meta / "pylock-requirements.txt")],
                 f"installing {len(contents.lock.packages)} package(s) from {contents.lock.path.name} with pip",
                 env=env, log=log, progress=progress)
    for label, requirements in (("build dependencies", contents.build_requirements), ("dependencies", contents.requirements)):
        if not requirements.lines or contents.lock is not None:
            continue
        args = requirement_args(meta, label.replace(" ", "-"), requirements)
        run_step([python, "-m", "pip", "install", *args], f"installing {label} with pip", env=env, log=log, progress=progress)
    finish(tmp, final, contents, log, progress)
