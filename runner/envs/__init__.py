"""Environment managers behind one seam: the `EnvManager` Protocol of `runner.envs.base`.

Each manager is one module, registered in `runner.seams` by one loader whose return type
has the type checker check the module against the contract; the rest of the runner asks the
manager (its lock's name, what a node needs) instead of naming managers. The key of an
environment is the sha256 of its plan's canonical description. The store (store.py)
does locking, atomic publication, listing and gc.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from runner.errors import NotAvailableError, UsageError
from runner.seams import ENV_MANAGERS as MANAGERS  # (name -> loader: `in` and iteration give the names)

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping


    from runner.envs.base import EnvManager
    from runner.store import Lease
    from runner.project.spec import Project


def all_managers() -> list[EnvManager]:
    return [load() for load in MANAGERS.values()]


@dataclass(frozen=True)
class EnvOptions:
    """What some managers take (each lists which in its OPTIONS)."""

    locked: bool = False  # install only from a current lock (pylock.toml, conda-lock.yml)
    lock_file: str | None = None  # install exactly this recorded lock (a rerun)
    build_image: bool = False  # docker: bake the project into an image
    docker_args: Mapping[str, Any] = field(default_factory=dict)  # docker: extra `docker run` options


@dataclass(frozen=True)
class Environment:
    """How to run a command inside a prepared environment."""

    manager: str
    key: str | None = None
    prefix: Path | None = None
    path_prepend: tuple[str, ...] = ()
    set_vars: Mapping[str, str] = field(default_factory=dict)
    unset_vars: tuple[str, ...] = ()
    activation_scripts: tuple[str, ...] = ()  # sourced before the command (conda's activate.d)
    container: Any = None  # runs the command in a container instead (docker.ContainerLauncher)
    run_tags: Mapping[str, str] = field(default_factory=dict)  # tags the run gets (the docker image)

    def apply(self, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        for name in self.unset_vars:
            env.pop(name, None)
        env.update(self.set_vars)
        if self.path_prepend:
            env["PATH"] = os.pathsep.join([*self.path_prepend, env.get("PATH", os.defpath)])
        return env

    def argv(self, command: str, env: Mapping[str, str]) -> list[str]:
        if self.container is not None:
            return self.container.argv(command, env)
        # bash as MLflow uses it (pipes and redirections in commands keep working).
        import shutil

        shell = shutil.which("bash", path=env.get("PATH", os.defpath)) or shutil.which("bash", path=os.defpath) or "/bin/sh"
        if not self.activation_scripts:
            return [shell, "-c", command]
        import shlex

        # The scripts run in the command's own shell, as after `conda activate`;
        # the command itself arrives as an argument, untouched by this wrapper.
        sourced = "".join(f". {shlex.quote(script)}\n" for script in self.activation_scripts)
        return [shell, "-c", f'{sourced}eval "$1"', "mlproject-activate", command]


@dataclass(frozen=True)
class EnvRecipe:
    """What an environment must contain; its key is the hash of `description`."""

    manager: str
    description: dict
    summary: str
    meta: dict
    contents: Any = None

    @property
    def key(self) -> str:
        import hashlib

        canonical = json.dumps(self.description, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass
class Prepared:
    environment: Environment
    lease: Lease | None = None
    plan: EnvRecipe | None = None

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None


def choose_manager(project: Project, requested: str | None, notify: Callable[[str], None] | None = None) -> str:
    if project.env.kind == "docker_env":
        # As under `mlflow run`: a docker_env project runs in its container whatever
        # --env-manager says (a script passing --env-manager local for every project
        # must not run this one on the host).
        if requested not in (None, "docker"):
            check_manager_name(requested)
            if notify is not None:
                notify(f"note: this project declares docker_env, so it runs in Docker as under mlflow run; "
                       f"--env-manager {requested} does not apply to it")
        return "docker"
    if requested is not None:
        check_manager_name(requested)
        if requested == "docker":
            raise UsageError("--env-manager docker needs a project with docker_env in its MLproject",
                             hint="docker runs the image named by docker_env in MLproject; this project has none",
                             python_hint='env_manager="docker" needs docker_env in MLproject; this project has none')
        return requested
    if project.env.kind == "conda_env":
        return "conda"
    return "uv"


def check_manager_name(requested: str | None) -> None:
    if requested is not None and requested not in MANAGERS:
        raise UsageError(
            f"--env-manager {requested!r} is not one of {', '.join(MANAGERS)}",
            hint="for example --env-manager uv",
            python_hint='for example env_manager="uv"',
        )


def manager_module(name: str) -> EnvManager:
    load = MANAGERS.get(name)
    if load is None:
        hint = "run in the current Python environment with --env-manager local"
        raise NotAvailableError(f"the {name} environment manager is not available in this version", hint=hint)
    return load()


@dataclass(frozen=True)
class PlannedEnv:
    """A manager and what its environment must contain: decided, nothing built yet."""

    manager: str
    module: EnvManager
    plan: EnvRecipe | None

    @property
    def key(self) -> str | None:
        return self.plan.key if self.plan is not None else None


def plan_environment(
    manager_name: str, project: Project, notify: Callable[[str], None] | None = None, **options: Any,
) -> PlannedEnv:
    """Everything that can be wrong with an environment before building it (versions, specs).

    `options` are what some managers take: `locked` (install only from a current
    pylock.toml or conda-lock.yml), `lock_file` (uv, virtualenv: install this recorded
    lock, for a rerun), `build_image` and `docker_args` (docker). A manager is
    given only the options set, and an option it does not know is a usage error."""
    module = manager_module(manager_name)
    given = {name: value for name, value in options.items() if value}
    unknown = [name for name in given if name not in module.OPTIONS]
    if unknown:
        flags = {"locked": "--locked", "build_image": "--build-image", "docker_args": "-A/--docker-args"}
        raise UsageError(
            f"{', '.join(flags.get(name, name) for name in unknown)} does not apply to the {manager_name} environment manager",
            hint="--locked is for uv, virtualenv and conda environments; --build-image and -A for docker_env projects",
            python_hint="locked=True is for uv, virtualenv and conda environments; build_image= and docker_args= for docker_env projects",
        )
    return PlannedEnv(manager_name, module, module.plan(project, notify, EnvOptions(**given)))


def resolve_before_run(planned: PlannedEnv, progress: Callable[[str], None] | None = None) -> None:
    """A manager that can find its spec unsatisfiable before building (conda's solve)
    does so now, before a run exists; an environment already built needs nothing."""
    if planned.plan is not None and existing_path(planned) is None:
        planned.module.resolve(planned.plan, progress)


def check_resolves(planned: PlannedEnv, progress: Callable[[str], None] | None = None) -> None:
    """Resolve the planned environment without building it (`mlproject validate --resolve`):
    pip requirements are resolved, conda specs solved; a docker image was found when planned."""
    if planned.plan is not None:
        planned.module.check(planned.plan, progress)


def existing(planned: PlannedEnv) -> Prepared | None:
    """The planned environment if it is already built (held shared until released), else None."""
    module, plan = planned.module, planned.plan
    if plan is None:  # (nothing built: the current environment, as `local` is)
        return Prepared(Environment(planned.manager))
    from runner.store import Store

    found = Store().lookup(planned.manager, plan.key)
    return Prepared(module.activate(plan, found[0]), found[1], plan) if found else None


def unpack_shipped(planned: PlannedEnv, archive: Path, progress: Callable[[str], None] | None = None,
                   notify: Callable[[str], None] | None = None) -> bool:
    """Put the packed environment a cluster job brought (`archive`, built and packed once on
    the submit host) into this node's store, unless it holds the planned environment already.
    An archive that is not the planned environment (this node plans another Python or
    platform), or that is damaged, is passed over with a note: the environment is built here
    then, as without one. Whether it was unpacked."""
    if planned.plan is None or existing_path(planned) is not None:
        return False
    from runner.envs import pack

    try:
        pack.unpack(archive, progress=progress, expected=f"{planned.manager}-{planned.plan.key}")
    except UsageError as exc:
        if notify is not None:
            notify(f"note: the environment the job brought is not used ({exc.message}): building it here")
        return False
    return True


def existing_path(planned: PlannedEnv) -> Path | None:
    """Where the planned environment is built in this machine's store, if it is (not held)."""
    if planned.plan is None:
        return None
    from runner.store import Store

    store = Store()
    path = store.path_of(planned.manager, planned.plan.key)
    return path if store.is_complete(path) else None


def realize(planned: PlannedEnv, progress: Callable[[str], None] | None = None) -> Prepared:
    """Build or reuse the planned environment; hold it (shared) until released."""
    ready = existing(planned)
    if ready is not None:
        return ready
    module, plan, manager_name = planned.module, planned.plan, planned.manager
    assert plan is not None  # (existing() answers for a manager without a plan)
    from runner.store import Store

    store = Store()

    def build(tmp: Path, final: Path) -> None:
        from runner.progress import step

        with step(progress, f"building environment {manager_name}-{plan.key[:12]} ({plan.summary})"):
            module.build(plan, tmp, final, progress)

    def waiting() -> None:
        if progress is not None:
            progress(f"waiting for another process building environment {manager_name}-{plan.key[:12]}")

    path, lease = store.ensure(manager_name, plan.key, build, {**plan.meta, "summary": plan.summary, "description": plan.description}, waiting)
    return Prepared(module.activate(plan, path), lease, plan)

