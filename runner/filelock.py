"""One file-lock helper for every store (environments, the git cache, local MLflow stores):
an advisory `flock` on a lock file, held shared or exclusive, released when closed.

flock, not fcntl's record locks: it belongs to the open file, so a lock taken before a fork
or handed to another thread (a run's lease on its environment) is held until closed, and the
kernel releases it when its process dies however it died."""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Callable, Iterator


class FileLock:
    def __init__(self, path: Path):
        try:
            self.fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def shared(self) -> None:
        """Shared (also a downgrade from exclusive: not atomic, so nothing may rely on it)."""
        fcntl.flock(self._fd(), fcntl.LOCK_SH)

    def exclusive(self, wait: bool = True, on_wait: Callable[[], None] | None = None) -> bool:
        """Exclusive: False when another holds it and `wait` is False; `on_wait` is called once
        before waiting for it."""
        try:
            fcntl.flock(self._fd(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if not wait:
                return False
        if on_wait is not None:
            on_wait()
        fcntl.flock(self._fd(), fcntl.LOCK_EX)
        return True

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def _fd(self) -> int:
        if self.fd is None:
            raise ValueError("the lock was closed")
        return self.fd


@contextmanager
def held(path: Path, exclusive: bool = True) -> Iterator[FileLock]:
    lock = FileLock(path)
    try:
        if exclusive:
            lock.exclusive()
        else:
            lock.shared()
        yield lock
    finally:
        lock.close()
