"""The MLproject specification: dataclasses, loading, and inference.

Loading follows MLflow (REFERENCE.md): the MLproject file in any letter case;
at most one of conda_env / python_env / docker_env; with no env key,
python_env.yaml then conda.yaml are picked up; with no MLproject at all, `.py`
and `.sh` files are runnable entry points.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from runner.errors import ProjectError, SpecValidationError
from runner.project.paths import project_path, resolve_inside
from runner.project.schema import load_document

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any

PARAMETER_TYPES = ("string", "float", "int", "bool", "path", "uri")
# Names community projects write for the same types (MLflow accepts any type name and
# treats only path and uri specially; these get the checking of the type they mean).
TYPE_ALIASES = {"str": "string", "text": "string", "integer": "int", "boolean": "bool", "double": "float",
                "number": "float"}


def parameter_type(declared: str) -> str:
    """The type a declared name is checked as: itself, its alias's type, or string."""
    name = TYPE_ALIASES.get(declared.lower(), declared.lower())
    return name if name in PARAMETER_TYPES else "string"


def type_warnings(data: Any, text: str, display_name: str) -> list[str]:
    """One warning for each parameter whose type name is neither known nor an alias (it runs as a
    string, as under MLflow), naming the file, the line and the type."""
    from runner.project.yamlfile import line_of

    warnings = []
    for entry_name, body in ((data or {}).get("entry_points") or {}).items():
        for pname, pdef in ((body or {}).get("parameters") or {}).items():
            declared = pdef if isinstance(pdef, str) else (pdef or {}).get("type", "string")
            if not isinstance(declared, str) or declared.lower() in PARAMETER_TYPES or declared.lower() in TYPE_ALIASES:
                continue
            path = ["entry_points", entry_name, "parameters", pname] + ([] if isinstance(pdef, str) else ["type"])
            import difflib

            close = difflib.get_close_matches(declared.lower(), [*PARAMETER_TYPES, *TYPE_ALIASES], n=1, cutoff=0.6)
            guess = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"{display_name}:{line_of(text, path)}: parameter {pname!r} of entry point {entry_name!r}: "
                            f"type {declared!r} is not one MLflow knows; it runs as a string{guess}")
    return warnings
ENV_KEYS = ("conda_env", "python_env", "docker_env")
DEFAULT_PYTHON_ENV = "python_env.yaml"
DEFAULT_CONDA_ENV = "conda.yaml"


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str = "string"
    default: Any = None  # None: the parameter is required

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass(frozen=True)
class EntryPoint:
    name: str
    command: str
    parameters: dict[str, Parameter] = field(default_factory=dict)
    inferred: bool = False  # a .py/.sh file run without an MLproject entry


@dataclass(frozen=True)
class DockerEnv:
    image: str
    volumes: tuple[str, ...] = ()
    # "NAME" copies the host's value; ("NAME", "value") sets it.
    environment: tuple[str | tuple[str, str], ...] = ()


@dataclass(frozen=True)
class EnvSpec:
    kind: str  # "python_env", "conda_env", "docker_env" or "none"
    path: Path | None = None  # the env file, for python_env and conda_env
    docker: DockerEnv | None = None

    def describe(self, root: Path) -> str:
        if self.kind == "docker_env" and self.docker:
            return f"docker_env (image {self.docker.image})"
        if self.path is not None:
            return f"{self.kind} ({self.path.relative_to(root)})"
        return "none declared"


@dataclass
class Project:
    directory: Path
    name: str | None
    spec_path: Path | None
    entry_points: dict[str, EntryPoint]
    env: EnvSpec
    warnings: list[str] = field(default_factory=list)

    def entry_point(self, name: str) -> EntryPoint:
        if name in self.entry_points:
            return self.entry_points[name]
        inferred = _infer_entry_point(self.directory, name)
        if inferred is not None:
            return inferred
        # (MLflow's words first: callers match on them)
        known = ", ".join(sorted(self.entry_points)) or "none"
        where = "in MLproject" if self.spec_path else "the project has no MLproject file"
        raise ProjectError(
            f"Could not find {name} among entry points ({known}) or interpret {name} as a runnable script "
            f"({where}; a script must end in .py or .sh)",
            hint="choose one with -e, or name a .py or .sh file inside the project",
        )


def find_spec_file(directory: Path) -> Path | None:
    exact = directory / "MLproject"
    if exact.is_file():
        return exact
    try:
        names = os.listdir(directory)
    except OSError:
        return None
    for name in sorted(names):
        if name.lower() == "mlproject" and (directory / name).is_file():
            return directory / name
    return None


def load_project(directory: str | os.PathLike[str]) -> Project:
    root = Path(directory).absolute()
    if not root.is_dir():
        raise ProjectError(f"project directory {str(root)!r} does not exist", hint="check the path")
    spec_path = find_spec_file(root)
    if spec_path is None:
        return Project(root, None, None, {}, _default_env(root))
    document = load_document(spec_path, "mlproject", spec_path.name, lint=type_warnings)
    data = document.data or {}
    if not isinstance(data, dict):
        raise SpecValidationError(f"{spec_path.name}:1: expected a mapping of keys")
    env = _env_from_spec(root, spec_path, data, document.text)
    entry_points = {
        name: _entry_point(name, body) for name, body in (data.get("entry_points") or {}).items()
    }
    name = data.get("name")
    if env.kind == "docker_env" and not name:
        raise SpecValidationError(
            f"{spec_path.name}:1: name: a docker_env project needs a name (used to tag its image)",
            hint="add `name: my-project` at the top of the MLproject file",
        )
    return Project(root, str(name) if name is not None else None, spec_path, entry_points, env, list(document.warnings))


def _entry_point(name: str, body: dict[str, Any]) -> EntryPoint:
    parameters = {}
    for pname, pdef in (body.get("parameters") or {}).items():
        if isinstance(pdef, str):
            parameters[pname] = Parameter(pname, parameter_type(pdef))
        else:
            parameters[pname] = Parameter(pname, parameter_type(str(pdef.get("type", "string"))), pdef.get("default"))
    return EntryPoint(name, body["command"], parameters)


def _env_from_spec(root: Path, spec_path: Path, data: dict[str, Any], text: str) -> EnvSpec:
    present = [key for key in ENV_KEYS if key in data]
    if len(present) > 1:
        from runner.project.yamlfile import line_of

        line = line_of(text, [present[1]], key=True)
        raise SpecValidationError(
            f"{spec_path.name}:{line}: Project cannot contain multiple environment fields: found "
            f"{' and '.join(present)} (give only one of conda_env, python_env, docker_env)",
            hint="keep the one environment the project should run in",
        )
    if not present:
        return _default_env(root)
    key = present[0]
    if key == "docker_env":
        body = data["docker_env"]
        environment = tuple(
            item if isinstance(item, str) else (str(item[0]), _env_text(item[1]))
            for item in body.get("environment") or ()
        )
        return EnvSpec("docker_env", docker=DockerEnv(body["image"], tuple(body.get("volumes") or ()), environment))
    relative = data[key]
    try:
        env_path = resolve_inside(root, relative, key)
    except ValueError as exc:
        raise SpecValidationError(f"{spec_path.name}: {exc}") from None
    if not env_path.is_file():
        raise SpecValidationError(
            f"{spec_path.name}: Project specified {key.removesuffix('_env')} environment file {relative}, "
            "but no such file was found in the project",
            hint=f"create {relative} or fix the {key} entry",
        )
    return EnvSpec(key, env_path)


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _default_env(root: Path) -> EnvSpec:
    for filename, kind in ((DEFAULT_PYTHON_ENV, "python_env"), (DEFAULT_CONDA_ENV, "conda_env")):
        if (root / filename).is_file():
            return EnvSpec(kind, root / filename)
    return EnvSpec("none")


_SCRIPT_RUNNERS = {".py": "python", ".sh": None}  # None: the user's $SHELL, as MLflow does


def _infer_entry_point(root: Path, name: str) -> EntryPoint | None:
    ext = os.path.splitext(name)[1]
    if ext not in _SCRIPT_RUNNERS:
        return None
    script = project_path(root, name, "entry point", "entry point scripts must be inside the project")
    if not script.is_file():
        raise ProjectError(
            f"Could not find {name} among entry points or interpret {name} as a runnable script "
            "(no such file in the project)",
            hint="check the file name given with -e",
        )
    runner = _SCRIPT_RUNNERS[ext] or os.environ.get("SHELL", "bash")
    return EntryPoint(name, f"{runner} {shlex.quote(name)}", {}, inferred=True)
