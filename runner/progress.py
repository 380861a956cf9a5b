"""Long work made visible: environment builds, clones, solves, image builds.

On a terminal a step is one line redrawn with its elapsed time while it runs,
then left as `label: done in 3.2 s`. Off a terminal (a CI log, a pipe) a step
is two plain lines, when it starts and when it ends, with nothing animated, so
a log never shows an unexplained silence.

Callers take `progress`: a Progress, any callable taking a message (the API's
older form, told each step's label), or None for silence. `step(progress,
label)` works with all three.
"""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Callable, Iterator, TextIO

_FRAMES = "|/-\\"


class Progress:
    def __init__(self, stream: TextIO | None = None, live: bool | None = None, interval: float = 0.1):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.interval = interval
        self._lock = threading.Lock()
        self._active: list[tuple[str, float]] = []  # the steps running, innermost last
        self._drawn = False  # a live line is on the screen
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    def __call__(self, message: str) -> None:
        """A one-off line about the work (e.g. waiting for another process)."""
        with self._lock:
            self._clear()
            self._write(f"  {message}\n")
            self._draw()

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        started = time.monotonic()
        with self._lock:
            self._clear()
            if not self.live:
                self._write(f"  {label} ...\n")
            self._active.append((label, started))
            self._draw()
        if self.live:
            self._start_ticker()
        outcome = "failed after"
        try:
            yield
            outcome = "done in"
        except BaseException as exc:
            if not isinstance(exc, Exception):
                outcome = "interrupted after"
            raise
        finally:
            with self._lock:
                self._active = [item for item in self._active if item != (label, started)]
                self._clear()
                # On a terminal an inner step that went well leaves no line: the outer step's
                # line sums it up, as uv's do (a log keeps every step's start and end).
                if not (self.live and self._active and outcome == "done in"):
                    self._write(f"  {label}: {outcome} {human_duration(time.monotonic() - started)}\n")
                self._draw()
            if not self._active:
                self._stop_ticker()

    # -- the live line -----------------------------------------------------------------
    def _start_ticker(self) -> None:
        if self._ticker is not None:
            return
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick, daemon=True, name="mlproject-progress")
        self._ticker.start()

    def _stop_ticker(self) -> None:
        ticker = self._ticker
        if ticker is None:
            return
        self._stop.set()
        ticker.join()
        self._ticker = None

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                self._clear()
                self._draw()

    def _draw(self) -> None:
        if not (self.live and self._active):
            return
        label, started = self._active[-1]
        elapsed = time.monotonic() - started
        frame = _FRAMES[int(elapsed / self.interval) % len(_FRAMES)]
        line = f"  {frame} {label}  {human_duration(elapsed)}"
        # Never wider than the terminal: a wrapped line is not cleared by \r, and each redraw
        # would leave a stale copy of its first part behind.
        width = self._width()
        if len(line) >= width:
            line = line[:max(width - 4, 1)] + "..."
        self._write(line)
        self._drawn = True

    def _width(self) -> int:
        import os

        try:
            return os.get_terminal_size(self.stream.fileno()).columns or 80
        except (OSError, ValueError, AttributeError):
            return 80

    def _clear(self) -> None:
        if self._drawn:
            self._write("\r\033[K")
            self._drawn = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stream never stops the work being shown


def human_duration(seconds: float) -> str:
    """`3.2 s`, `4 min 7 s`, `2 h 5 min`: how long a step or a run took."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@contextmanager
def step(progress: Progress | Callable[[str], None] | None, label: str) -> Iterator[None]:
    """One long step, shown however `progress` shows things."""
    if isinstance(progress, Progress):
        with progress.step(label):
            yield
        return
    if progress is not None:
        progress(label)
    yield
