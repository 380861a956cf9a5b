"""The search seam: how a sweep chooses its trials, as a typed contract (`Search`).

A search is made from the sweep's settings (`SearchSettings`) by a factory registered once in
`runner.seams.SEARCHES` (the CLI's --method choices and the check of a sweep.yaml's `method`
come from there). A search either plans every trial up front (grid, random: `planned`), or
proposes them as results come in (`ADAPTIVE`: optuna), asked for one trial at a time and told
each trial's end; `budget` is how many trials it runs in all.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Protocol

from runner.errors import UsageError

if TYPE_CHECKING:
    from pathlib import Path

    from runner.sweeps.prune import Pruner
    from runner.sweeps.space import Space
    from runner.sweeps.state import Trial


@dataclass(frozen=True)
class SearchSettings:
    space: Space
    max_runs: Optional[int]
    seed: Optional[int]
    metric: Optional[str]
    goal: str  # minimize | maximize
    prune: Optional[str] = None  # median | asha (runner.sweeps.prune), checked against the method


class Search(Protocol):
    @property
    def ADAPTIVE(self) -> bool:
        """Proposes its trials from the results so far (ask/tell), instead of all up front."""
        ...

    def planned(self) -> list[dict[str, str]]:
        """Every trial's parameters known before any runs, in order (an adaptive search: none)."""
        ...

    def budget(self) -> int:
        """How many trials the sweep runs in all."""
        ...

    def open(self, directory: Path, study_name: str) -> None:
        """(ADAPTIVE) Its state, kept in the sweep's directory so that --resume continues it."""
        ...

    def ask(self, known: int) -> Optional[Trial]:
        """(ADAPTIVE) The next trial; None once the sweep has its budget (`known`: trials so far)."""
        ...

    def tell(self, trial: Trial) -> None:
        """A trial's end (its status and metric)."""
        ...

    def pruner(self) -> Optional[Pruner]:
        """What stops trials that fall behind (`--prune`); None: none is stopped."""
        ...


class _PlannedUpFront:
    """What grid and random share: every trial known up front; nothing asked, nothing told."""

    ADAPTIVE = False

    def __init__(self, settings: SearchSettings):
        self.settings = settings
        self._points = self._draw(settings)

    def _draw(self, settings: SearchSettings) -> list[dict[str, str]]:
        raise NotImplementedError

    def planned(self) -> list[dict[str, str]]:
        return list(self._points)

    def budget(self) -> int:
        return len(self._points)

    def open(self, directory: Path, study_name: str) -> None:
        pass

    def ask(self, known: int) -> Optional[Trial]:
        return None

    def tell(self, trial: Trial) -> None:
        pass

    def pruner(self) -> Optional[Pruner]:
        from runner.sweeps.prune import MedianRule

        return MedianRule(self.settings.goal) if self.settings.prune == "median" else None


class GridSearch(_PlannedUpFront):
    """Every combination of the listed values, first dimension slowest (the first max_runs)."""

    def _draw(self, settings: SearchSettings) -> list[dict[str, str]]:
        space = settings.space
        continuous = [d.name for d in space.dimensions if not d.finite]
        if continuous:
            raise UsageError(f"a grid needs finite values, and {', '.join(continuous)} is a continuous range",
                             hint="use --method random (with --max-runs), or give a list or range(...)",
                             python_hint='use method="random" (with max_runs=), or give a list or range(...)')
        points: list[dict[str, str]] = [{}]
        for dimension in space.dimensions:
            points = [{**point, dimension.name: value} for point in points for value in dimension.values or ()]
        points = points[:settings.max_runs] if settings.max_runs else points
        return [{**dict(space.fixed), **point} for point in points]


class RandomSearch(_PlannedUpFront):
    """max_runs (default 10) draws of a generator seeded with `seed`: the same seed, the same trials."""

    def _draw(self, settings: SearchSettings) -> list[dict[str, str]]:
        space, rng = settings.space, random.Random(settings.seed)
        return [{**dict(space.fixed), **{d.name: d.draw(rng) for d in space.dimensions}}
                for _ in range(settings.max_runs or 10)]


def make_search(method: str, settings: SearchSettings) -> Search:
    """The search `method` names (registered in runner.seams), made from the sweep's settings."""
    from runner.seams import SEARCHES

    if method not in SEARCHES:
        raise UsageError(f"unknown sweep method {method!r}", hint=f"choose one of: {', '.join(SEARCHES)}")
    return SEARCHES[method]()(settings)
