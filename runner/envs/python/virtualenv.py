"""`--env-manager virtualenv`: the virtualenv package plus pip, for pip's behaviour.

Built in the store's temporary directory, then its scripts are rewritten for
the final path (virtualenv has no relocatable mode). pip's cache lives in the
store.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from runner import home
from runner.envs import EnvPlan
from runner.envs.python import spec as pythonenv
from runner.envs.build import relocate, run_step
from runner.envs.python.installed import installed_packages
from runner.envs.python.uv import check, requirement_args  # noqa: F401 - check: the same resolution as uv's

NAME = "virtualenv"

describe, plan, activate = pythonenv.manager_api(NAME)


def build(plan: EnvPlan, tmp: Path, final: Path, progress=None) -> None:
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
    for label, requirements in (("build dependencies", contents.build_requirements), ("dependencies", contents.requirements)):
        if not requirements.lines:
            continue
        args = requirement_args(meta, label.replace(" ", "-"), requirements)
        run_step([python, "-m", "pip", "install", *args], f"installing {label} with pip", env=env, log=log, progress=progress)
    (meta / "packages.txt").write_text("".join(line + "\n" for line in installed_packages(tmp)))
    relocate(tmp, tmp, final)
