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


def subdir(name: str) -> Path:
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path
