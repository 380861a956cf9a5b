"""The git project cache: one bare mirror per repository, one checkout per commit.

    $MLPROJECT_HOME/git/mirrors/<name>.git              bare mirror of one repository
    $MLPROJECT_HOME/git/mirrors/.locks/<name>.lock      exclusive while cloning, fetching
                                                        or removing; shared while checking out
    $MLPROJECT_HOME/git/checkouts/git-<name>-<commit>/tree   read-only checkout of one commit

A mirror is fetched only when the wanted version is not already in it: a commit
or tag that is present is used as it is, a branch (or the default branch) is
fetched again, and if its host cannot be reached the branch as last fetched is
used, with a warning. Checkouts live in an environment-style store (built in a
temporary directory, renamed into place, a completion marker, shared leases
while runs use them), so concurrent first runs of a commit check out once and a
second run of a full SHA starts no git process at all.
"""
from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from runner import home
from runner.store import Lease, Store, append_history
from runner.filelock import FileLock
from runner.errors import ProjectError, UsageError
from runner.sources.git import GitCommandError, run_git
from runner.sources.urls import GitRemote

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Callable, Iterator

_FULL_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_ABBREVIATED_SHA = re.compile(r"^[0-9a-f]{4,63}$")
# What git accepts as a ref name, minus anything that could be read as an option
# or a revision expression (`HEAD~1`, `@{...}`, `a..b`).
_VERSION = re.compile(r"^(?!-)(?!.*\.\.)(?!.*@\{)[A-Za-z0-9._/+-]+$")
_REF_SPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
_USED_MARKER = "mlproject-used"
_FETCHED_MARKER = "mlproject-fetched"


@dataclass(frozen=True)
class Resolved:
    commit: str
    branch: str | None  # the branch the version named (or the default branch)


@dataclass(frozen=True)
class Checkout:
    tree: Path
    commit: str
    branch: str | None
    lease: Lease


def check_version(version: str | None) -> None:
    if version is not None and not _VERSION.match(version):
        raise UsageError(
            f"--version {version!r} is not a branch, tag or commit name",
            hint="give a branch, a tag, or a full or abbreviated commit SHA",
        )


def git_root() -> Path:
    return home.home() / "git"


def checkout_store() -> Store:
    return Store(git_root() / "checkouts")


def checkout(
    remote: GitRemote,
    version: str | None,
    *,
    notify: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Checkout:
    """The checkout of `version` (default: the default branch), with a lease held on it."""
    check_version(version)
    store = checkout_store()
    if version is not None and _FULL_SHA.match(version):
        found = store.lookup("git", f"{remote.name}-{version}")
        if found is not None:  # the warm path: no git process, no network
            return Checkout(found[0] / "tree", version, None, found[1])
    mirror = Mirror(remote)
    resolved = mirror.resolve(version, notify=notify, progress=progress)
    key = f"{remote.name}-{resolved.commit}"
    found = store.lookup("git", key)
    if found is None:
        with mirror.locked(exclusive=False):  # the mirror stays while we check out from it
            found = store.ensure(
                "git",
                key,
                lambda tmp, _final: _check_out(mirror, resolved.commit, tmp, progress),
                {"project": remote.url, "commit": resolved.commit, "mirror": mirror.path.name},
                on_wait=(lambda: progress(f"waiting for another checkout of {resolved.commit[:12]}")) if progress else None,
            )
    return Checkout(found[0] / "tree", resolved.commit, resolved.branch, found[1])


class Mirror:
    def __init__(self, remote: GitRemote):
        self.remote = remote
        self.root = git_root() / "mirrors"
        self.path = self.root / f"{remote.name}.git"

    @contextmanager
    def locked(self, exclusive: bool = True) -> Iterator[None]:
        from runner.filelock import held

        with held(self.root / ".locks" / f"{self.path.name}.lock", exclusive):
            yield

    # -- resolving a version ---------------------------------------------------
    def resolve(
        self,
        version: str | None,
        *,
        notify: Callable[[str], None] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> Resolved:
        asked_at = time.time()
        cached = self._lookup(version) if self.path.is_dir() else None
        if version is not None and cached is not None and cached.branch is None:
            _touch(self.path / _USED_MARKER)
            return cached  # a commit or tag already here: no network
        with self.locked():
            if not self.path.is_dir():
                self._clone(progress)
            elif self._fetched_since(asked_at):
                pass  # another run fetched while we waited for the lock: as fresh as ours
            else:
                try:
                    self._fetch(progress)
                except GitCommandError as exc:
                    if exc.failure.kind != "unreachable" or cached is None:
                        raise
                    if notify is not None:
                        label = f"branch {cached.branch!r}" if version else "the default branch"
                        notify(f"warning: {exc.message}; using {label} as fetched before ({cached.commit[:12]})")
                    return cached
            found = self._lookup(version)
            if found is None and version is not None and _FULL_SHA.match(version):
                found = self._fetch_commit(version, progress)
        _touch(self.path / _USED_MARKER)
        if found is None:
            raise ProjectError(
                f"Unable to checkout version {version!r}: {self.remote.url} has no branch, tag or commit of that name"
                if version else f"{self.remote.url} has no default branch (an empty repository?)",
                hint=f"list its branches and tags with `git ls-remote {self.remote.url}`",
            )
        return found

    def _lookup(self, version: str | None) -> Resolved | None:
        """The version as the mirror has it now, without fetching."""
        if version is None:
            return self._default_branch()
        # Branches first (as `git checkout` does), then a local repository's
        # remote-tracking branches (`origin/x`), then tags, then commits.
        queries = [f"refs/heads/{version}^{{commit}}", f"refs/remotes/{version}^{{commit}}",
                   f"refs/tags/{version}^{{commit}}"]
        if _ABBREVIATED_SHA.match(version):
            queries.append(f"{version}^{{commit}}")
        answers = self._batch_check(queries)
        if answers[0]:
            return Resolved(answers[0], version)
        if answers[1]:
            return Resolved(answers[1], version.split("/", 1)[-1])
        for answer in answers[2:]:
            if answer:
                return Resolved(answer, None)
        return None

    def _default_branch(self) -> Resolved | None:
        head = self._batch_check(["refs/mlproject/remote-head^{commit}", "HEAD^{commit}"])
        commit = head[0] or head[1]
        if commit is None:
            return None
        # The branch the remote's HEAD named when last fetched (a clone records it
        # in HEAD); otherwise any branch at that commit.
        name = run_git(["symbolic-ref", "-q", "--short", "HEAD"], cwd=self.path).strip() if head[1] else ""
        if name and self._batch_check([f"refs/heads/{name}^{{commit}}"])[0] == commit:
            return Resolved(commit, name)
        listing = run_git(["for-each-ref", f"--points-at={commit}", "--format=%(refname:short)", "refs/heads/"], cwd=self.path)
        names = listing.split()
        return Resolved(commit, names[0] if names else None)

    def _batch_check(self, queries: list[str]) -> list[str | None]:
        out = _batch_check(self.path, queries)
        return [answer.split()[0] if answer.split()[1:2] == ["commit"] else None for answer in out]

    # -- network ---------------------------------------------------------------
    def _clone(self, progress) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.glob(f".tmp-{self.path.name}-*"):
            _remove(leftover, self.root)
        tmp = self.root / f".tmp-{self.path.name}-{os.getpid()}-{os.urandom(3).hex()}"
        try:
            # Checkouts borrow this mirror's objects: git must never prune them.
            run_git(
                ["clone", "--bare", "--quiet", "--config", "gc.auto=0", "--config", "gc.pruneExpire=never",
                 "--", self.remote.url, str(tmp)],
                remote=self.remote, what=f"cloning {self.remote.url}", progress=progress,
            )
            if self.remote.local:  # a bare clone leaves out the remote-tracking branches
                self._fetch(progress, tmp)
            (tmp / _FETCHED_MARKER).write_text("")
            os.rename(tmp, self.path)
            append_history(self.root, f"{time.time():.3f} cloned {self.path.name} pid={os.getpid()}")
        except BaseException:
            _remove(tmp, self.root)
            raise

    def _fetch(self, progress, repository: Path | None = None) -> None:
        specs = [*_REF_SPECS, *(("+refs/remotes/*:refs/remotes/*",) if self.remote.local else ()),
                 "+HEAD:refs/mlproject/remote-head"]
        repository = repository or self.path
        run_git(
            ["fetch", "--prune", "--quiet", "--", self.remote.url, *specs],
            cwd=repository, remote=self.remote, what=f"fetching {self.remote.url}", progress=progress,
        )
        _touch(repository / _FETCHED_MARKER)

    def _fetch_commit(self, commit: str, progress) -> Resolved | None:
        # A commit no branch or tag reaches any more (servers that allow it, as GitHub does).
        try:
            run_git(
                ["fetch", "--quiet", "--", self.remote.url, f"+{commit}:refs/mlproject/pinned/{commit}"],
                cwd=self.path, remote=self.remote, what=f"fetching commit {commit[:12]}", progress=progress,
            )
        except GitCommandError as exc:
            if exc.failure.kind in ("unreachable", "auth"):
                raise
            return None
        answer = self._batch_check([f"{commit}^{{commit}}"])[0]
        return Resolved(answer, None) if answer else None

    def _fetched_since(self, moment: float) -> bool:
        try:
            return (self.path / _FETCHED_MARKER).stat().st_mtime >= moment
        except OSError:
            return False


def _batch_check(repository: Path, queries: list[str]) -> list[str]:
    """`git cat-file --batch-check`: one process answers every query, a line each."""
    out = run_git(["cat-file", "--batch-check"], cwd=repository, input="".join(f"{query}\n" for query in queries))
    lines = out.splitlines()
    if len(lines) != len(queries):
        raise ProjectError(f"the cached mirror {repository} cannot be read",
                           hint=f"remove it with `mlproject cache gc --older-than 0` or delete {repository}")
    return lines


def _check_out(mirror: Mirror, commit: str, tmp: Path, progress) -> None:
    """Fill `tmp/tree` with `commit`, its submodules initialised, read-only."""
    tree = tmp / "tree"
    tmp.mkdir(parents=True)
    remote = mirror.remote
    # --shared: the checkout borrows the mirror's objects instead of copying them.
    run_git(["clone", "--shared", "--no-checkout", "--quiet", "--", str(mirror.path), str(tree)],
            what=f"checking out {commit[:12]}", progress=progress)
    # Relative submodule URLs resolve against the real repository, not the mirror.
    run_git(["remote", "set-url", "origin", remote.url], cwd=tree)
    run_git(["checkout", "--quiet", "--detach", commit], cwd=tree, config=["advice.detachedHead=false"],
            what=f"checking out {commit[:12]}")
    if (tree / ".gitmodules").is_file():
        # file:// submodules are trusted only when the repository itself is local.
        config = ["protocol.file.allow=always"] if remote.local else []
        run_git(["submodule", "update", "--init", "--recursive", "--quiet"], cwd=tree, remote=remote, config=config,
                what=f"initialising the submodules of {commit[:12]}", progress=progress)
    _make_read_only(tree)


def _make_read_only(tree: Path) -> None:
    """Shared by every run of the commit: the code is not written to (.git stays usable)."""
    directories = []
    for dirpath, dirnames, filenames in os.walk(tree):
        if ".git" in dirnames:
            dirnames.remove(".git")
        directories.append(dirpath)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, os.lstat(path).st_mode & ~0o222)
    for dirpath in reversed(directories):
        os.chmod(dirpath, os.lstat(dirpath).st_mode & ~0o222)


# -- inspection and clean-up ---------------------------------------------------
@dataclass(frozen=True)
class CachedCheckout:
    url: str
    commit: str
    mirror: str
    path: Path
    last_used: float


@dataclass(frozen=True)
class CachedMirror:
    url: str
    path: Path
    last_used: float


def list_checkouts(store: Store | None = None) -> list[CachedCheckout]:
    store = store or checkout_store()
    return [
        CachedCheckout(env.meta.get("project", "?"), env.meta.get("commit", env.key), env.meta.get("mirror", ""), env.path, env.last_used)
        for env in store.list()
    ]


def list_mirrors() -> list[CachedMirror]:
    root = git_root() / "mirrors"
    if not root.is_dir():
        return []
    result = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            url = run_git(["config", "--get", "remote.origin.url"], cwd=entry).strip()
        except ProjectError:
            url = "?"
        result.append(CachedMirror(url, entry, _last_used(entry)))
    return result


@dataclass(frozen=True)
class CacheGcResult:
    checkouts_removed: int
    checkouts_in_use: int
    mirrors_removed: int
    mirrors_kept: int
    freed: int = 0  # bytes, as du counts them
    dry_run: bool = False


def gc(older_than: float, dry_run: bool = False) -> CacheGcResult:
    """Remove checkouts unused for `older_than` seconds (not those in use), then
    mirrors unused as long that no remaining checkout borrows objects from.
    With `dry_run`, count what would go and the space it holds; remove nothing."""
    from runner.store import disk_usage

    store = checkout_store()
    removed, in_use, _ = store.gc(older_than, dry_run=dry_run)
    going = {env.path for env in removed}
    borrowed = {item.mirror for item in list_checkouts(store) if not (dry_run and item.path in going)}
    cutoff = time.time() - older_than
    mirrors_removed = mirrors_kept = 0
    doomed: list[Path] = [env.path for env in removed]
    for cached in list_mirrors():
        if cached.path.name in borrowed or cached.last_used > cutoff:
            mirrors_kept += 1
            continue
        if dry_run:
            mirrors_removed += 1
            doomed.append(cached.path)
            continue
        lock = cached.path.parent / ".locks" / f"{cached.path.name}.lock"
        held = FileLock(lock) if lock.parent.is_dir() else None
        try:
            if held is not None and not held.exclusive(wait=False):
                mirrors_kept += 1
                continue
            trash = cached.path.parent / f".tmp-{cached.path.name}-trash-{os.urandom(3).hex()}"
            os.rename(cached.path, trash)
            _remove(trash, cached.path.parent)
            mirrors_removed += 1
        finally:
            if held is not None:
                held.close()
    freed = sum(disk_usage(doomed)) if dry_run else sum(env.meta.get("size", 0) for env in removed)
    return CacheGcResult(len(removed), len(in_use), mirrors_removed, mirrors_kept, freed, dry_run)


def _last_used(mirror: Path) -> float:
    for marker in (_USED_MARKER, _FETCHED_MARKER):
        try:
            return (mirror / marker).stat().st_mtime
        except OSError:
            continue
    return 0.0


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except FileNotFoundError:
        try:
            path.write_text("")
        except OSError:
            pass
    except OSError:
        pass


def _remove(path: Path, root: Path) -> None:
    from runner.store import remove_tree

    if os.path.lexists(path):
        remove_tree(path, root)

