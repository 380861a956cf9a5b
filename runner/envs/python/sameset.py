"""One environment per installed set: a lock whose packages an environment in the store already
holds, exactly, is installed into that environment, not into a new one.

A run, its `--locked` run and its rerun install the same packages by three ways (resolved from
python_env.yaml, from pylock.toml, from the lock the first recorded), and each way has a key of
its own; without this each built its own copy (88 packages, 677 MB each, sharing no inodes).
The store is asked only for a plan that installs a lock, whose set is known before any build:
every complete environment of the same manager, interpreter, platform and package index whose
recorded `packages.txt` names exactly the lock's `name==version` pairs is that environment.
"""
from __future__ import annotations

import json
import re

from runner.envs.python.pylock import PyLock

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from runner.store import Store

# What must match besides the packages (the rest of a description says how the set was chosen).
_SAME = ("recipe", "manager", "platform", "python", "index")


def holding(lock: PyLock, description: dict, store: Store) -> dict | None:
    """The description (hence the key) of a complete environment in `store` that holds exactly
    `lock`'s packages and matches `description` on everything but how its set was chosen; None."""
    from runner.store import META_DIR

    wanted = {_normal(name): version for name, version in lock.versions().items()}
    for path in sorted(store.root.glob(f"{description['manager']}-*")):
        if not store.is_complete(path):
            continue
        try:
            meta = json.loads((path / META_DIR / "meta.json").read_text())
            lines = (path / META_DIR / "packages.txt").read_text().splitlines()
        except (OSError, ValueError):
            continue
        recorded = meta.get("description")
        if not isinstance(recorded, dict) or any(recorded.get(name) != description.get(name) for name in _SAME):
            continue
        held = dict(_pin(line) for line in lines if "==" in line)
        if held == wanted:
            return recorded
    return None


def _pin(line: str) -> tuple[str, str]:
    name, _, version = line.strip().partition("==")
    return _normal(name), version


def _normal(name: str) -> str:
    """A distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()
