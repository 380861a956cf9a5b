"""Requirement lines in canonical form, for environment keys and installs.

Comments and blank lines are dropped; `-r`/`-c` files are read (relative to
the file or project that names them, never outside the project) so a change in
them changes the key; local directories and files named as requirements
contribute a fingerprint of their contents, so editing a local package
rebuilds its environment (MLflow never notices).
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from runner.errors import EnvironmentBuildError
from runner.project.paths import resolve_inside

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Sequence

_OPTION_WITH_FILE = re.compile(r"^(-r|--requirement|-c|--constraint)(?:\s+|=)(.+)$")
_COMMENT = re.compile(r"(^|\s)#.*$")
_LOCAL = re.compile(r"^(-e\s+|--editable\s+|--editable=)?(\.{1,2}(/|$)|/|file:)")


@dataclass
class Requirements:
    lines: list[str] = field(default_factory=list)  # what the installer gets (files inlined)
    constraints: list[str] = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)  # local path -> content hash

    def key_material(self) -> dict:
        return {
            "requirements": sorted(self.lines),
            "constraints": sorted(self.constraints),
            "local": dict(sorted(self.fingerprints.items())),
        }


def clean(line: str) -> str:
    return " ".join(_COMMENT.sub("", line).split())


def collect(lines: Sequence[str], project_dir: Path, base_dir: Path | None = None) -> Requirements:
    result = Requirements()
    _collect(list(lines), project_dir, base_dir or project_dir, result, depth=0)
    return result


def _collect(lines: list[str], project_dir: Path, base_dir: Path, out: Requirements, depth: int) -> None:
    if depth > 10:
        raise EnvironmentBuildError("requirement files include each other too deeply (more than 10 levels)")
    joined: list[str] = []
    for raw in lines:  # join backslash continuations as pip does
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + raw
        else:
            joined.append(raw)
    for raw in joined:
        line = clean(raw)
        if not line:
            continue
        option = _OPTION_WITH_FILE.match(line)
        if option:
            flag, name = option.group(1), option.group(2).strip()
            path = _inside(project_dir, base_dir, name)
            try:
                content = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise EnvironmentBuildError(f"{flag} {name}: cannot read: {exc.strerror}") from None
            if flag in ("-c", "--constraint"):
                nested = Requirements()
                _collect(content, project_dir, path.parent, nested, depth + 1)
                out.constraints.extend(nested.lines + nested.constraints)
                out.fingerprints.update(nested.fingerprints)
            else:
                _collect(content, project_dir, path.parent, out, depth + 1)
            continue
        local = _LOCAL.match(line)
        if local:
            target = line[len(local.group(1) or ""):]
            target = target[len("file:"):] if target.startswith("file:") else target
            target = target.lstrip("/") if target.startswith("//") else target
            path = _inside(project_dir, base_dir, target.split("#", 1)[0].split("[", 1)[0])
            out.fingerprints[str(path.relative_to(project_dir.resolve()))] = _fingerprint(path)
            # The installer runs in the project directory; give it an absolute path.
            line = (local.group(1) or "") + str(path)
        out.lines.append(line)


def _inside(project_dir: Path, base_dir: Path, name: str) -> Path:
    relative = os.path.relpath(base_dir.resolve() / name, project_dir.resolve()) if not os.path.isabs(name) else name
    try:
        return resolve_inside(project_dir, relative, "requirement path")
    except ValueError as exc:
        raise EnvironmentBuildError(str(exc), hint="requirement files and local packages must be inside the project") from None


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
        return digest.hexdigest()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in (".git", "__pycache__", ".venv", "build", "dist") and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            digest.update(os.path.relpath(full, path).encode() + b"\0")
            try:
                with open(full, "rb") as handle:
                    digest.update(handle.read())
            except OSError:
                continue
    return digest.hexdigest()
