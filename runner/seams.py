"""Every seam's registry, listed once: the backends (where a run executes), the environment
managers (what it runs in) and the sweep searches (how a sweep chooses its trials).

Each entry is a loader whose return type names the seam's Protocol (`runner.backends.base`,
`runner.envs.base`, `runner.sweeps.search`), so the type checker (`make lint`) checks every registered module against
its contract; the module itself is imported only when it is used. This file imports nothing
heavy: the CLI reads the names from it to build its options.

Adding a backend or a manager is one new module and one loader + entry here (README,
"Adding a backend"). From outside the package, `register_backend` / `register_env_manager`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Callable

    from runner.backends.base import Backend, ClusterBackend
    from runner.envs.base import EnvManager
    from runner.sweeps.search import Search, SearchSettings

    MakeSearch = Callable[[SearchSettings], Search]


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


# -- sweep searches (how a sweep chooses its trials) ---------------------------------------------
def _grid() -> MakeSearch:
    from runner.sweeps.search import GridSearch

    return GridSearch


def _random() -> MakeSearch:
    from runner.sweeps.search import RandomSearch

    return RandomSearch


def _optuna() -> MakeSearch:
    from runner.sweeps.optuna_search import OptunaSearch

    return OptunaSearch


SEARCHES: dict[str, Callable[[], MakeSearch]] = {"grid": _grid, "random": _random, "optuna": _optuna}


# -- from outside the package --------------------------------------------------------------------
def register_backend(name: str, loader: Callable[[], Backend]) -> None:
    BACKENDS[name] = loader


def register_cluster_backend(name: str, loader: Callable[[], ClusterBackend]) -> None:
    CLUSTERS[name] = loader
    BACKENDS[name] = loader


def register_env_manager(name: str, loader: Callable[[], EnvManager]) -> None:
    ENV_MANAGERS[name] = loader


def register_search(name: str, loader: Callable[[], MakeSearch]) -> None:
    SEARCHES[name] = loader


def unregister(name: str) -> None:
    """(Tests.) A registered backend, manager or search gone again."""
    for registry in (BACKENDS, CLUSTERS, ENV_MANAGERS, SEARCHES):
        registry.pop(name, None)  # type: ignore[attr-defined]
