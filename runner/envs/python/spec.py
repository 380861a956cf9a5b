"""What a Python environment (uv or virtualenv) must contain, and its key.

Sources, in order: a `uv.lock` with `pyproject.toml` (uv only), the project's
`python_env.yaml`, the `pip:` part of its `conda.yaml` (the conda packages are
dropped with a warning, as MLflow does), or nothing (an empty environment on
the current interpreter).
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runner.envs import Environment, EnvRecipe, EnvOptions
from runner.envs.python import pylock
from runner.envs.python.interpreters import Interpreter, discover, find
from runner.envs.python.pylock import PyLock
from runner.envs.python.requirements import Requirements, collect
from runner.errors import EnvironmentBuildError, UsageError
from runner.project.spec import Project

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Callable, Sequence


RECIPE = "python-2"  # bump when the way environments are built changes (2: each records its pylock.toml)
_INDEX_VARIABLES = (
    "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_TRUSTED_HOST",
    "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX", "UV_FIND_LINKS", "UV_NO_INDEX",
    "UV_INDEX_STRATEGY", "UV_PRERELEASE",
)
_CONFIG_FILES = (
    "/etc/pip.conf", "~/.pip/pip.conf", "~/.config/pip/pip.conf", "/etc/uv/uv.toml", "~/.config/uv/uv.toml",
)
_PYTHON_SPEC = re.compile(r"^(?:[\w.-]+::)?python(?:\s*(?P<op>==|=|>=|<=|>|<|!=|~=|\s)\s*(?P<rest>.*))?$")


@dataclass(frozen=True)
class PythonEnvContents:
    interpreter: Interpreter
    build_requirements: Requirements = field(default_factory=Requirements)
    requirements: Requirements = field(default_factory=Requirements)
    uv_project: Path | None = None  # directory with pyproject.toml + uv.lock
    source: str = "none"
    lock: PyLock | None = None  # installed exactly, instead of the requirements (a current pylock.toml)
    env_file: Path | None = None  # python_env.yaml, when the project has one


OPTIONS = ("locked", "lock_file")


def plan(manager: str, project: Project, notify: Callable[[str], None] | None, locked: bool = False,
         lock_file: str | None = None) -> EnvRecipe:
    """`locked`: install only from a current pylock.toml; `lock_file`: install exactly this
    lock (a recorded one, for a rerun), whatever the env file says now."""
    from runner.platforms import platform_name

    contents = _contents(manager, project, notify)
    description = {
        "recipe": RECIPE,
        "manager": manager,
        "platform": f"{sys.platform}-{os.uname().machine}",
        "python": {"version": contents.interpreter.version, "path": contents.interpreter.path},
        "build_requirements": contents.build_requirements.key_material(),
        "requirements": contents.requirements.key_material(),
        "uv_lock": _uv_lock_material(contents.uv_project),
        "index": _index_settings(),
    }
    count = len(contents.requirements.lines) + len(contents.build_requirements.lines)
    summary = f"{manager}: Python {contents.interpreter.version}, {contents.source}" + (
        f", {count} requirement line(s)" if count else ""
    )
    meta = {"project": str(project.directory), "python": contents.interpreter.version, "source": contents.source}
    if lock_file:
        lock = pylock.read(Path(lock_file))
    elif contents.uv_project is None:  # (a uv.lock project is locked by uv.lock)
        lock = _current_lock(contents, platform_name(), notify, locked)
    else:
        lock = None
    if lock is not None:
        from dataclasses import replace

        contents = replace(contents, lock=lock)
        # Installed exactly from the lock: the key is the lock's packages, whatever made it.
        description = {key: description[key] for key in ("recipe", "manager", "platform", "python", "index")}
        description["lock"] = pylock.key_material(lock)
        summary = f"{manager}: Python {contents.interpreter.version}, {len(lock.packages)} package(s) from {lock.path.name}"
        meta["source"] = lock.path.name
        description = _same_set(manager, description, lock)
    return EnvRecipe(manager, description, summary, meta, contents)


def _same_set(manager: str, description: dict, lock: PyLock) -> dict:
    """The lock's own environment when it is built; else one that already holds exactly its
    packages, if any (see runner.envs.python.sameset); else the lock's own, to be built."""
    from runner.envs.python import sameset
    from runner.store import Store

    store = Store()
    if store.is_complete(store.path_of(manager, EnvRecipe(manager, description, "", {}).key)):
        return description
    return sameset.holding(lock, description, store) or description


def _current_lock(contents: PythonEnvContents, platform: str, notify, locked: bool) -> PyLock | None:
    """pylock.toml next to python_env.yaml when it was made from python_env.yaml as it is now."""
    name = pylock.LOCK_NAME
    if contents.env_file is None:
        if locked:
            raise EnvironmentBuildError(f"--locked: {name} locks a python_env.yaml, and this project has none",
                                        hint="lock conda.yaml projects with `mlproject lock` and --env-manager conda")
        return None
    path = pylock.lock_path(contents.env_file)
    if not path.is_file():
        if locked:
            raise EnvironmentBuildError(f"--locked: there is no {name} next to {contents.env_file.name}",
                                        hint="write one with `mlproject lock PROJECT`")
        return None
    lock = pylock.read(path)
    if not lock.ours:
        # Written by another tool (uv, pip, pdm): installed as it is when asked for.
        if locked:
            if notify is not None:
                notify(f"note: {name} was not written by mlproject: whether {contents.env_file.name} changed "
                       "since cannot be checked; installing it as it is")
            return lock
        if notify is not None:
            notify(f"warning: {name} was not written by mlproject, so whether it is current cannot be checked; "
                   "resolving instead (--locked installs it as it is)")
        return None
    if lock.content_hash == pylock.content_hash(contents) and platform in lock.platforms:
        return lock
    reason = (f"{name} has no packages for {platform} (it was locked for {', '.join(lock.platforms)})"
              if lock.content_hash == pylock.content_hash(contents)
              else f"{name} is stale: {contents.env_file.name} (or the Python it asks for) changed since it was written")
    if locked:
        raise EnvironmentBuildError(f"--locked: {reason}", hint="update it with `mlproject lock PROJECT`")
    if notify is not None:
        notify(f"warning: {reason}; resolving instead (update it with `mlproject lock`)")
    return None


def manager_api(manager: str):
    """The describe, plan, resolve, activate and write_lock functions of a Python environment
    manager module (uv, virtualenv: the same plans and locks, two installers)."""

    def describe(project: Project) -> str:
        return plan(manager, project, None).summary

    def plan_for(project: Project, notify: Callable[[str], None] | None, options: EnvOptions) -> EnvRecipe:
        return plan(manager, project, notify, locked=options.locked, lock_file=options.lock_file)

    def resolve(plan: EnvRecipe, progress: Callable[[str], None] | None = None) -> None:
        """Before a run is created for an environment that must be built: its requirements are
        resolved (`uv pip compile`, nothing installed), so that a requirement that does not
        exist is refused before the run, as conda's unsatisfiable spec is. The build then
        finds the index's answers in uv's cache. An install from a lock resolves nothing."""
        contents = plan.contents
        if contents.lock is not None or contents.uv_project is not None:
            return
        from runner.envs.python.uv import check

        check(plan, progress)

    def write_lock(project: Project, platforms: list[str], notify: Callable[[str], None] | None,
                   progress: Callable[[str], None] | None) -> Path:
        if project.env.kind != "python_env" or project.env.path is None:
            raise UsageError("mlproject lock needs a python_env.yaml or a conda.yaml (this project has neither)",
                             hint="add python_env.yaml (python_env: in MLproject) and lock it")
        from runner.envs.python import pylock

        return pylock.write(plan(manager, project, notify).contents, project.env.path, platforms, progress)

    return describe, plan_for, resolve, activate, write_lock


def activate(plan: EnvRecipe, prefix: Path) -> Environment:
    set_vars = {"VIRTUAL_ENV": str(prefix)}
    unset = ["PYTHONHOME"]
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        # No .pyc would ever be written, and every run would compile its imports
        # again (mlflow + sklearn: 6.5-7.8 s instead of 2.8-3.0 s). Write them
        # into the environment's own cache instead: never into the project, and
        # only for what is actually imported. See README "Bytecode".
        set_vars["PYTHONPYCACHEPREFIX"] = str(prefix / ".pycache")
        unset.append("PYTHONDONTWRITEBYTECODE")
    return Environment(plan.manager, plan.key, prefix, (str(prefix / "bin"),), set_vars, tuple(unset))


def _contents(manager: str, project: Project, notify) -> PythonEnvContents:
    root = project.directory
    env = project.env
    python_wanted: str | None = None
    where = "the project"
    build_lines: Sequence[str] = ()
    lines: tuple[str, ...] = ()
    source = "no env file: empty environment"
    base_dir = root
    if env.kind == "python_env" and env.path is not None:
        from runner.project.envfiles import load_python_env

        spec = load_python_env(env.path)
        if notify is not None:
            for warning in spec.warnings:
                notify(f"warning: {warning}")
        python_wanted, build_lines, lines = spec.python, spec.build_dependencies, spec.dependencies
        where = env.path.name
        base_dir = env.path.parent
        source = env.path.name
    elif env.kind == "conda_env" and env.path is not None:
        from runner.project.envfiles import load_conda_env

        spec = load_conda_env(env.path)
        python_wanted, dropped = _python_from_conda(spec.dependencies)
        lines = spec.pip
        where = env.path.name
        base_dir = env.path.parent
        source = f"{env.path.name} (pip part)"
        if dropped and notify is not None:
            notify(
                f"warning: {env.path.name}: --env-manager {manager} keeps python, pip and the pip: list; "
                f"dropped conda packages: {', '.join(dropped)}"
            )
    uv_project = None
    if manager == "uv" and (root / "uv.lock").is_file() and (root / "pyproject.toml").is_file():
        uv_project = root
        source = "uv.lock"
        version_file = root / ".python-version"
        if python_wanted is None and version_file.is_file():
            words = version_file.read_text().split()
            python_wanted = words[0] if words else None
            where = ".python-version"
    interpreter = _interpreter(python_wanted, where)
    if env.kind == "conda_env":
        # A conda environment has pip (MLflow's own log_model asks pip for its version), and
        # setuptools on the Pythons that came with it: the environment built from conda.yaml too.
        build_lines = ["pip", *(["setuptools"] if interpreter.version_tuple < (3, 12) else [])]
    return PythonEnvContents(
        interpreter,
        collect(build_lines, root, base_dir),
        collect(lines, root, base_dir) if uv_project is None else Requirements(),
        uv_project,
        source,
        env_file=env.path if env.kind == "python_env" else None,
    )


def _interpreter(wanted: str | None, where: str) -> Interpreter:
    if wanted and any(op in wanted for op in "<>!~,"):
        return _interpreter_in_range(wanted, where)
    return find(wanted, where)


def _interpreter_in_range(spec: str, where: str) -> Interpreter:
    checks = []
    for part in spec.split(","):
        m = re.match(r"^\s*(>=|<=|==|!=|>|<|~=)?\s*([\d.]+)(\.\*)?\s*$", part)
        if not m:
            raise EnvironmentBuildError(f"{where}: cannot read the Python version range {spec!r}")
        checks.append((m.group(1) or "==", tuple(int(p) for p in m.group(2).split("."))))

    def ok(version: tuple[int, ...]) -> bool:
        for op, bound in checks:
            head = version[: len(bound)]
            if op == "==" and head != bound or op == "!=" and head == bound:
                return False
            if op == ">=" and version < bound or op == ">" and head <= bound:
                return False
            if op == "<=" and head > bound or op == "<" and version >= bound:
                return False
            if op == "~=" and (version < bound or version[: len(bound) - 1] != bound[:-1]):
                return False
        return True

    found = [i for i in discover() if ok(i.version_tuple)]
    if not found:
        raise EnvironmentBuildError(
            f"{where} asks for Python {spec}, which is not on this machine",
            hint="install a matching Python (for example with pyenv), or change the version the project asks for",
        )
    return max(found, key=lambda i: i.version_tuple)


def _python_from_conda(specs: tuple[str, ...]) -> tuple[str | None, list[str]]:
    wanted: str | None = None
    dropped = []
    for spec in specs:
        m = _PYTHON_SPEC.match(spec.strip())
        if m:
            rest = (m.group("rest") or "").strip().split(" ")[0]
            op = (m.group("op") or "").strip()
            if op in ("", "=", "=="):
                rest = rest.split("=", 1)[0]  # `conda env export` pins: python=3.11.7=h955ad1f_0 is 3.11.7
            if rest:
                rest = rest.rstrip("*").rstrip(".")
                wanted = rest if op in ("", "=", "==") else f"{op}{rest}"
            continue
        name = re.split(r"[\s=<>!~\[]", spec.split("::")[-1].strip(), maxsplit=1)[0]
        if name != "pip":
            dropped.append(name)
    return wanted, dropped


def _uv_lock_material(uv_project: Path | None) -> dict | None:
    if uv_project is None:
        return None
    import hashlib

    return {
        name: hashlib.sha256((uv_project / name).read_bytes()).hexdigest()
        for name in ("uv.lock", "pyproject.toml")
    }


def _redact(value: str) -> str:
    return re.sub(r"//[^/@\s]*@", "//***@", value)


def _index_settings() -> dict:
    settings = {name: _redact(os.environ[name]) for name in _INDEX_VARIABLES if os.environ.get(name)}
    for config in (*_CONFIG_FILES, os.environ.get("PIP_CONFIG_FILE"), os.environ.get("UV_CONFIG_FILE")):
        if not config:
            continue
        path = Path(os.path.expanduser(config))
        try:
            settings[config] = _redact(path.read_text())
        except OSError:
            continue
    return settings
