"""A content-addressed snapshot of a local project directory, for nodes that cannot see the
user's working copy as it is now (they run later; the user goes on editing).

`snapshot(directory, root)` copies the project's files into `root/<hash>/`: the same
contents give the same directory, built once (in a temporary directory, then renamed)
and shared by every job that runs them. What a run writes next to its project and
what MLflow keeps in a local store are not project code and are left out."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from runner.errors import ProjectError
from runner.sources import STAGED_MARKER as _COMPLETE  # written last: without it, not a snapshot yet
from runner.sources import mark_staged_use
from runner.sources.local import project_files

def content_key(directory: Path, files: list[tuple[str, os.stat_result]]) -> str:
    """The digest of the files' bytes, read once per state of the files (see filetree): resubmitting
    an unchanged project, every trial of a sweep, does not read its data files again."""
    from runner.filetree import remembered_digest

    return remembered_digest(directory, files, "staged")


def directory_key(directory: Path) -> str:
    """The content key of what `snapshot` stages from `directory`."""
    return content_key(directory, project_files(directory))


def snapshot(directory: Path, root: Path, progress=None) -> Path:
    """The staged copy of `directory`'s current contents (made now unless one exists)."""
    directory = directory.resolve()
    try:
        files = project_files(directory)
        key = content_key(directory, files)
    except OSError as exc:
        raise ProjectError(f"cannot read the project to stage it: {exc}", hint="check the project's file permissions") from None
    final = root / key[:32]
    if (final / _COMPLETE).exists():
        mark_staged_use(final)
        return final
    root.mkdir(parents=True, exist_ok=True)
    import tempfile

    from runner.progress import step

    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        with step(progress, f"staging the project for the nodes ({len(files)} files)"):
            _copy(directory, tmp, files)
        (tmp / _COMPLETE).touch()
        try:
            os.rename(tmp, final)
        except OSError:  # another submission staged the same contents first
            if not (final / _COMPLETE).exists():
                raise
    except OSError as exc:
        raise ProjectError(f"cannot stage the project in {root}: {exc}",
                           hint="set staging_dir in the backend config to a directory the nodes can read") from None
    finally:
        if tmp.exists():
            _remove(tmp)
    return final


ENVIRONMENTS = "environments"  # packed environments the jobs bring to their nodes (see backends.shipping)
JOBS = "jobs"  # the requests and output of jobs whose nodes do not share MLPROJECT_HOME (backends.slurm)
# In a run's directory, when its nodes do not share MLPROJECT_HOME: the path of the job's output,
# in the staging directory (see slurm.pull_output, slurm.shares_ledger).
STAGED_OUTPUT = "staged-output"


# -- gc -----------------------------------------------------------------------------------
# A submission chooses its snapshot before the job file that names it is written: whatever
# was used this recently is kept, even by `--older-than 0`.
RECENT = 600.0


@dataclass
class StagingGcResult:
    removed: int
    in_use: int  # named by a job still queued or running
    kept: int  # used within the period
    leftovers: int  # interrupted stagings
    freed: int  # bytes, as du counts them
    environments_removed: int = 0  # packed environments shipped to nodes (see ENVIRONMENTS)
    environments_kept: int = 0
    jobs_removed: int = 0  # the files of ended jobs whose nodes did not share MLPROJECT_HOME


def gc(root: Path, older_than: float, dry_run: bool = False) -> StagingGcResult:
    """Remove from `root` the staged trees last used more than `older_than` seconds ago, except
    those a queued or running job still needs, and what interrupted stagings left."""
    import time

    from runner.backends import reconcile
    from runner.store import disk_usage
    from runner.tracking.ledger import Ledger

    ledger = Ledger()
    try:
        reconcile(ledger)  # first: a job that has ended no longer holds its snapshot
        in_use = _named_by_unfinished_jobs(ledger)
        jobs_in_use = _job_files_of_unfinished_jobs(ledger)
    finally:
        ledger.close()
    cutoff = time.time() - max(older_than, RECENT)
    doomed: list[Path] = []
    result = StagingGcResult(0, 0, 0, 0, 0)
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        if entry.name.startswith((".tmp-", ".patched-", ".runner-")) and entry.is_dir():
            if entry.stat().st_mtime <= cutoff:
                doomed.append(entry)
                result.leftovers += 1
            continue
        marker = entry / _COMPLETE
        if not marker.exists():  # not a staged tree (node checks, the runner's own module for Ray)
            continue
        if entry.resolve() in in_use:
            result.in_use += 1
        elif marker.stat().st_mtime > cutoff:
            result.kept += 1
        else:
            doomed.append(entry)
            result.removed += 1
    for entry in sorted((root / ENVIRONMENTS).iterdir()) if (root / ENVIRONMENTS).is_dir() else []:
        # Packed environments shipped to nodes (a directory per environment; its archive's mtime
        # is its last use): uploaded to Ray at submission, not read again.
        archives = list(entry.glob("*/*.tar.zst")) if entry.is_dir() else []
        if not archives:
            if entry.is_dir() and entry.stat().st_mtime <= cutoff:  # (a packing that was interrupted)
                doomed.append(entry)
                result.leftovers += 1
        elif max(archive.stat().st_mtime for archive in archives) > cutoff:
            result.environments_kept += 1
        else:
            doomed.append(entry)
            result.environments_removed += 1
    for entry in sorted((root / JOBS).iterdir()) if (root / JOBS).is_dir() else []:
        # A job's request and output (an array's: its runs'), read by its node and copied into
        # the run's log here as it went: of no use once the job is over.
        if entry.resolve() not in jobs_in_use and entry.stat().st_mtime <= cutoff:
            doomed.append(entry)
            result.jobs_removed += 1
    result.freed = sum(disk_usage(doomed))
    if not dry_run:
        for entry in doomed:
            trash = entry.parent / f".tmp-trash-{entry.name}-{os.urandom(3).hex()}"
            try:
                os.rename(entry, trash)  # gone at once for any job that looks: a snapshot is whole or absent
            except OSError:
                continue
            _remove(trash)
    return result


def _named_by_unfinished_jobs(ledger) -> set[Path]:
    """The staged trees that queued or running Slurm jobs of this ledger will read (their
    job files name them). Ray's are uploaded at submission and not read again."""
    import json

    from runner import home

    named: set[Path] = set()
    for record in ledger.unfinished_jobs(("slurm",)):
        try:
            request = json.loads((home.subdir("runs") / record.id / "job.json").read_text())
        except (OSError, ValueError):
            continue
        if request.get("version") is None and request.get("uri"):
            named.add(Path(request["uri"]).resolve())
    return named


def _job_files_of_unfinished_jobs(ledger) -> set[Path]:
    """The job directories (staging_dir/jobs/...) that queued or running Slurm jobs write to."""
    from runner import home

    named: set[Path] = set()
    for record in ledger.unfinished_jobs(("slurm",)):
        try:
            named.add(Path((home.subdir("runs") / record.id / STAGED_OUTPUT).read_text()).parent.resolve())
        except (OSError, ValueError):
            continue
    return named


def _copy(directory: Path, tmp: Path, files: list[tuple[str, os.stat_result]]) -> None:
    for relative, info in files:
        source, target = directory / relative, tmp / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(source), target)
        else:
            with open(source, "rb") as reading, open(target, "wb") as writing:
                for block in iter(lambda: reading.read(1 << 20), b""):
                    writing.write(block)
            os.chmod(target, stat.S_IMODE(info.st_mode))


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
