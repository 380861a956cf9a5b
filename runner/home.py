"""Where mlproject-runner keeps its state: `$MLPROJECT_HOME`, default ~/.cache/mlproject."""
from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    configured = os.environ.get("MLPROJECT_HOME")
    if configured:
        return Path(configured).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "mlproject"


def staging(configured: str | None = None) -> Path:
    """Where projects are staged for a cluster's nodes: a backend config's `staging_dir`, or
    `$MLPROJECT_HOME/staging`."""
    return Path(configured).expanduser().absolute() if configured else home() / "staging"


def subdir(name: str) -> Path:
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_json(path: Path, data: object) -> bool:
    """Write JSON atomically (see `save_text`); False if it could not."""
    import json

    return save_text(path, json.dumps(data, indent=2, sort_keys=True))


def save_text(path: Path, text: str) -> bool:
    """Write a file atomically (a temporary file renamed over the target); False if it could not.

    Used for caches and records whose loss only costs time: readers never see a
    half-written file, and concurrent writers (processes or threads) never share
    a temporary name.
    """
    import threading

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
        return False
