"""The content digest of a set of files in a directory: what a Docker build context or a
project staged for a cluster's nodes is keyed by (same files, same bytes, same key)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable


def files_digest(root: Path, relatives: Iterable[str | Path]) -> str:
    """sha256 over each file's relative path, its executable bits and its bytes (a symlink: its
    target), in the order given."""
    digest = hashlib.sha256()
    for relative in relatives:
        path = root / relative
        if path.is_symlink():
            digest.update(f"{relative}\0link\0{os.readlink(path)}\0".encode())
            continue
        digest.update(f"{relative}\0{os.stat(path).st_mode & 0o111}\0".encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
