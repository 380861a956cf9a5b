"""Where a run's cold start goes: how long each stage before its command took.

The stages, in the pipeline's order (a stage that did not happen is not recorded):

    fetch     the project's source fetched (a clone, a cache hit) and loaded
    solve     the environment planned before the run exists (a conda solve, a lock read)
    open      the run created in tracking and in the ledger
    unpack    a packed environment the job brought put into this node's store (a cluster job:
              built once on the submit host, see runner.envs.pack), instead of a build here
    build     the environment made, or found made (with its downloads: uv and conda fetch
              packages as they install them)
    download  the run's remote inputs (`runs:/`, `s3://` parameters)
    gpus      waiting for GPUs other runs held
    start     from the pipeline's start to the command's process started: the whole cold
              start, of which the stages above are parts

Each is recorded on the run as the tag `mlproject.timing.STAGE` (seconds), sent with its end
(no round trip on the way to the command), and in the run's directory (`timing.json`), where
`mlproject runs show` reads it.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

TAG_PREFIX = "mlproject.timing."
FILE_NAME = "timing.json"
STAGES = ("fetch", "solve", "open", "unpack", "build", "download", "gpus", "start")


@dataclass
class Timings:
    """A run's stage durations, measured as its pipeline goes (monotonic clock)."""

    began: float = field(default_factory=time.monotonic)
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage `name` (a stage entered twice adds up), even when it raises."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - started

    def record(self, name: str, seconds: float) -> None:
        """Stage `name` took `seconds` (measured by its caller: a stage that may turn out not to
        have happened, such as an unpack of what the store held already)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def command_started(self) -> None:
        self.seconds["start"] = time.monotonic() - self.began

    def tags(self) -> dict[str, str]:
        return {TAG_PREFIX + name: f"{self.seconds[name]:.3f}" for name in STAGES if name in self.seconds}

    def write(self, run_dir: Path) -> None:
        """Kept with the run for `runs show`; a full disk only loses this."""
        try:
            (run_dir / FILE_NAME).write_text(json.dumps({name: round(self.seconds[name], 3) for name in STAGES
                                                          if name in self.seconds}))
        except OSError:
            pass


def read(run_dir: Path) -> dict[str, float]:
    """What `Timings.write` kept in `run_dir` (nothing: {})."""
    try:
        data = json.loads((run_dir / FILE_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return {name: float(data[name]) for name in STAGES if isinstance(data, dict) and isinstance(data.get(name), (int, float))}


def line(seconds: dict[str, float]) -> str:
    """`runs show`'s line: the whole cold start, then its parts."""
    parts = [f"{name} {_duration(seconds[name])}" for name in STAGES if name in seconds and name != "start"]
    whole = f"{_duration(seconds['start'])} to the command's start" if "start" in seconds else "the command never started"
    return whole + (f" ({', '.join(parts)})" if parts else "")


def _duration(seconds: float) -> str:
    from runner.progress import human_duration

    return f"{seconds * 1000:.0f} ms" if seconds < 1 else human_duration(seconds)
