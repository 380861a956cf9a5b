"""`--env-manager local`: run in the caller's own environment, nothing to build."""
from __future__ import annotations

from runner.envs import Environment
from runner.project.spec import Project


def describe(project: Project) -> str:
    return "local (the current environment; the project's env file is not used)"


def plan(project: Project, notify=None) -> None:
    return None


def activate(plan: None, prefix: None) -> Environment:
    return Environment("local")
