"""Paths that must stay inside a root directory (project files, `#subdir`)."""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath


def is_within(root: Path, candidate: Path) -> bool:
    try:
        candidate.relative_to(root)
        return True
    except ValueError:
        return False


def resolve_inside(root: Path, relative: str, what: str) -> Path:
    """`root/relative` with symlinks resolved; ValueError if it leaves `root`.

    Absolute paths, `..` that climbs out, and symlinks pointing outside are all
    refused: nothing a project names may read outside the project.
    """
    if "\0" in relative:
        raise ValueError(f"{what} {relative!r} contains a NUL byte")
    if os.path.isabs(relative) or PurePosixPath(relative).is_absolute():
        raise ValueError(f"{what} {relative!r} must be relative to the project")
    real_root = root.resolve()
    target = (real_root / relative).resolve()
    if not is_within(real_root, target):
        raise ValueError(f"{what} {relative!r} leads outside the project")
    return target


def project_path(root: Path, relative: str, what: str, hint: str) -> Path:
    """resolve_inside, with a path that leaves the project reported as a ProjectError."""
    from runner.errors import ProjectError

    try:
        return resolve_inside(root, relative, what)
    except ValueError as exc:
        raise ProjectError(str(exc), hint=hint) from None
