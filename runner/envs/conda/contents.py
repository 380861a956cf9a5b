"""What a conda environment must contain, as planned from conda.yaml (or a current lock)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runner.envs.python.requirements import Requirements

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any

LOCK_NAME = "conda-lock.yml"


@dataclass
class CondaContents:
    env_file: Path
    channels: tuple[str, ...]  # URLs, in priority order
    specs: tuple[str, ...]  # match specs, channel names resolved to URLs
    pip: Requirements
    platform: str
    variables: dict[str, str]
    has_python: bool  # python is in the environment (named, or brought by pip)
    names_python: bool = True  # conda.yaml names python itself (otherwise the solve chooses it)
    locked: list[Any] | None = None  # the LockedPackages of conda-lock.yml for this platform, when it is current
    records: list[dict] | None = field(default=None, repr=False)  # the solve (or the lock's records), once done


