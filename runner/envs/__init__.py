"""Environment managers behind one small protocol.

Each manager is a module exposing `describe(project) -> str` (what would be
used, without building anything) and `prepare(project, progress) -> Environment`
(build or reuse). Adding a manager adds a module and a line in `_MODULES`.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs ~9 ms on the warm path
    from typing import Mapping

from runner.errors import NotAvailableError, UsageError
from runner.project.spec import Project

MANAGERS = ("local", "virtualenv", "uv", "conda", "docker")
_MODULES = {"local": "runner.envs.local"}  # the others arrive with their issues


@dataclass(frozen=True)
class Environment:
    """How to run a command inside a prepared environment."""

    manager: str
    key: str | None = None
    prefix: Path | None = None
    path_prepend: tuple[str, ...] = ()
    set_vars: Mapping[str, str] = field(default_factory=dict)
    unset_vars: tuple[str, ...] = ()

    def apply(self, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        for name in self.unset_vars:
            env.pop(name, None)
        env.update(self.set_vars)
        if self.path_prepend:
            env["PATH"] = os.pathsep.join([*self.path_prepend, env.get("PATH", os.defpath)])
        return env

    def argv(self, command: str, env: Mapping[str, str]) -> list[str]:
        # bash as MLflow uses it (pipes and redirections in commands keep working).
        shell = which("bash", env.get("PATH")) or which("bash", os.defpath) or "/bin/sh"
        return [shell, "-c", command]


def which(program: str, search_path: str | None) -> str | None:
    """shutil.which without importing shutil (3-4 ms on the warm path)."""
    for directory in (search_path or "").split(os.pathsep):
        candidate = os.path.join(directory or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def choose_manager(project: Project, requested: str | None) -> str:
    if requested is not None:
        if requested not in MANAGERS:
            raise UsageError(
                f"--env-manager {requested!r} is not one of {', '.join(MANAGERS[:-1])}",
                hint="for example --env-manager uv",
            )
        if requested == "docker" and project.env.kind != "docker_env":
            raise UsageError("--env-manager docker needs a project with docker_env in its MLproject")
        return requested
    if project.env.kind == "docker_env":
        return "docker"
    if project.env.kind == "conda_env":
        return "conda"
    return "uv"


def manager_module(name: str):
    module_name = _MODULES.get(name)
    if module_name is None:
        raise NotAvailableError(
            f"the {name} environment manager is not available in this version",
            hint="run in the current Python environment with --env-manager local",
        )
    return importlib.import_module(module_name)
