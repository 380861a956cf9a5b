"""Every seam's registry, listed once: the backends (where a run executes) and the environment
managers (what it runs in).

Each entry is a loader whose return type names the seam's Protocol (`runner.backends.base`,
`runner.envs.base`), so the type checker (`make lint`) checks every registered module against
its contract; the module itself is imported only when it is used. This file imports nothing
heavy: the CLI reads the names from it to build its options.

Adding a backend or a manager is one new module and one loader + entry here (README,
"Adding a backend"). From outside the package, `register_backend` / `register_env_manager`.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    from runner.backends.base import Backend, ClusterBackend
    from runner.envs.base import EnvManager


# -- backends ------------------------------------------------------------------------------------
def _local_backend() -> Backend:
    from runner.backends import local

    return local


def _slurm() -> ClusterBackend:
    from runner.backends import slurm

    return slurm


def _ray() -> ClusterBackend:
    from runner.backends import ray

    return ray


# A cluster backend's runs are jobs of a scheduler, which says how they ended.
CLUSTERS: dict[str, Callable[[], ClusterBackend]] = {"slurm": _slurm, "ray": _ray}
BACKENDS: dict[str, Callable[[], Backend]] = {"local": _local_backend, **CLUSTERS}


# -- environment managers --------------------------------------------------------------------------
def _local_env() -> EnvManager:
    from runner.envs import local

    return local


def _virtualenv() -> EnvManager:
    from runner.envs.python import virtualenv

    return virtualenv


def _uv() -> EnvManager:
    from runner.envs.python import uv

    return uv


def _conda() -> EnvManager:
    from runner.envs.conda import manager

    return manager


def _docker() -> EnvManager:
    from runner.envs.docker import manager

    return manager


ENV_MANAGERS: dict[str, Callable[[], EnvManager]] = {
    "local": _local_env, "virtualenv": _virtualenv, "uv": _uv, "conda": _conda, "docker": _docker,
}


# -- from outside the package --------------------------------------------------------------------
def register_backend(name: str, loader: Callable[[], Backend]) -> None:
    BACKENDS[name] = loader


def register_cluster_backend(name: str, loader: Callable[[], ClusterBackend]) -> None:
    CLUSTERS[name] = loader
    BACKENDS[name] = loader


def register_env_manager(name: str, loader: Callable[[], EnvManager]) -> None:
    ENV_MANAGERS[name] = loader


def unregister(name: str) -> None:
    """(Tests.) A registered backend or manager gone again."""
    for registry in (BACKENDS, CLUSTERS, ENV_MANAGERS):
        registry.pop(name, None)  # type: ignore[attr-defined]
