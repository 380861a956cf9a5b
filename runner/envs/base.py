"""The environment-manager seam: what the pipeline asks of a manager, as a typed contract.

A manager is a module that satisfies `EnvManager`, registered once in `runner.envs` by a
loader whose return type is `EnvManager`: the type checker (`make lint`) then checks the
module against it. The store (`runner.store`) does the locking, atomic publication,
listing and gc of what managers build; a manager only says what to build and how.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    from runner.envs import Environment, EnvRecipe, EnvOptions
    from runner.project.spec import Project

Notify = Callable[[str], None]


class EnvManager(Protocol):
    # (Read-only members: a module's constants satisfy them.)
    @property
    def NAME(self) -> str:
        """As --env-manager names it."""
        ...

    @property
    def OPTIONS(self) -> tuple[str, ...]:
        """Which of EnvOptions' fields it takes (`locked`, `lock_file`, `build_image`,
        `docker_args`); another one set is a usage error."""
        ...

    @property
    def LOCK_NAME(self) -> Optional[str]:
        """The lock it records in every environment it builds (and a rerun installs); None: none."""
        ...

    @property
    def NODE_NEEDS(self) -> tuple[str, ...]:
        """The Python modules the runner needs on a node that builds its environments."""
        ...

    def describe(self, project: Project) -> str:
        """One line for `mlproject validate`."""
        ...

    def plan(self, project: Project, notify: Optional[Notify], options: EnvOptions) -> Optional[EnvRecipe]:
        """What the environment must contain (its key is the hash of its description); None:
        nothing to build. Everything that can be wrong with the env file fails here."""
        ...

    def resolve(self, plan: EnvRecipe, progress: Optional[Notify] = None) -> None:
        """Before the run exists: what can fail before a build (conda's solve); else nothing."""
        ...

    def check(self, plan: EnvRecipe, progress: Optional[Notify] = None) -> None:
        """Resolve without building (`mlproject validate --resolve`)."""
        ...

    def build(self, plan: EnvRecipe, tmp: Path, final: Path, progress: Optional[Notify] = None) -> None:
        """Fill `tmp`, which the store then renames to `final`."""
        ...

    def activate(self, plan: EnvRecipe, prefix: Path) -> Environment:
        """How a command runs inside the built environment at `prefix`."""
        ...

    def write_lock(self, project: Project, platforms: list[str], notify: Optional[Notify],
                   progress: Optional[Notify]) -> Path:
        """`mlproject lock`: write LOCK_NAME next to the project's env file, for `platforms`."""
        ...
