"""A project on this machine: where its git repository is, and what state it is in.

Only read: the user's working copy, HEAD, branches and remotes are never changed.
"""
from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WorkingCopy:
    commit: str | None
    branch: str | None
    dirty: bool | None
    origin_url: str | None


STAGED_MARKER = ".mlproject-staged"  # written last into a snapshot staged for a cluster's nodes

# What MLflow's default local stores write where a run is started (`mlflow run .` in a working
# copy leaves them there too): untracked, they do not make the project's working copy dirty.
# (Also what staging leaves out of a project sent to a cluster's nodes.)
TRACKING_STORE_FILES = {"mlflow.db", "mlflow.db-journal", "mlflow.db-wal", "mlflow.db-shm"}
TRACKING_STORE_DIRS = {"mlruns", "mlartifacts"}


def is_tracking_store(relative: str) -> bool:
    """An untracked path (as git names it: a directory ends in /) that a local MLflow store wrote,
    or a file inside one."""
    return any(part in TRACKING_STORE_FILES or part in TRACKING_STORE_DIRS for part in relative.rstrip("/").split("/"))


def repository_top(path: Path) -> Path | None:
    """The top of the git working copy holding `path`, found without running git."""
    for candidate in (path, *path.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def is_bare_repository(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir() and not (path / ".git").exists()


def inspect(top: Path) -> WorkingCopy | None:
    """Commit, branch, uncommitted changes and origin of a working copy (None if git cannot tell).

    Both questions go to git at once: this is on the warm path of every local run.
    """
    from runner.sources.git import git_env

    env = git_env()
    try:
        status = subprocess.Popen(
            ["git", "--no-optional-locks", "status", "--porcelain=v2", "--branch", "-z"], cwd=top, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        origin = subprocess.Popen(
            ["git", "config", "--get", "remote.origin.url"], cwd=top, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
    except OSError:
        return None  # no git on this machine: the run goes on without provenance
    status_out, _ = status.communicate()
    origin_out, _ = origin.communicate()
    if status.returncode != 0:
        return None  # e.g. a repository git refuses to read (owned by another user)
    commit = branch = None
    dirty = False
    for entry in status_out.decode(errors="replace").split("\0"):
        if entry.startswith("# branch.oid "):
            value = entry[len("# branch.oid "):]
            commit = value if value != "(initial)" else None
        elif entry.startswith("# branch.head "):
            value = entry[len("# branch.head "):]
            branch = value if value != "(detached)" else None
        elif entry.startswith("? ") and is_tracking_store(entry[2:]):
            continue  # a local MLflow store the runs wrote here: not a change to the project
        elif entry and not entry.startswith("#"):
            dirty = True
    url = origin_out.decode(errors="replace").strip() if origin.returncode == 0 else ""
    return WorkingCopy(commit, branch, dirty, url or None)


# A project's files, as a node or a rerun sees them. Version control data, bytecode, local MLflow stores and virtual environments: large,
# changing with every run, and not what the command reads as its code.
_SKIPPED_DIRS = {".git", ".hg", ".svn", "__pycache__", ".venv", ".mlproject", *TRACKING_STORE_DIRS}
_SKIPPED_FILES = {STAGED_MARKER, *TRACKING_STORE_FILES}


def project_files(directory: Path) -> list[tuple[str, os.stat_result]]:
    """(relative path, lstat) of a project's files as a node gets them (staging) and a rerun
    checks them (provenance), sorted: the order a hash reads them in."""
    found: list[tuple[str, os.stat_result]] = []
    for top, dirs, names in os.walk(directory):
        linked = [d for d in dirs if os.path.islink(os.path.join(top, d))]  # copied as links, not walked
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and d not in linked)
        for name in [*names, *linked]:
            if name in _SKIPPED_FILES:
                continue
            path = os.path.join(top, name)
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode):
                found.append((os.path.relpath(path, directory), info))
    return sorted(found, key=lambda item: item[0])
