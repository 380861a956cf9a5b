"""The content-addressed store: environments (`$MLPROJECT_HOME/envs`) and, with the same locking
and atomic publication, the git cache's checkouts (runner.sources.cache).

    $MLPROJECT_HOME/envs/<kind>-<key>/           a complete environment
    $MLPROJECT_HOME/envs/<kind>-<key>/.mlproject/ meta.json, packages.txt, complete
    $MLPROJECT_HOME/envs/.tmp-<kind>-<key>-*/    a build in progress (or abandoned)
    $MLPROJECT_HOME/envs/.locks/<kind>-<key>.lock

An environment is built in a private temporary directory, its completion
marker written last, and then renamed into place, so a directory at the final
path is always complete. A per-key file lock is held exclusively while
building (concurrent first runs build once; the others wait) and shared while
a run uses the environment (gc and rm skip what is in use). The store knows
nothing about how managers build; managers know nothing about locking.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from runner import home
from runner.filelock import FileLock

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Callable


META_DIR = ".mlproject"
COMPLETE = "complete"


@dataclass(frozen=True)
class StoredEnv:
    kind: str
    key: str
    path: Path
    meta: dict
    last_used: float

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.key}"


class Lease:
    """A shared lock on one environment (or cached checkout), held while a run uses it."""

    def __init__(self, lock: FileLock | None):
        import threading

        self._held = lock
        self._lock = threading.Lock()

    def release(self) -> None:
        # Idempotent and thread-safe: a run's end (another thread) and an error
        # path may both release; the lock must be closed exactly once.
        with self._lock:
            held, self._held = self._held, None
        if held is not None:
            held.close()


class Store:
    def __init__(self, root: Path | None = None):
        self.root = root or home.home() / "envs"

    # -- paths -------------------------------------------------------------
    def path_of(self, kind: str, key: str) -> Path:
        return self.root / f"{kind}-{key}"

    def _lock_path(self, name: str) -> Path:
        return self.root / ".locks" / f"{name}.lock"

    def _open_lock(self, name: str) -> FileLock:
        return FileLock(self._lock_path(name))

    @staticmethod
    def is_complete(path: Path) -> bool:
        return (path / META_DIR / COMPLETE).is_file()

    # -- use or build --------------------------------------------------------
    def lookup(self, kind: str, key: str) -> tuple[Path, Lease] | None:
        """The complete environment with a shared lease on it, or None."""
        path = self.path_of(kind, key)
        if not self.is_complete(path):
            return None
        lock = self._open_lock(path.name)
        lock.shared()
        if not self.is_complete(path):  # removed while we waited for the lock
            lock.close()
            return None
        _touch(path / META_DIR / COMPLETE)
        return path, Lease(lock)

    def ensure(
        self,
        kind: str,
        key: str,
        build: Callable[[Path, Path], None],
        meta: dict,
        on_wait: Callable[[], None] | None = None,
        event: str = "built",
    ) -> tuple[Path, Lease]:
        """Reuse the environment, or build it exactly once across processes.

        `build(tmp_dir, final_dir)` creates and fills `tmp_dir`; it may rely on being
        renamed to `final_dir` afterwards. Any exception removes the build. `event` is what
        the store's history says was done (`built`, `unpacked`).
        """
        found = self.lookup(kind, key)
        if found is not None:
            return found
        final = self.path_of(kind, key)
        lock = self._open_lock(final.name)
        try:
            lock.exclusive(on_wait=on_wait)
            if not self.is_complete(final):
                self._build_locked(kind, key, final, build, meta, event)
            # Downgrade to shared: we now only use it. (flock conversion is not atomic,
            # but nothing removes a complete environment without the exclusive lock.)
            lock.shared()
            _touch(final / META_DIR / COMPLETE)
            return final, Lease(lock)
        except BaseException:
            lock.close()
            raise

    def _build_locked(self, kind: str, key: str, final: Path, build, meta: dict, event: str) -> None:
        # We hold the exclusive lock: no one else is building this key, so any
        # leftover temporary build of it (a killed run) or incomplete final
        # directory can go.
        self._remove_leftovers(final.name)
        if final.exists():
            remove_tree(final, self.root)
        # The builder creates `tmp` itself (installers refuse an existing directory).
        tmp = self.root / f".tmp-{final.name}-{os.getpid()}-{os.urandom(3).hex()}"
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            build(tmp, final)
            meta_dir = tmp / META_DIR
            meta_dir.mkdir(exist_ok=True)
            # The size is measured later, by `env list` (walking a 600 MB tree costs ~140 ms).
            record = {**meta, "kind": kind, "key": key, "created": time.time()}
            (meta_dir / "meta.json").write_text(json.dumps(record, indent=2, sort_keys=True))
            _fsync_dir_entries(meta_dir)
            (meta_dir / COMPLETE).write_text("")  # written last
            os.rename(tmp, final)
            append_history(self.root, f"{time.time():.3f} {event} {final.name} pid={os.getpid()}")
        except BaseException:
            if os.path.lexists(tmp):
                remove_tree(tmp, self.root)
            raise

    def _remove_leftovers(self, name: str) -> None:
        for entry in self.root.glob(f".tmp-{name}-*"):
            remove_tree(entry, self.root)

    # -- inspection and removal ------------------------------------------------
    def list(self) -> list[StoredEnv]:
        result = []
        if not self.root.is_dir():
            return result
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not self.is_complete(entry):
                continue
            try:
                meta = json.loads((entry / META_DIR / "meta.json").read_text())
                last_used = (entry / META_DIR / COMPLETE).stat().st_mtime
            except (OSError, ValueError):
                continue
            if "size" not in meta:
                meta["size"] = _tree_size(entry)
                home.save_json(entry / META_DIR / "meta.json", meta)
            kind, _, key = entry.name.rpartition("-")
            result.append(StoredEnv(kind, key, entry, meta, last_used))
        return result

    def find(self, key_prefix: str) -> list[StoredEnv]:
        return [env for env in self.list() if env.key.startswith(key_prefix) or env.name.startswith(key_prefix)]

    def remove(self, env: StoredEnv) -> bool:
        """Remove one environment unless a run holds it; False if it is in use."""
        lock = self._open_lock(env.name)
        try:
            if not lock.exclusive(wait=False):
                return False
            marker = env.path / META_DIR / COMPLETE
            try:
                marker.unlink()  # first: from here on nobody will reuse it
            except FileNotFoundError:
                pass
            trash = self.root / f".tmp-{env.name}-trash-{os.urandom(3).hex()}"
            try:
                os.rename(env.path, trash)
            except FileNotFoundError:
                return True
            remove_tree(trash, self.root)
            return True
        finally:
            lock.close()

    def in_use(self, env: StoredEnv) -> bool:
        """Whether a run (or a build) holds the environment now."""
        lock = self._open_lock(env.name)
        try:
            return not lock.exclusive(wait=False)
        finally:
            lock.close()

    def gc(self, older_than: float, dry_run: bool = False) -> tuple[list[StoredEnv], list[StoredEnv], int]:
        """(removed, skipped because in use, leftover temporary builds removed); with `dry_run`,
        what would be removed, and nothing is."""
        cutoff = time.time() - older_than
        removed, in_use = [], []
        for env in self.list():
            if env.last_used > cutoff:
                continue
            gone = not self.in_use(env) if dry_run else self.remove(env)
            (removed if gone else in_use).append(env)
        leftovers = 0
        for entry in self.root.glob(".tmp-*") if self.root.is_dir() else ():
            name = entry.name[len(".tmp-"):].rsplit("-", 2)[0]
            lock = self._open_lock(name)
            try:
                if not lock.exclusive(wait=False):
                    continue  # a build of that key is running now
                if not dry_run:
                    remove_tree(entry, self.root)
                leftovers += 1
            finally:
                lock.close()
        return removed, in_use, leftovers


def append_history(root: Path, line: str) -> None:
    """One line per published build (`envs/.builds.log`): an audit trail of what was built when."""
    try:
        with open(root / ".builds.log", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    except OSError:
        pass


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def _tree_size(root: Path, seen: set[tuple[int, int]] | None = None) -> int:
    """Disk use as `du` counts it: a file hard-linked several times (uv links from its cache,
    conda from its package cache) counts once, in the first tree walked with the same `seen`."""
    seen = set() if seen is None else seen
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if st.st_nlink > 1 and not os.path.isdir(os.path.join(dirpath, name)):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def disk_usage(paths: list[Path]) -> list[int]:
    """Each tree's size, every hard-linked file counted once across all of them (as `du a b`)."""
    seen: set[tuple[int, int]] = set()
    return [_tree_size(path, seen) for path in paths]


def _fsync_dir_entries(directory: Path) -> None:
    for entry in directory.iterdir():
        try:
            fd = os.open(entry, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_tree(path: Path, root: Path) -> None:
    import shutil

    # Never follow a path out of the store, whatever the directory holds.
    if root.resolve() not in path.resolve().parents:
        raise RuntimeError(f"refusing to remove {path}: outside the store")

    def make_writable_and_retry(func, failed_path, _exc):
        try:
            os.chmod(os.path.dirname(failed_path), 0o755)
            os.chmod(failed_path, 0o755)
            func(failed_path)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)
