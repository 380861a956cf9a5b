"""A toy environment manager, added as the README's "Adding a backend" shows for backends: its
environment is a directory with one script, `toy-hello`, on PATH."""
from __future__ import annotations

from pathlib import Path

from runner.envs import Environment, EnvRecipe, EnvOptions
from runner.errors import UsageError

NAME = "toy"
OPTIONS: tuple[str, ...] = ()
LOCK_NAME: str | None = None
NODE_NEEDS: tuple[str, ...] = ()


def describe(project) -> str:
    return "toy: one script on PATH"


def plan(project, notify, options: EnvOptions) -> EnvRecipe:
    return EnvRecipe(NAME, {"recipe": "toy-1"}, "one script", {"project": project.name or ""})


def resolve(plan: EnvRecipe, progress=None) -> None:
    pass


def check(plan: EnvRecipe, progress=None) -> None:
    pass


def build(plan: EnvRecipe, tmp: Path, final: Path, progress=None) -> None:
    script = tmp / "bin" / "toy-hello"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\necho hello from the toy environment\n")
    script.chmod(0o755)


def activate(plan: EnvRecipe, prefix: Path) -> Environment:
    return Environment(NAME, plan.key, prefix, (str(prefix / "bin"),))


def write_lock(project, platforms: list[str], notify, progress) -> Path:
    raise UsageError("the toy manager has no lock", hint="there is nothing to pin")
