"""What every tracker shares: the experiment choice, run names, time, retries."""
from __future__ import annotations

import os
import random
import time

from runner.errors import TrackingError, out_of_descriptors

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Callable, TypeVar

    T = TypeVar("T")


def now_ms() -> int:
    return int(time.time() * 1000)


def experiment_choice(name: str | None, experiment_id: str | None) -> tuple[str | None, str | None]:
    """(name, id) the way `mlflow run` picks them: flags, then MLFLOW_EXPERIMENT_NAME/ID, then Default (0)."""
    if name and experiment_id:
        raise TrackingError("give --experiment-name or --experiment-id, not both")
    if name or experiment_id:
        return name, experiment_id
    env_name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    env_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if env_name:
        return env_name, None
    return None, env_id or "0"


_ADJECTIVES = (
    "amber", "bold", "brisk", "calm", "clever", "crisp", "dapper", "eager", "fleet", "gentle", "glad", "keen",
    "lucid", "mellow", "nimble", "placid", "quick", "quiet", "rapid", "sleek", "steady", "sunny", "tidy", "vivid",
)
_NOUNS = (
    "badger", "bee", "crane", "dolphin", "falcon", "fox", "heron", "ibis", "koala", "lark", "lynx", "mole",
    "newt", "otter", "owl", "panda", "quail", "robin", "seal", "stork", "tern", "vole", "wren", "yak",
)


def random_run_name() -> str:
    """A readable run name, like MLflow gives a run that was not named."""
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}-{random.randint(0, 999)}"


def retry(action: Callable[[], T], what: str, budget_seconds: float | None = None,
          when: Callable[[TrackingError], bool] | None = None) -> T:
    """`action()`, again with backoff while it fails with a TrackingError (one that `when`
    accepts, if given), for MLPROJECT_TRACKING_RETRY_SECONDS (60) or `budget_seconds`."""
    if budget_seconds is None:
        budget_seconds = float(os.environ.get("MLPROJECT_TRACKING_RETRY_SECONDS", "60"))
    deadline = time.monotonic() + budget_seconds
    delay = 0.25
    while True:
        try:
            return action()
        except TrackingError as exc:
            if (when is not None and not when(exc)) or time.monotonic() + delay > deadline or out_of_descriptors():
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def refuse_changed_params(run_id: str, existing: dict[str, str], params: dict[str, str]) -> None:
    """A continued run (--run-id) keeps its parameters: MLflow refuses a new value for one,
    so say so before the run is touched."""
    for key, value in params.items():
        if key in existing and existing[key] != value:
            raise TrackingError(f"run {run_id} already has parameter {key}={existing[key]!r}, not {value!r}",
                                hint="MLflow keeps a parameter's first value; leave out --run-id to start a new run",
                                python_hint="MLflow keeps a parameter's first value; leave out run_id= to start a new run")


def tag_filter(key: str, value: str) -> str:
    """An MLflow search filter for runs tagged key=value (values are ours: quotes are dropped)."""
    return f"tags.`{key}` = '{value.replace(chr(39), '')}'"
