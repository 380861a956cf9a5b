"""Fetch a project: a local directory now, git repositories with their issue.

`fetch(uri, version) -> ProjectDir` gives the local directory to run in and
the provenance to record.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from runner.errors import NotAvailableError, ProjectError
from runner.project.paths import resolve_inside

_GIT_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)", re.IGNORECASE)


@dataclass(frozen=True)
class ProjectDir:
    path: Path  # the directory holding MLproject (subdirectory applied)
    uri: str  # as the user gave it, credentials removed
    commit: str | None = None
    repo_url: str | None = None
    branch: str | None = None
    dirty: bool | None = None


def split_subdirectory(uri: str) -> tuple[str, str]:
    base, _, subdir = uri.partition("#")
    return base, subdir


def fetch(uri: str, version: str | None = None) -> ProjectDir:
    base, subdir = split_subdirectory(uri)
    if _GIT_URL.match(base):
        raise NotAvailableError(
            f"git projects ({redact_url(base)}) are not available in this version",
            hint="clone the repository yourself and run the local directory",
        )
    root = Path(os.path.expanduser(base or ".")).absolute()
    if not root.exists():
        raise ProjectError(f"project {base!r} does not exist", hint="check the path (relative to the current directory)")
    if not root.is_dir():
        raise ProjectError(f"project {base!r} is not a directory", hint="give the directory that holds MLproject")
    if version is not None:
        raise NotAvailableError(
            "--version for a local directory needs git support, not available in this version",
            hint="check out the version yourself, or leave out --version",
        )
    path = root
    if subdir:
        try:
            path = resolve_inside(root, subdir, "subdirectory")
        except ValueError as exc:
            raise ProjectError(str(exc), hint="#subdir must name a directory inside the project") from None
        if not path.is_dir():
            raise ProjectError(f"subdirectory {subdir!r} does not exist in {base or '.'}")
    return ProjectDir(path, uri)


def redact_url(url: str) -> str:
    """The URL with its credentials masked.

    Over http(s) any user part may be a token, so all of it goes; elsewhere
    (ssh://git@host) the user name stays and only a password is masked.
    """
    match = re.match(r"^([a-z][a-z0-9+.-]*://)([^/@]*)@(.*)$", url, re.IGNORECASE | re.DOTALL)
    if not match:
        return url
    scheme, userinfo, rest = match.groups()
    if scheme.lower().startswith("http"):
        return f"{scheme}***@{rest}"
    user, sep, _ = userinfo.partition(":")
    return f"{scheme}{user}{':***' if sep else ''}@{rest}"
