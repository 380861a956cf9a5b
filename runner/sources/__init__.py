"""Fetch a project: a local directory, or a git repository through the cache.

`fetch(uri, version) -> ProjectDir` gives the local directory to run in and
the provenance to record:

- a git URL (https, http, ssh, scp-like, git, file) is fetched into the cache
  (`sources.cache`) and run from a read-only checkout of the commit;
- a local directory runs in place, with its commit, branch and uncommitted
  changes recorded when it is in a git working copy;
- a local repository with `--version` is checked out into the cache from the
  repository, which is only read;
- a local bare repository is fetched from like a URL.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from typing import TYPE_CHECKING

from runner.errors import ProjectError, UsageError
from runner.project.paths import project_path
from runner.sources.local import STAGED_MARKER  # (re-exported: where staged snapshots are recognised)

if TYPE_CHECKING:
    from typing import Callable

    from runner.sources.urls import GitRemote
    from runner.store import Lease


def mark_staged_use(tree: Path) -> None:
    """A staged tree was just chosen for a run: `cache gc` dates its last use by its marker."""
    try:
        os.utime(tree / STAGED_MARKER)
    except OSError:  # a staging directory this host may only read
        pass


@dataclass(frozen=True)
class ProjectDir:
    path: Path  # the directory holding MLproject (subdirectory applied)
    uri: str  # as the user gave it, credentials removed
    commit: str | None = None
    repo_url: str | None = None
    branch: str | None = None
    dirty: bool | None = None
    # Held while the project is in use: a cached checkout is not removed under a run.
    lease: Lease | None = field(default=None, compare=False, repr=False)
    work_tree: Path | None = None  # a local project inside a git working copy: its top
    # Whether --version (or the URL) named the branch: only then does MLflow tag it
    # mlflow.source.git.branch; a default or checked-out branch is ours to record.
    branch_named: bool = False
    checkout: Path | None = None  # a cached commit's shared tree (the whole repository), read-only

    def private_copy(self, destination: Path) -> Path:
        """The project's directory in a copy of the cached checkout that only one run uses.

        Every run of a commit shares its checkout, whose read-only mode bits root ignores: a
        run that writes into its working directory would leave files for the next (MLflow
        clones afresh for every run). `cp --reflink=auto` shares the blocks where the file
        system can, and copies them where it cannot."""
        from runner.subprocesses import capture

        assert self.checkout is not None
        # Then writable, as a fresh clone is.
        for argv in (["cp", "-a", "--reflink=auto", str(self.checkout), str(destination)],
                     ["chmod", "-R", "u+w", str(destination)]):
            try:
                code, output, _ = capture(argv)
            except OSError as exc:
                code, output = 1, exc.strerror or str(exc)
            if code != 0:
                raise ProjectError(f"cannot copy the checkout of {self.commit} for this run: {output.strip()}",
                                   hint="check the free space of MLPROJECT_HOME")
        return destination / self.path.relative_to(self.checkout)

    @property
    def source_name(self) -> str:
        """`mlflow.source.name` as MLflow records it: a fetched repository's URL as typed (with its
        #subdir); for a local project in a git working copy `file://<work tree>#<subdir>` (no `#`
        at the top); else the absolute path."""
        if self.work_tree is None:
            return self.uri
        inside = self.path.relative_to(self.work_tree).as_posix()
        return f"file://{self.work_tree}" + ("" if inside == "." else f"#{inside}")

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()


def split_subdirectory(uri: str) -> tuple[str, str]:
    base, _, subdir = uri.partition("#")
    return base, subdir


def fetch(
    uri: str,
    version: str | None = None,
    cwd: Path | None = None,
    *,
    notify: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ProjectDir:
    """The project at `uri` (relative paths from `cwd`), at `version` if given."""
    base, subdir = split_subdirectory(uri)
    local = Path(cwd or Path.cwd()) / os.path.expanduser(base or ".")
    if not os.path.lexists(local):
        from runner.sources import urls

        if urls.is_git_url(base):
            parsed = urls.parse(base)
            if parsed.version is not None and version is not None and parsed.version != version:
                raise UsageError(
                    f"the URL names version {parsed.version!r} and --version names {version!r}",
                    hint="give the version once",
                )
            return _from_cache(
                parsed.remote, version or parsed.version, _join(parsed.subdir, subdir),
                _shown(parsed.remote.url, parsed, subdir), notify, progress,
            )
        raise ProjectError(f"project {base!r} does not exist", hint="check the path (relative to the current directory)")
    root = local.absolute()
    if not root.is_dir():
        raise ProjectError(f"project {base!r} is not a directory", hint="give the directory that holds MLproject")
    if not str(root).encode("utf-8", "surrogateescape").decode("utf-8", "replace") == str(root):
        # A directory name in another encoding (Python keeps such bytes as lone
        # surrogates): neither the ledger nor MLflow can record where the run came from.
        shown_path = os.fsencode(root).decode("utf-8", "backslashreplace")
        raise ProjectError(f"the project's path {shown_path} is not valid UTF-8",
                           hint="rename the directory (or a parent) to a UTF-8 name")
    from runner.sources import local as working_copy

    shown = str(root) + (f"#{subdir}" if subdir else "")
    if working_copy.is_bare_repository(root):
        from runner.sources import urls

        return _from_cache(urls.local_remote(str(root)), version, subdir, shown, notify, progress)
    top = working_copy.repository_top(root)
    if version is not None:
        if top is None:
            raise ProjectError(
                f"Setting a version is only supported for Git project URIs: {base or '.'} is not in a git repository",
                hint="leave out --version to run the directory as it is",
                python_hint="leave out version= to run the directory as it is",
            )
        from runner.sources import urls

        inside = root.relative_to(top).as_posix()
        return _from_cache(urls.local_remote(str(top)), version, _join("" if inside == "." else inside, subdir),
                           shown, notify, progress)
    path = _subdirectory(root, subdir, base or ".")
    state = working_copy.inspect(top) if top is not None else None
    if state is None:
        # A project staged for a cluster's nodes is shared like a cached checkout: each run
        # works in its own copy of it (see ProjectDir.private_copy).
        staged = root if subdir == "" and (root / STAGED_MARKER).exists() else None
        return ProjectDir(path, shown, checkout=staged)
    origin = state.origin_url
    if origin is not None and "@" in origin:  # (the URL module is only imported when needed)
        from runner.sources import urls

        origin = urls.without_credentials(origin)
    return ProjectDir(path, shown, state.commit, origin, state.branch, state.dirty, work_tree=top)


def _from_cache(
    remote: GitRemote, version: str | None, subdir: str, shown: str, notify, progress,
) -> ProjectDir:
    from runner.sources import cache

    _check_subdirectory_text(subdir)  # before any network: these can never be inside
    checkout = cache.checkout(remote, version, notify=notify, progress=progress)
    try:
        path = _subdirectory(checkout.tree, subdir, f"{remote.url} at {checkout.commit[:12]}")
    except BaseException:
        checkout.lease.release()
        raise
    return ProjectDir(path, shown, checkout.commit, remote.url, checkout.branch, None, checkout.lease,
                      branch_named=version is not None, checkout=checkout.tree)


def _subdirectory(root: Path, subdir: str, where: str) -> Path:
    if not subdir:
        return root
    path = project_path(root, subdir, "subdirectory", "#subdir must name a directory inside the project")
    if not path.is_dir():
        raise ProjectError(f"Could not find subdirectory {subdir} of {where}", hint="check the part after '#'")
    return path


def _check_subdirectory_text(subdir: str) -> None:
    normalized = os.path.normpath(subdir) if subdir else ""
    if subdir.startswith("/") or normalized == ".." or normalized.startswith("../") or "\0" in subdir:
        raise ProjectError(f"subdirectory {subdir!r} leads outside the project",
                           hint="#subdir must name a directory inside the repository")


def _join(first: str, second: str) -> str:
    parts = [part for part in (first, second) if part]
    return str(PurePosixPath(*parts)) if parts else ""


def _shown(url: str, parsed, subdir: str) -> str:
    # The project as the user named it, credentials removed, for messages and records.
    full = _join(parsed.subdir, subdir)
    return url + (f"#{full}" if full else "")


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
