"""Artifacts for local artifact roots (a path or file:// URI): copied into place."""
from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

from runner.errors import TrackingError


def local_root(artifact_uri: str) -> Path | None:
    if artifact_uri.startswith("file:"):
        return Path(unquote(urlsplit(artifact_uri).path))
    if artifact_uri.startswith("/"):
        return Path(artifact_uri)
    return None


def copy_local(artifact_uri: str, source: Path, name: str) -> None:
    root = local_root(artifact_uri)
    if root is None:
        raise TrackingError(f"cannot store artifacts at {artifact_uri!r} without the mlflow package")
    target = root / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
