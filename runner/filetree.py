"""The content digest of a set of files in a directory: what a Docker build context or a
project staged for a cluster's nodes is keyed by (same files, same bytes, same key)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Iterable

# A file changed this recently may change again within its timestamp's granularity, unseen
# by its stat: a digest over such a file is not remembered (git's "racily clean" files).
_SETTLED = 2.0


def files_digest(root: Path, relatives: Iterable[str | Path]) -> str:
    """sha256 over each file's relative path, its executable bits and its bytes (a symlink: its
    target), in the order given."""
    digest = hashlib.sha256()
    for relative in relatives:
        digest.update(f"{relative}\0".encode())
        _feed(digest, root / relative)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of one file's executable bits and bytes (a symlink: its target)."""
    digest = hashlib.sha256()
    _feed(digest, path)
    return digest.hexdigest()


def _feed(digest, path: Path) -> None:
    """What a file contributes to a digest: `link\0TARGET\0` for a symlink, else its executable
    bits, `\0`, and its bytes."""
    if path.is_symlink():
        digest.update(f"link\0{os.readlink(path)}\0".encode())
        return
    digest.update(mode_material(os.stat(path).st_mode))
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def mode_material(mode: int) -> bytes:
    """What a regular file's mode contributes to its digest, before its bytes (for a caller that
    hashes the bytes as it streams them elsewhere, as `mlproject env pack` does)."""
    return f"{mode & 0o111}\0".encode()


def remembered_file_digests(root: Path, files: list[tuple[str, os.stat_result]], purpose: str) -> dict[str, str]:
    """{relative path: file_digest} of `files`, read once per state of the files, as
    `remembered_digest` is."""
    import json

    return json.loads(_remembered(root, files, purpose, lambda: json.dumps(
        {relative: file_digest(root / relative) for relative, _ in files}, sort_keys=True, separators=(",", ":"))))


def remembered_digest(root: Path, files: list[tuple[str, os.stat_result]], purpose: str) -> str:
    """`files_digest` of `files` (relative path, lstat), read once per state of the files: the
    digest is remembered with their stat (size, mtime and ctime in ns, inode), as git's index
    does, so an unchanged tree is not read again. Any write changes the ctime at least; files
    written in the last seconds are always read. `purpose` keeps apart the digests of different
    selections of one directory (a staged project, a Docker build context)."""
    return _remembered(root, files, purpose, lambda: files_digest(root, (relative for relative, _ in files)))


def _remembered(root: Path, files: list[tuple[str, os.stat_result]], purpose: str, compute) -> str:
    """compute() (one line of text), remembered with the files' stat (see remembered_digest)."""
    import time

    from runner import home

    stamp = hashlib.sha256(repr([(relative, info.st_mode, info.st_size, info.st_mtime_ns, info.st_ctime_ns,
                                  info.st_ino, info.st_dev) for relative, info in files]).encode()).hexdigest()
    name = hashlib.sha256(f"{purpose}\0{root}".encode()).hexdigest()[:32]
    remembered = home.home() / "cache" / "digests" / name
    try:
        known_stamp, known = remembered.read_text().split(" ", 1)
        if known_stamp == stamp:
            return known.rstrip("\n")
    except (OSError, ValueError):
        pass
    value = compute()
    newest = max((max(info.st_mtime_ns, info.st_ctime_ns) for _, info in files), default=0) / 1e9
    if newest < time.time() - _SETTLED:
        home.save_text(remembered, f"{stamp} {value}\n")  # (not written: only costs the next use a read)
    return value
