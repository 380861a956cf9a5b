"""Find Python interpreters on this machine: PATH, pyenv's versions, uv-managed.

Never downloads anything. Each interpreter's version is asked once and cached
by (real path, size, mtime), so discovery on the warm path is a few stats.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from runner import home
from runner.errors import EnvironmentBuildError

_VERSION_NAME = re.compile(r"^python(3(\.\d+)?)?$")


@dataclass(frozen=True)
class Interpreter:
    version: str  # "3.11.7"
    path: str  # real path of the executable

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.version.split("."))


def current() -> Interpreter:
    """The interpreter running mlproject (its base, when we run inside a venv)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    version = ".".join(str(p) for p in sys.version_info[:3])
    return Interpreter(version, os.path.realpath(base))


def _candidates() -> list[str]:
    seen: list[str] = []
    base = getattr(sys, "_base_executable", None) or sys.executable
    paths = [base]
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or "/shims" in directory or "pyenv/shims" in directory:
            continue  # pyenv shims pick a version from the caller's context
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        paths.extend(os.path.join(directory, n) for n in names if _VERSION_NAME.match(n))
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    uv_root = Path(os.environ.get("UV_PYTHON_INSTALL_DIR") or Path.home() / ".local/share/uv/python")
    for root in (pyenv_root / "versions", uv_root):
        try:
            entries = sorted(os.listdir(root))
        except OSError:
            continue
        for entry in entries:
            paths.append(str(root / entry / "bin" / "python3"))
    for path in paths:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            real = os.path.realpath(path)
            if real not in seen:
                seen.append(real)
    return seen


def discover() -> list[Interpreter]:
    cache_file = home.home() / "interpreters.json"
    try:
        cache: dict[str, list] = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    found: list[Interpreter] = []
    changed = False
    for path in _candidates():
        try:
            st = os.stat(path)
        except OSError:
            continue
        stamp = [st.st_size, st.st_mtime_ns]
        entry = cache.get(path)
        if entry and entry[:2] == stamp:
            version = entry[2]
        else:
            version = _ask_version(path)
            cache[path] = [*stamp, version]
            changed = True
        if version and version.startswith("3."):
            found.append(Interpreter(version, path))
    if changed:
        home.save_json(cache_file, cache)
    return found


def _ask_version(path: str) -> str | None:
    try:
        out = subprocess.run(
            [path, "-c", "import sys; print('.'.join(map(str, sys.version_info[:3])))"],
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, "PYTHONNOUSERSITE": "1"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    return text if out.returncode == 0 and re.fullmatch(r"\d+\.\d+\.\d+", text) else None


def matches(version: str, wanted: str) -> bool:
    have = version.split(".")
    want = wanted.split(".")
    return have[: len(want)] == want


def find(wanted: str | None, where: str) -> Interpreter:
    """The interpreter for `wanted` ("3.10" or "3.10.13"); highest patch wins."""
    if not wanted:
        return current()
    wanted = wanted.strip()
    if not re.fullmatch(r"\d+(\.\d+){0,2}", wanted):
        raise EnvironmentBuildError(f"{where}: python {wanted!r} is not a version like 3.10 or 3.10.13")
    me = current()
    if matches(me.version, wanted) and len(wanted.split(".")) == 3:
        return me
    interpreters = discover()
    candidates = [i for i in interpreters if matches(i.version, wanted)]
    if not candidates:
        versions = sorted({i.version for i in interpreters}, key=lambda v: tuple(int(p) for p in v.split(".")))
        raise EnvironmentBuildError(
            f"{where} asks for Python {wanted}, which is not on this machine; found {', '.join(versions) or 'none'}",
            hint=f"install Python {wanted} (for example with pyenv), or change the version the project asks for",
        )
    best = max(c.version_tuple for c in candidates)
    return next(c for c in candidates if c.version_tuple == best)
