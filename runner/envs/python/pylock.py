"""`pylock.toml` (PEP 751): lock a Python environment, install exactly from it, and record
what an environment holds in the same format.

Locks are written by `uv pip compile --format pylock.toml` for the project's Python and
platform(s). Our `[tool.mlproject-runner]` table says what the lock was made from: the
hash of the requirement lines (and the local files they name) with the Python version, so
a lock whose env file changed since is stale, plus the Python version and platforms.
Another tool's pylock.toml (no such table) cannot be checked: it installs as it is under
`--locked`, with a note, and is otherwise left for a resolve, as conda-lock.yml files are.

A built environment also gets `.mlproject/pylock.toml`: exactly its installed
distributions (pinned, `--no-deps`: nothing is solved again), the lock a rerun installs.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runner.errors import EnvironmentBuildError

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Callable

    from runner.envs.python.spec import PythonEnvContents

LOCK_NAME = "pylock.toml"
TOOL = "mlproject-runner"
# conda's platform names (what `mlproject lock --platform` takes for conda too) as uv's targets.
UV_PLATFORMS = {
    "linux-64": "x86_64-unknown-linux-gnu", "linux-aarch64": "aarch64-unknown-linux-gnu",
    "osx-64": "x86_64-apple-darwin", "osx-arm64": "aarch64-apple-darwin", "win-64": "x86_64-pc-windows-msvc",
}


@dataclass(frozen=True)
class PyLock:
    path: Path
    packages: tuple[dict, ...]  # the [[packages]] tables as read
    content_hash: str | None = None  # ours only: what the lock was made from
    python: str | None = None  # the Python version it was made for (ours only)
    platforms: tuple[str, ...] = ()  # conda-style platform names it covers (ours only)
    recorded: bool = False  # made from an installed environment, not from an env file

    @property
    def ours(self) -> bool:
        return self.content_hash is not None or self.recorded

    def versions(self) -> dict[str, str]:
        return {str(p["name"]).lower(): str(p.get("version", "")) for p in self.packages}


def lock_path(env_file: Path) -> Path:
    return env_file.parent / LOCK_NAME


def content_hash(contents: PythonEnvContents) -> str:
    material = {
        "python": ".".join(contents.interpreter.version.split(".")[:2]),
        "build_requirements": contents.build_requirements.key_material(),
        "requirements": contents.requirements.key_material(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def toml_loads(text: str) -> dict:
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # (tomli is what became tomllib)
        import tomli as tomllib  # pyright: ignore[reportMissingImports]
    return tomllib.loads(text)


def read(path: Path) -> PyLock:
    try:
        data = toml_loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EnvironmentBuildError(f"{path.name} cannot be read: {exc.strerror}") from None
    except ValueError as exc:  # (TOMLDecodeError)
        raise EnvironmentBuildError(f"{path.name} is not valid TOML: {exc}",
                                    hint="write it again with `mlproject lock PROJECT`") from None
    packages = data.get("packages")
    if not str(data.get("lock-version", "")).startswith("1") or not isinstance(packages, list):
        raise EnvironmentBuildError(f"{path.name} is not a PEP 751 lock (lock-version 1.x with [[packages]])",
                                    hint="write it again with `mlproject lock PROJECT`")
    ours = (data.get("tool") or {}).get(TOOL) or {}
    return PyLock(path, tuple(packages), ours.get("content-hash"), ours.get("python"),
                  tuple(ours.get("platforms") or ()), bool(ours.get("recorded")))


def key_material(lock: PyLock) -> str:
    """What an environment installed from the lock is: exactly its packages and their files."""
    return hashlib.sha256(json.dumps(list(lock.packages), sort_keys=True, default=str).encode()).hexdigest()


def write(contents: PythonEnvContents, env_file: Path, platforms: list[str],
          progress: Callable[[str], None] | None = None) -> Path:
    """Lock the env file's requirements (build dependencies first) for its Python and `platforms`."""
    lines = [*contents.build_requirements.lines, *contents.requirements.lines]
    constraints = [*contents.build_requirements.constraints, *contents.requirements.constraints]
    tool = {"content-hash": content_hash(contents), "python": contents.interpreter.version, "platforms": platforms}
    path = lock_path(env_file)
    _compile(lines, constraints, contents.interpreter.version, platforms, path, tool, progress,
             f"locking {env_file.name} for Python {contents.interpreter.version} on {', '.join(platforms)}")
    return path


def record_installed(prefix: Path, python_version: str, platform: str, log: Path | None,
                     progress: Callable[[str], None] | None = None) -> bool:
    """Write `.mlproject/pylock.toml` for what `prefix` holds: its exact distributions, each
    pinned and not resolved again. False (with the reason in the build log) when some
    distribution is not on the index (a local or VCS install): the run then records its
    package list only."""
    from runner.envs.python.installed import installed_packages

    pins = installed_packages(prefix)
    if not pins:
        return False
    tool = {"recorded": True, "python": python_version, "platforms": [platform]}
    try:
        _compile(pins, [], python_version, [platform], prefix / ".mlproject" / LOCK_NAME, tool, progress,
                 "recording the installed packages as pylock.toml", no_deps=True, log=log)
    except EnvironmentBuildError as exc:
        if log is not None:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"note: no pylock.toml recorded for this environment: {exc.message}\n")
        return False
    return True


def uv_install_args(lock: Path) -> list[str]:
    return ["--preview-features", "pylock", "-r", str(lock)]


def pip_requirement_lines(lock: PyLock) -> list[str]:
    """The lock for pip (which installs no pylock.toml yet): every package pinned, with its
    marker, and the hashes of all its files, so pip takes the file for this machine and
    checks it (`--require-hashes --no-deps`)."""
    lines = []
    for package in lock.packages:
        files = [*(package.get("wheels") or []), *([package["sdist"]] if package.get("sdist") else [])]
        hashes = [f"--hash=sha256:{f['hashes']['sha256']}" for f in files if (f.get("hashes") or {}).get("sha256")]
        if not hashes:
            raise EnvironmentBuildError(f"{lock.path.name}: {package.get('name')} has no sha256 hash to check",
                                        hint="lock it again with `mlproject lock PROJECT`")
        marker = f" ; {package['marker']}" if package.get("marker") else ""
        lines.append(f"{package['name']}=={package['version']}{marker} {' '.join(hashes)}")
    return lines


def _compile(lines: list[str], constraints: list[str], python_version: str, platforms: list[str], out: Path,
             tool: dict, progress, label: str, *, no_deps: bool = False, log: Path | None = None) -> None:
    from runner.envs.build import run_step
    from runner.envs.uvtool import uv_binary, uv_env

    unknown = [p for p in platforms if p not in UV_PLATFORMS]
    if unknown:
        raise EnvironmentBuildError(f"cannot lock Python packages for platform {', '.join(unknown)}",
                                    hint=f"platforms: {', '.join(UV_PLATFORMS)}")
    with tempfile.TemporaryDirectory(prefix="mlproject-pylock-") as scratch:
        work = Path(scratch)
        (work / "requirements.txt").write_text("".join(line + "\n" for line in lines))
        argv = [uv_binary(), "pip", "compile", str(work / "requirements.txt"), "--format", "pylock.toml",
                "--python-version", python_version, "--quiet", "--no-header", "-o", str(work / LOCK_NAME)]
        if constraints:
            (work / "constraints.txt").write_text("".join(line + "\n" for line in constraints))
            argv += ["-c", str(work / "constraints.txt")]
        argv += ["--python-platform", UV_PLATFORMS[platforms[0]]] if len(platforms) == 1 else ["--universal"]
        if no_deps:
            argv.append("--no-deps")
        run_step(argv, label, env=uv_env(), log=log, progress=progress)
        text = (work / LOCK_NAME).read_text(encoding="utf-8")
    header = f"# Written by {TOOL} with uv; `uv pip install -r {LOCK_NAME}` installs it.\n"
    text = header + text.rstrip("\n") + "\n\n" + _tool_table(tool)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)


def _tool_table(values: dict) -> str:
    """Our `[tool.mlproject-runner]` table (PEP 751 leaves tool tables to their tools)."""
    rows = [f"[tool.{TOOL}]"]
    for key, value in values.items():
        rows.append(f"{key} = {json.dumps(value)}")  # strings, booleans and lists of strings: JSON is TOML here
    return "\n".join(rows) + "\n"
