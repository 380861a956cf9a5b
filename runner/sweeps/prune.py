"""Early stopping (`--prune median|asha`): a trial whose intermediate values (its `--metric`,
logged with a step) fall behind is stopped, recorded KILLED with the reason `pruned at step S`,
and counted as pruned, not failed. A resumed sweep keeps it pruned.

The search owns its pruner (`Search.pruner`): grid and random use the median rule below;
`--method optuna` uses Optuna's own pruners (MedianPruner, SuccessiveHalvingPruner for asha)
on its study, reported to as the trial's values arrive.
"""
from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from runner.errors import UsageError

if TYPE_CHECKING:
    from runner.sweeps.state import Trial

PRUNERS = ("median", "asha")
# How often a running trial's values are read while it runs (seconds).
POLL_SECONDS = 1.0


class Pruner(Protocol):
    def should_prune(self, trial: Trial, history: list[tuple[int, float]]) -> bool:
        """Whether the running `trial`, whose values so far are `history`, falls behind."""
        ...

    def finished(self, trial: Trial, history: list[tuple[int, float]]) -> None:
        """A trial that finished on its own: its values are what later trials are held to."""
        ...


def check_prune(name: str | None, method: str, metric: str | None) -> None:
    if name is None:
        return
    if name not in PRUNERS:
        raise UsageError(f"unknown pruner {name!r}", hint=f"choose one of: {', '.join(PRUNERS)}")
    if not metric:
        raise UsageError(f"--prune {name} needs --metric: the value each trial logs with a step",
                         hint="for example --metric val_loss (logged with mlflow.log_metric(..., step=epoch))",
                         python_hint='for example metric="val_loss"')
    if name == "asha" and method != "optuna":
        raise UsageError("--prune asha needs --method optuna (Optuna's successive halving)",
                         hint="use --method optuna, or --prune median with grid or random")


@dataclass
class MedianRule:
    """Stop a trial whose best value so far is worse than the median of the finished trials'
    values at the same step (Optuna's MedianPruner's rule), once `startup_trials` trials have
    finished and past `warmup_steps` steps."""

    goal: str  # minimize | maximize
    startup_trials: int = 3
    warmup_steps: int = 0
    _finished: list[dict[int, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def finished(self, trial: Trial, history: list[tuple[int, float]]) -> None:
        if history:
            with self._lock:
                self._finished.append(dict(history))

    def should_prune(self, trial: Trial, history: list[tuple[int, float]]) -> bool:
        if not history:
            return False
        step = history[-1][0]
        if step < self.warmup_steps:
            return False
        with self._lock:
            if len(self._finished) < self.startup_trials:
                return False
            at_step = [values[step] for values in self._finished if step in values]
        if not at_step:
            return False
        values = [value for _, value in history]
        best = min(values) if self.goal == "minimize" else max(values)
        median = statistics.median(at_step)
        return best > median if self.goal == "minimize" else best < median
