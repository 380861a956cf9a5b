"""Packed environments (`mlproject env pack|unpack`): one archive of a built environment that any
store takes in, checked against its key and against every file's digest.

    .mlproject-pack/header.json    first: format, manager, key, the path it was built at, its meta
    <the environment's files>      as built (not its bytecode cache, not the store's own markers)
    .mlproject-pack/trailer.json   last: every file's digest, and which files name that path

An environment names its own path in some files (its scripts' shebangs, conda's prefix-patched
files, the scripts pip installs into a conda environment). Packing finds them as it reads every
file anyway (text: no NUL byte; binary: one or more), and unpacking rewrites them for where the
environment now lives: text as a plain replacement; binary as conda does, the new path padded
with NULs inside each NUL-terminated string, so that the binary's layout is unchanged (a path
longer than the original cannot go into a binary, and is refused). Symlinks into the old path
are re-pointed. What lies outside the environment is not packed: a Python virtualenv needs its
interpreter at the same path on the machine that unpacks it (the key names that path); a conda
environment carries its own Python.

The archive is a tar stream compressed with zstd (the `zstandard` library) at level 3: measured
on a 481 MB environment (2026-12-06), gzip at level 1 took 8.2 s to pack and 1.8 s to inflate in
the unpack; zstd takes ~2.7 s and 0.6 s, for an archive 13% smaller. The tar format is GNU's
(a long name gets a GNU long-name member; each header is built a little faster than a PAX one,
~2.5% of a pack of 481 MB), and every file's mtime is kept to the second.
Unpacking goes through the store: into a private temporary directory,
checked, relocated, then published under the key's lock, so that concurrent unpacks of one key
on a node unpack it once and a failed one leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from runner import faults
from runner.envs.build import relocated_text
from runner.errors import UsageError
from runner.filetree import mode_material
from runner.store import COMPLETE, META_DIR, Store, StoredEnv

from typing import TYPE_CHECKING, cast
if TYPE_CHECKING:
    from typing import IO, Callable, Iterator

FORMAT = 1
PACK_DIR = ".mlproject-pack"
HEADER = f"{PACK_DIR}/header.json"
TRAILER = f"{PACK_DIR}/trailer.json"
SUFFIX = ".tar.zst"
# Not packed: the bytecode cache (it mirrors the sources' absolute paths: useless anywhere else)
# and what the store writes itself when it publishes an environment.
_LEFT_OUT = frozenset({".pycache", f"{META_DIR}/{COMPLETE}", f"{META_DIR}/meta.json"})
_ZSTD_LEVEL = 3
_BLOCK = 1 << 20
_DAMAGED_HINT = "pack it again: the archive was changed or cut short on its way here"


@dataclass(frozen=True)
class Packed:
    path: Path
    name: str  # <manager>-<key>
    files: int
    size: int  # the files' bytes, before compression
    archive_size: int
    naming_prefix: int  # files that name the environment's path (rewritten when unpacked)


@dataclass(frozen=True)
class Unpacked:
    name: str
    path: Path
    already: bool  # the store held it already: nothing was unpacked


# -- pack ---------------------------------------------------------------------------------------
def pack(env: StoredEnv, output: Path | None = None, store: Store | None = None,
         progress: Callable[[str], None] | None = None) -> Packed:
    """Write `env` into one archive at `output` (default: `<manager>-<key>.tar.zst` here; a
    directory: that name in it). Held shared while read, so no gc removes it meanwhile; the
    archive appears at its name only complete."""
    from runner.progress import step

    if env.kind == "docker":
        raise UsageError(f"{env.name} is a Docker image, not a directory: env pack does not take it",
                         hint="ship the image itself (`docker save`, or a registry the nodes reach)")
    store = store or Store()
    found = store.lookup(env.kind, env.key)
    if found is None:
        raise UsageError(f"environment {env.name} was removed", hint="see `mlproject env list`")
    prefix, lease = found
    target = Path(output) if output is not None else Path.cwd()
    if target.is_dir():
        target = target / f"{env.name}{SUFFIX}"
    partial = target.with_name(f".{target.name}.part-{os.getpid()}-{os.urandom(4).hex()}")  # (threads too)
    try:
        entries = _entries(prefix)
        size = sum(info.st_size for _, info in entries if _is_regular(info))
        header = {"format": FORMAT, "kind": env.kind, "key": env.key, "prefix": str(prefix),
                  "meta": {name: value for name, value in env.meta.items() if name != "size"},
                  "files": len(entries), "bytes": size}
        from runner.envs.admin import human_size

        with step(progress, f"packing {env.name} ({len(entries)} files, {human_size(size)})"):
            naming = _write(partial, prefix, entries, header)
        os.replace(partial, target)
    except BaseException:
        try:
            os.unlink(partial)
        except FileNotFoundError:
            pass
        raise
    finally:
        lease.release()
    return Packed(target, env.name, len(entries), size, target.stat().st_size, naming)


def _entries(prefix: Path) -> list[tuple[str, os.stat_result]]:
    """(path relative to `prefix`, lstat) of everything packed, parents before their contents."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(prefix):
        relative_dir = os.path.relpath(dirpath, prefix)
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            relative = name if relative_dir == "." else f"{relative_dir}/{name}"
            if relative in _LEFT_OUT:
                if name in dirnames:
                    dirnames.remove(name)
                continue
            entries.append((relative, os.lstat(os.path.join(dirpath, name))))
    return entries


def _is_regular(info: os.stat_result) -> bool:
    import stat

    return stat.S_ISREG(info.st_mode)


def _write(partial: Path, prefix: Path, entries: list[tuple[str, os.stat_result]], header: dict) -> int:
    """Write the archive; return how many files name `prefix`."""
    import zstandard

    needle = str(prefix).encode()
    digests: dict[str, str] = {}
    naming: dict[str, str] = {}
    # (threads: the compression runs beside this thread's reading, hashing and scanning)
    compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, threads=-1, write_checksum=True)
    with open(partial, "wb") as raw, compressor.stream_writer(raw, closefd=False) as compressed, \
            tarfile.TarFile(fileobj=cast("IO[bytes]", compressed), mode="w", copybufsize=_BLOCK,
                            format=tarfile.GNU_FORMAT) as archive:
        _add_bytes(archive, HEADER, json.dumps(header, indent=1, sort_keys=True).encode())
        first_of_inode: dict[tuple[int, int], str] = {}
        root = str(prefix)
        for relative, info_stat in entries:
            full = os.path.join(root, relative)  # (a str: a Path per file costs more than the header)
            info = _tar_info(relative, info_stat, full, first_of_inode)
            if info.isreg():
                with open(full, "rb") as handle:
                    reading = _Reading(handle, info.mode, needle)
                    archive.addfile(info, reading)
                digests[relative] = reading.digest.hexdigest()
                if len(digests) == 1:
                    faults.checkpoint("env.packing")  # (part of it written: what a Ctrl-C leaves)
                if reading.found:
                    naming[relative] = "binary" if reading.binary else "text"
            else:
                archive.addfile(info)
                if info.islnk():  # a hard link to a file packed before it
                    digests[relative] = digests[info.linkname]
        _add_bytes(archive, TRAILER, json.dumps({"digests": digests, "naming_prefix": naming}, sort_keys=True).encode())
    return len(naming)


def _tar_info(relative: str, info: os.stat_result, full: str, first_of_inode: dict[tuple[int, int], str]) -> tarfile.TarInfo:
    """The member for one entry, from the lstat taken already (as `TarFile.gettarinfo` makes it,
    without its look-ups of owner names: owners are not packed)."""
    import stat

    member = tarfile.TarInfo(relative)
    member.mode = stat.S_IMODE(info.st_mode)
    member.mtime = int(info.st_mtime)  # (a fractional one costs each member a PAX header)
    if stat.S_ISREG(info.st_mode):
        inode = (info.st_ino, info.st_dev)
        if info.st_nlink > 1 and inode in first_of_inode:
            member.type, member.linkname = tarfile.LNKTYPE, first_of_inode[inode]
        else:
            first_of_inode.setdefault(inode, relative)
            member.size = info.st_size
    elif stat.S_ISDIR(info.st_mode):
        member.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(info.st_mode):
        member.type, member.linkname = tarfile.SYMTYPE, os.readlink(full)
    else:
        raise UsageError(f"{full} is neither a file, a directory nor a link: an environment holds none such",
                         hint="remove it, or build the environment again")
    return member


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    import io
    import time

    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


class _Reading:
    """A file as the archive reads it: hashed on the way (as `filetree.file_digest` hashes it),
    and searched for the environment's path (and for a NUL byte: binary)."""

    def __init__(self, handle: IO[bytes], mode: int, needle: bytes):
        self._handle = handle
        self._needle = needle
        self._tail = b""
        self.digest = hashlib.sha256(mode_material(mode))
        self.found = False
        self.binary = False

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.digest.update(data)
        if not self.binary and b"\0" in data:
            self.binary = True
        if not self.found and data:
            # (the block itself, then only its seam with the one before: no copy of the block)
            edge = len(self._needle) - 1
            self.found = self._needle in data or self._needle in self._tail + data[:edge]
            self._tail = (self._tail + data)[-edge:] if len(data) < edge else data[-edge:]
        return data


# -- unpack -------------------------------------------------------------------------------------
def unpack(archive_path: Path, store: Store | None = None, progress: Callable[[str], None] | None = None,
           expected: str | None = None) -> Unpacked:
    """Put the packed environment into `store` (by default this machine's), unless it holds it
    already; checked against its key and its files' digests, relocated to its new path.
    `expected`: the environment (`<manager>-<key>`) the archive must hold, else it is refused
    before anything is written."""
    import zstandard

    from runner.progress import step

    store = store or Store()
    archive_path = Path(archive_path)
    with _opened(archive_path) as archive:
        header = _header(archive, archive_path)
        kind, key = header["kind"], header["key"]
        name = f"{kind}-{key}"
        if expected is not None and name != expected:
            raise UsageError(f"{archive_path.name} holds {name[:len(kind) + 13]}, not {expected[:len(kind) + 13]}",
                             hint="the environment planned here differs from the one packed (another Python, "
                                  "platform or lock)")
        if store.is_complete(store.path_of(kind, key)):
            found = store.lookup(kind, key)
            if found is not None:
                found[1].release()
                return Unpacked(name, found[0], already=True)

        def extract(tmp: Path, final: Path) -> None:
            with step(progress, f"unpacking {name} ({header['files']} files)"):
                try:
                    _extract(archive, header, tmp, final)
                except (tarfile.TarError, EOFError, zstandard.ZstdError) as exc:
                    raise UsageError(f"{archive_path} is damaged ({exc})", hint=_DAMAGED_HINT) from None
                except OSError as exc:
                    if exc.errno is not None:
                        raise  # (this machine's trouble, a full disk: not the archive's)
                    # (the stream asked to go back: a member's header that points before itself)
                    raise UsageError(f"{archive_path} is damaged ({exc})", hint=_DAMAGED_HINT) from None

        meta = {**header["meta"], "unpacked_from": archive_path.name, "packed_at": header["prefix"]}
        for recorded_by_store in ("kind", "key", "created", "size"):
            meta.pop(recorded_by_store, None)
        path, lease = store.ensure(kind, key, extract, meta, event="unpacked")
        lease.release()
        return Unpacked(name, path, already=False)


@contextmanager
def _opened(archive_path: Path) -> Iterator[tarfile.TarFile]:
    """The archive as a stream of members, inflated as it is read."""
    import zstandard

    try:
        raw = open(archive_path, "rb")
    except FileNotFoundError:
        raise UsageError(f"{archive_path}: no such file", hint="give the archive `mlproject env pack` wrote") from None
    with raw, zstandard.ZstdDecompressor().stream_reader(raw, read_size=_BLOCK, closefd=False) as inflated:
        try:
            # (a plain TarFile: the stream only reads forwards, as the members come)
            archive = tarfile.TarFile(fileobj=cast("IO[bytes]", inflated), mode="r", copybufsize=_BLOCK)
        except (tarfile.TarError, EOFError, zstandard.ZstdError) as exc:
            raise UsageError(f"{archive_path} is not a packed environment ({exc})",
                             hint="make one with `mlproject env pack KEY|PROJECT`") from None
        with archive:
            yield archive


def _header(archive: tarfile.TarFile, archive_path: Path) -> dict:
    """The archive's header, checked: a manager this runner has, and a key that is the hash of
    the description it carries."""
    import zstandard

    from runner.envs import EnvRecipe
    from runner.seams import ENV_MANAGERS

    not_packed = UsageError(f"{archive_path} is not a packed environment",
                            hint="make one with `mlproject env pack KEY|PROJECT`")
    try:
        first = archive.next()
        if first is None or first.name != HEADER or not first.isreg():
            raise not_packed
        handle = archive.extractfile(first)
        header = json.loads(handle.read()) if handle is not None else None
    except (tarfile.TarError, OSError, EOFError, ValueError, zstandard.ZstdError):
        raise not_packed from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise UsageError(f"{archive_path} was packed in a format this runner does not read "
                         f"({header.get('format') if isinstance(header, dict) else '?'}; this one reads {FORMAT})",
                         hint="unpack it with the runner version that packed it")
    kind, key, meta = header.get("kind"), header.get("key"), header.get("meta")
    description = meta.get("description") if isinstance(meta, dict) else None
    if kind not in ENV_MANAGERS or kind == "docker" or not isinstance(description, dict) \
            or not isinstance(key, str) or EnvRecipe(kind, description, "", {}).key != key:
        raise UsageError(f"{archive_path}: its header does not match its key {str(key)[:12]}",
                         hint=_DAMAGED_HINT)
    python = description.get("python")
    interpreter, version = (python.get("path"), python.get("version", "")) if isinstance(python, dict) else (None, "")
    if isinstance(interpreter, str) and not os.path.exists(interpreter):
        raise UsageError(f"{kind}-{key[:12]} needs Python {version} at {interpreter}, "
                         "which this machine does not have",
                         hint="a virtualenv runs on its interpreter: install that Python at that path here, "
                              "or build the environment here (`mlproject env build PROJECT`)")
    return header


def _extract(archive: tarfile.TarFile, header: dict, tmp: Path, final: Path) -> None:
    """Extract the rest of the archive into `tmp` (which the store then renames to `final`),
    every file hashed as it is written and checked against its digest, and rewrite the old path
    to `final`."""
    os.mkdir(tmp)
    made = _Made()
    trailer = None
    for member in archive:  # (from the first member again: the header, read already)
        if member.name == HEADER:
            continue
        if member.name == TRAILER:
            handle = archive.extractfile(member)
            trailer = json.loads(handle.read()) if handle is not None else None
            break
        made.add(archive, member, tmp)
        if len(made.digests) == 1 and member.isreg():
            faults.checkpoint("env.unpacking")  # (part of it written: what a Ctrl-C leaves)
    if not isinstance(trailer, dict) or not isinstance(trailer.get("digests"), dict):
        raise UsageError("the archive is damaged: it ends before its trailer", hint=_DAMAGED_HINT)
    digests: dict = trailer["digests"]
    if set(digests) != set(made.digests):
        missing = sorted(set(digests) - set(made.digests))[:3]
        raise UsageError(f"the archive is damaged: it lacks files it lists ({', '.join(missing) or 'and holds others'})", hint=_DAMAGED_HINT)
    for relative, digest in made.digests.items():
        if digests[relative] != digest:
            raise UsageError(f"the archive is damaged: its {relative} differs from the file packed", hint=_DAMAGED_HINT)
    old, new = header["prefix"], str(final)
    for relative, kind in sorted(trailer.get("naming_prefix", {}).items()):
        if relative in made.digests:
            _rewrite(tmp / relative, old.encode(), new.encode(), binary=kind == "binary")
    for relative, target in made.links:
        if target == old or target.startswith(old + "/"):
            os.unlink(tmp / relative)
            os.symlink(new + target[len(old):], tmp / relative)
    for path, mode in made.directory_modes:  # (last: a read-only directory still took its files)
        os.chmod(path, mode)


class _Made:
    """What an extraction has made so far, and the rule for what it may make next: only what an
    environment holds (files, directories, symlinks, hard links to its own files), each once,
    each inside a directory made here (so nothing is ever written through a symlink), with no
    setuid, setgid or group/other write bits."""

    def __init__(self) -> None:
        self.directories = {""}
        self.names: set[str] = set()
        self.digests: dict[str, str] = {}  # regular files (and hard links) -> digest
        self.links: list[tuple[str, str]] = []  # symlinks: (name, target)
        self.directory_modes: list[tuple[str, int]] = []

    def add(self, archive: tarfile.TarFile, member: tarfile.TarInfo, root: Path) -> None:
        name = member.name
        parts = PurePosixPath(name).parts
        parent = "/".join(parts[:-1])
        if (not parts or "/".join(parts) != name or ".." in parts or parts[0] == PACK_DIR
                or parent not in self.directories or name in self.names
                or not (member.isreg() or member.isdir() or member.issym()
                        or (member.islnk() and member.linkname in self.digests))):
            raise UsageError(f"the archive holds {name!r}, which is not part of an environment (or leaves it)",
                             hint="unpack only archives that `mlproject env pack` wrote")
        self.names.add(name)
        path = os.path.join(root, name)
        mode = member.mode & 0o755
        if member.isdir():
            os.mkdir(path, 0o700)
            self.directories.add(name)
            self.directory_modes.append((path, mode))
        elif member.issym():
            os.symlink(member.linkname, path)
            self.links.append((name, member.linkname))
        elif member.islnk():
            os.link(os.path.join(root, member.linkname), path, follow_symlinks=False)
            self.digests[name] = self.digests[member.linkname]
        else:
            source = archive.extractfile(member)
            assert source is not None
            digest = hashlib.sha256(mode_material(mode))
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb") as out:
                for block in iter(lambda: source.read(_BLOCK), b""):
                    digest.update(block)
                    out.write(block)
                os.fchmod(out.fileno(), mode)
                os.utime(out.fileno(), (member.mtime, member.mtime))
            self.digests[name] = digest.hexdigest()


def _rewrite(path: Path, old: bytes, new: bytes, binary: bool) -> None:
    data = path.read_bytes()
    rewritten = _padded(data, old, new, path) if binary else relocated_text(data, old, new)
    if rewritten == data:
        return
    mode = os.lstat(path).st_mode
    os.chmod(path, mode | 0o200)  # (a read-only file of the environment is still rewritten)
    with open(path, "r+b") as handle:
        handle.write(rewritten)
        handle.truncate()
    os.chmod(path, mode)


def _padded(data: bytes, old: bytes, new: bytes, path: Path) -> bytes:
    """`old` replaced by `new` in each NUL-terminated string of a binary, the string padded with
    NULs to its old length: every offset in the file stays where it was."""
    if len(new) > len(old):
        raise UsageError(f"{path.name} names the environment's path inside a binary, and the path here "
                         f"({len(new)} characters) is longer than where it was packed ({len(old)})",
                         hint=f"unpack into an MLPROJECT_HOME whose environments' paths are at most {len(old)} characters")
    spare = len(old) - len(new)

    def one_string(match: re.Match) -> bytes:
        text = match.group(0)
        return text.replace(old, new) + b"\0" * (spare * text.count(old))

    result = re.sub(re.escape(old) + rb"[^\0]*\0", one_string, data)
    assert len(result) == len(data), path
    return result
