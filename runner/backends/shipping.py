"""A run's environment, built once on the submit host and packed for the nodes that run it.

Nodes that share no `MLPROJECT_HOME` with the submit host (Ray's, always; Slurm's with
`"shared_home": false`) would each build the environment. Instead the submit host builds it
(or finds it built) and packs it once per key (runner.envs.pack) into the staging directory,
`staging_dir/environments/<manager>-<key>/mlproject_env_<key>/<manager>-<key>.tar.zst`, where
each submission dates it (`cache gc` removes those no submission used for the period). The
job brings the archive to its node (Ray: a `py_modules` package; Slurm: the staging directory
the nodes share), and the node's runner unpacks it into its own store (JobRequest.environment).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from runner.request import PreparedRun

_LOCK = threading.Lock()  # (a sweep's trials, submitted at once from one process, pack it once)


def packed_environment(state: PreparedRun, staging_dir: Path) -> Path | None:
    """The archive of the run's environment in `staging_dir`, packed now unless it is there;
    None when there is nothing to ship (the current environment, or a Docker image)."""
    planned = state.environment
    if planned.plan is None or planned.manager == "docker":
        return None
    from runner.backends.staging import ENVIRONMENTS
    from runner.envs.pack import SUFFIX

    name = f"{planned.manager}-{planned.plan.key}"
    archive = staging_dir / ENVIRONMENTS / name / f"mlproject_env_{planned.plan.key[:32]}" / f"{name}{SUFFIX}"
    with _LOCK:
        if archive.is_file():
            os.utime(archive)  # (used now: `cache gc` keeps it)
        else:
            _pack(state, archive)
    return archive


def _pack(state: PreparedRun, archive: Path) -> None:
    from runner.envs import pack, realize
    from runner.store import Store

    planned = state.environment
    assert planned.plan is not None
    prepared = realize(planned, state.progress)  # (built here, with its progress, unless it is)
    try:
        stored = next(env for env in Store().find(planned.plan.key) if env.kind == planned.manager)
        archive.parent.mkdir(parents=True, exist_ok=True)
        pack.pack(stored, archive, progress=state.progress)
    finally:
        prepared.release()
