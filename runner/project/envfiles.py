"""python_env.yaml and conda.yaml: parsed, validated, and as dataclasses."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runner.project.schema import load_document

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any


@dataclass(frozen=True)
class PythonEnvFile:
    path: Path
    python: str | None
    build_dependencies: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # keys MLflow does not know (`name:`): ignored, with a warning


@dataclass(frozen=True)
class CondaEnvFile:
    path: Path
    name: str | None
    channels: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()  # conda match specs
    pip: tuple[str, ...] = ()
    variables: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def _keep_version_text(data: Any, text: str) -> Any:
    # `python: 3.10` is the float 3.1 to YAML; the author meant the text.
    if isinstance(data, dict) and isinstance(data.get("python"), (int, float)) and not isinstance(data.get("python"), bool):
        from runner.project.yamlfile import scalar_text

        data["python"] = scalar_text(text, ["python"]) or str(data["python"])
    return data


def load_python_env(path: Path) -> PythonEnvFile:
    document = load_document(path, "python_env", path.name, fixup=_keep_version_text)
    data = document.data or {}
    python = data.get("python")
    return PythonEnvFile(
        path,
        python.strip() if isinstance(python, str) else None,
        tuple(data.get("build_dependencies") or ()),
        tuple(data.get("dependencies") or ()),
        tuple(document.warnings),
    )


def load_conda_env(path: Path) -> CondaEnvFile:
    document = load_document(path, "conda_env", path.name)
    data = document.data or {}
    specs: list[str] = []
    pip: list[str] = []
    for item in data.get("dependencies") or ():
        if isinstance(item, dict):
            pip.extend(item.get("pip") or ())
        else:
            specs.append(item)
    variables = {str(k): str(v) for k, v in (data.get("variables") or {}).items()}
    if not specs and not pip:
        # An empty environment: the command would run with whatever `python` is on PATH.
        from runner.errors import SpecValidationError

        raise SpecValidationError(
            f"{path.name}: lists no dependencies: its environment would be empty, and the command would run "
            "with whatever python is on PATH",
            hint="list what the project needs under dependencies: (python=3.11, pip:, ...), or run it in the "
                 "current Python environment with --env-manager local",
            python_hint='list what the project needs under dependencies:, or use env_manager="local"')
    return CondaEnvFile(
        path,
        data.get("name"),
        tuple(data.get("channels") or ()),
        tuple(specs),
        tuple(pip),
        variables,
        tuple(document.warnings),
    )


def load_env_file(kind: str, path: Path) -> PythonEnvFile | CondaEnvFile:
    return load_python_env(path) if kind == "python_env" else load_conda_env(path)
