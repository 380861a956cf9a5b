"""`--env-manager local`: run in the caller's own environment, nothing to build."""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs ~9 ms on the warm path
    from typing import Callable

from runner.envs import Environment
from runner.project.spec import Project


def describe(project: Project) -> str:
    return "local (the current environment; the project's env file is not used)"


def prepare(project: Project, progress: Callable[[str], None] | None = None) -> Environment:
    return Environment("local")
