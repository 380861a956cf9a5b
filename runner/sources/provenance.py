"""What a run needs kept of its source to be re-run: the uncommitted changes of a dirty
working copy (`source/diff.patch`, tracked files, against the recorded commit) and the
names of its untracked files (`source/untracked.txt`); for a project that is not in git,
the digest of each of its files (`source/files.json`) and, when they are small, the files
themselves (`source/project.tar.gz`). Kept in the run's directory and logged as the run's
artifacts; read back by `mlproject rerun`.

Only a dirty working copy costs anything (one `git diff`); a clean one or a git commit
from the cache is fully named by its commit. A project outside git is read once per state
of its files (the digests are remembered with their stat; its archive is made once per
digest and linked into each run's directory)."""
from __future__ import annotations

from pathlib import Path

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from runner.sources import ProjectDir

DIFF_CAP_BYTES = 5 * 1024 * 1024  # a bigger diff is not kept: a note says so, and a rerun says what is missing
SOURCE_DIR = "source"
DIFF_NAME = "diff.patch"
UNTRACKED_NAME = "untracked.txt"
OVER_CAP_NAME = "diff-not-kept.txt"
INPUTS_NAME = "inputs.json"  # the files `path` parameters named, as they were
HASH_CAP_BYTES = 256 * 1024 * 1024  # a bigger input file is fingerprinted by its size and mtime only
FILES_NAME = "files.json"  # a project outside git: {"digest": ..., "files": {relative path: sha256}}
ARCHIVE_NAME = "project.tar.gz"  # ... and its files, when they are small
ARCHIVE_CAP_BYTES = 10 * 1024 * 1024  # bigger projects keep their digests only


def capture(work_tree: Path, run_dir: Path) -> None:
    """Write the working copy's changes against HEAD into `run_dir/source/`."""
    from runner.sources.git import git_env
    from runner.subprocesses import capture as run

    out = run_dir / SOURCE_DIR
    out.mkdir(parents=True, exist_ok=True)
    code, diff, _ = run(["git", "--no-optional-locks", "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff"],
                        cwd=work_tree, env=git_env(), text=False)
    if code == 0 and diff:
        if len(diff) <= DIFF_CAP_BYTES:
            (out / DIFF_NAME).write_bytes(diff)
        else:
            (out / OVER_CAP_NAME).write_text(
                f"The diff of the working copy against its commit was {len(diff)} bytes, over the "
                f"{DIFF_CAP_BYTES}-byte cap: it was not kept, and a rerun cannot restore these changes.\n")
    code, listed, _ = run(["git", "--no-optional-locks", "ls-files", "--others", "--exclude-standard", "-z"],
                          cwd=work_tree, env=git_env(), text=False)
    from runner.sources.local import is_tracking_store

    names = [name for name in listed.decode(errors="replace").split("\0")
             if name and not is_tracking_store(name)] if code == 0 else []
    if names:
        (out / UNTRACKED_NAME).write_text("".join(name + "\n" for name in names))


def artifacts(run_dir: Path) -> list[tuple[Path, str]]:
    """The kept files, as (path, artifact directory) for the run's artifacts."""
    out = run_dir / SOURCE_DIR
    return [(out / name, SOURCE_DIR) for name in KEPT_NAMES if (out / name).is_file()]


KEPT_NAMES = (DIFF_NAME, UNTRACKED_NAME, OVER_CAP_NAME, INPUTS_NAME, FILES_NAME, ARCHIVE_NAME)


def manifest(directory: Path, files: list | None = None) -> dict[str, str]:
    """{relative path: sha256} of a project's files (`files`, as staging.project_files lists
    them: those a cluster's nodes are sent), read once per state of the files."""
    from runner.sources.local import project_files
    from runner.filetree import remembered_file_digests

    return remembered_file_digests(directory, project_files(directory) if files is None else files, "manifest")


def _manifest_digest(files: dict[str, str]) -> str:
    """The one name of a manifest's content: its archive's and its unpacked copy's."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def keep_files(directory: Path, run_dir: Path) -> None:
    """What a project outside git held when the run was submitted: each file's digest, and the
    files themselves (one archive, made once per content) when they are small."""
    import json
    import os

    from runner.sources.local import project_files

    files = project_files(directory)
    digests = manifest(directory, files)
    digest = _manifest_digest(digests)
    out = run_dir / SOURCE_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / FILES_NAME).write_text(json.dumps({"digest": digest, "files": digests}, indent=1, sort_keys=True) + "\n")
    if sum(info.st_size for _, info in files) > ARCHIVE_CAP_BYTES:
        return
    archive = _projects_cache() / f"{digest}.tar.gz"
    if not archive.is_file():
        import tarfile

        # Unique to this writer: a sweep's trials keep the same files at once, from threads of
        # one process. Whole or absent: a reader never sees half of one.
        partial = archive.with_name(f".{archive.name}.{os.getpid()}.{os.urandom(6).hex()}")
        try:
            import gzip

            # The same files give the same bytes, whoever writes them (no name, no time in gzip's header).
            with open(partial, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed, \
                    tarfile.open(fileobj=packed, mode="w") as tar:
                for relative, _ in files:
                    tar.add(directory / relative, arcname=relative, recursive=False)
            os.replace(partial, archive)
        finally:
            partial.unlink(missing_ok=True)
    try:
        os.link(archive, out / ARCHIVE_NAME)
    except FileExistsError:
        pass
    except OSError:  # another file system: a copy
        (out / ARCHIVE_NAME).write_bytes(archive.read_bytes())


def differing(kept: dict[str, str], now: dict[str, str]) -> list[str]:
    """The files that differ between two manifests (changed, added or removed), sorted."""
    return sorted(name for name in kept.keys() | now.keys() if kept.get(name) != now.get(name))


def unpack(archive: Path, kept: dict[str, str]) -> Path:
    """The project's kept files, unpacked once per content into the cache; checked against
    their recorded digests."""
    import os
    import shutil
    import tarfile
    import tempfile

    from runner.errors import ProjectError

    digest = _manifest_digest(kept)
    root = _projects_cache()
    target = root / digest
    if target.is_dir():
        return target
    scratch = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=root))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(scratch, filter="data")  # (no path leaves the directory, no device files)
        found = manifest(scratch)
        if found != kept:
            raise ProjectError(f"the run's kept project files do not match their recorded digests "
                               f"({', '.join(differing(kept, found)[:5])})", hint="the artifact is damaged")
        try:
            os.replace(scratch, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(scratch, ignore_errors=True)  # (another rerun unpacked the same files first)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return target


def _projects_cache() -> Path:
    """Kept projects: archives by the digest of their files, and their unpacked copies."""
    from runner import home

    path = home.subdir("cache") / "projects"
    path.mkdir(exist_ok=True)
    return path


def keep_inputs(paths: dict[str, str], run_dir: Path) -> None:
    """What the local files named by `path` parameters ({name: absolute path}) held, so that a
    rerun can tell whether they changed. Directories and missing files are left out."""
    import json

    found = {name: fingerprint(path) for name, path in paths.items()}
    kept = {name: value for name, value in found.items() if value is not None}
    if kept:
        out = run_dir / SOURCE_DIR
        out.mkdir(parents=True, exist_ok=True)
        (out / INPUTS_NAME).write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")


def fingerprint(path: str) -> dict | None:
    """{path, size, sha256} of a file (or {path, size, mtime_ns} over the hash cap); None otherwise."""
    import hashlib
    import os

    try:
        status = os.stat(path)
    except OSError:
        return None
    import stat

    if not stat.S_ISREG(status.st_mode):
        return None
    if status.st_size > HASH_CAP_BYTES:
        return {"path": path, "size": status.st_size, "mtime_ns": status.st_mtime_ns}
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"path": path, "size": status.st_size, "sha256": digest.hexdigest()}


def keep_patch(patch: Path, run_dir: Path) -> None:
    out = run_dir / SOURCE_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / DIFF_NAME).write_bytes(patch.read_bytes())


def patched(source: ProjectDir, patch: Path) -> ProjectDir:
    """The cached checkout of `source` with `patch` applied: the working copy a dirty run ran
    in. Made once per (commit, patch) in the staging directory and shared like a checkout
    (each run works in its own copy of it); a patch that does not apply is refused."""
    import hashlib
    import os
    import shutil

    from runner import home
    from runner.errors import ProjectError
    from runner.sources import STAGED_MARKER, mark_staged_use
    from runner.subprocesses import capture as run

    if source.checkout is None or source.commit is None:
        raise ProjectError("recorded changes can only be applied to a git commit", hint="the run recorded no commit")
    data = patch.read_bytes()
    digest = hashlib.sha256(source.commit.encode() + b"\0" + data).hexdigest()[:24]
    root = home.subdir("staging") / f"patched-{digest}"
    if not (root / STAGED_MARKER).exists():
        tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        copied = source.private_copy(tmp)  # (the whole checkout; `copied` is the project inside it)
        del copied
        code, output, _ = run(["git", "apply", "--binary", "--whitespace=nowarn", str(patch)], cwd=tmp)
        if code != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ProjectError(f"the recorded changes do not apply to commit {source.commit[:12]}: {output.strip()}",
                               hint="the recorded diff.patch may have been edited")
        (tmp / STAGED_MARKER).write_text(f"{source.commit}\n")
        try:
            os.rename(tmp, root)
        except OSError:  # another rerun made it first: the same contents
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        mark_staged_use(root)
    from dataclasses import replace

    return replace(source, path=root / source.path.relative_to(source.checkout), checkout=root, dirty=True)
