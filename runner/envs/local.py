"""`--env-manager local`: run in the caller's own environment, nothing to build."""
from __future__ import annotations

from pathlib import Path

from runner.envs import Environment, EnvRecipe, EnvOptions
from runner.errors import UsageError
from runner.project.spec import Project

NAME = "local"
OPTIONS: tuple[str, ...] = ()
LOCK_NAME: str | None = None
NODE_NEEDS: tuple[str, ...] = ()


def describe(project: Project) -> str:
    return "local (the current environment; the project's env file is not used)"


def plan(project: Project, notify, options: EnvOptions) -> None:
    return None


def resolve(plan: EnvRecipe, progress=None) -> None:
    """Nothing to resolve."""


def check(plan: EnvRecipe, progress=None) -> None:
    """Nothing to resolve."""


def build(plan: EnvRecipe, tmp: Path, final: Path, progress=None) -> None:
    raise AssertionError("the local environment manager builds nothing (its plan is None)")


def activate(plan: EnvRecipe, prefix: Path) -> Environment:
    return Environment(NAME)


def write_lock(project: Project, platforms: list[str], notify, progress) -> Path:
    raise UsageError("mlproject lock needs a python_env.yaml or a conda.yaml (this project has neither)",
                     hint="add python_env.yaml (python_env: in MLproject) and lock it")
