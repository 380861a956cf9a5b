"""Git project URIs: which strings are git URLs, and what each one names.

A `GitRemote` keeps the credentials apart from the URL: git is given the URL
without them (so they never reach a mirror's config, a process list or an
error message) and gets them from an askpass helper instead.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from runner.errors import ProjectError

_SCHEMES = ("http", "https", "ssh", "git", "file", "git+ssh", "ssh+git", "git+https", "git+http")
_SCHEME_URL = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)
# scp-like `user@host:path` (git's own rule: no slash before the colon). Without a
# user part only a dotted host name counts (`github.com:org/repo`), so a local
# file name with a colon is never taken for a host.
_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/:\s]+)@)?(?P<host>[A-Za-z0-9][\w.-]*):(?P<path>(?!//).+)$")
# https://host/org/repo/tree/<ref>/<subdir> (GitHub) and .../-/tree/... (GitLab)
_TREE_PATH = re.compile(r"^(?P<repo>/[^/]+/[^/]+?)(?:\.git)?/(?:-/)?tree/(?P<ref>[^/]+)(?:/(?P<subdir>.*?))?/?$")


@dataclass(frozen=True)
class GitRemote:
    url: str  # what git is given: credentials removed
    key: str  # the normalized identity of the repository (one mirror per key)
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    host_port: str = ""  # the askpass helper answers only prompts for this host
    local: bool = False  # file:// or a path: trusted like the user's own files

    @property
    def name(self) -> str:
        """A readable and unique directory name for this repository's mirror."""
        tail = self.key.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1] or "repo"
        import hashlib  # (imports kept off the local-directory path)

        slug = re.sub(r"[^A-Za-z0-9._-]", "_", tail)[:40]
        return f"{slug}-{hashlib.sha256(self.key.encode()).hexdigest()[:16]}"

    @property
    def has_credentials(self) -> bool:
        return self.username is not None or self.password is not None


@dataclass(frozen=True)
class GitUri:
    remote: GitRemote
    version: str | None  # from a .../tree/<ref>/... URL
    subdir: str


def is_git_url(base: str) -> bool:
    match = _SCHEME_URL.match(base)
    if match:
        return match.group("scheme").lower() in _SCHEMES
    scp = _SCP_LIKE.match(base)
    return bool(scp) and (scp.group("user") is not None or "." in scp.group("host"))


def parse(base: str) -> GitUri:
    """A git URL (without its `#subdir`) -> the remote, and any ref/subdir it names."""
    from urllib.parse import unquote

    match = _SCHEME_URL.match(base)
    if match is None:
        scp = _SCP_LIKE.match(base)
        if scp is None:
            raise ProjectError(f"{base!r} is not a git URL")
        user, host, path = scp.group("user"), scp.group("host"), scp.group("path")
        url = f"{user}@{host}:{path}" if user else f"{host}:{path}"
        key = f"ssh://{user + '@' if user else ''}{host.lower()}/{_strip_repo_path(path)}"
        return GitUri(GitRemote(url, key, host_port=host.lower()), None, "")
    scheme = match.group("scheme").lower()
    rest = match.group("rest")
    if scheme == "file":
        path = os.path.realpath(unquote(rest[rest.find("/"):] if not rest.startswith("/") else rest))
        return GitUri(GitRemote(f"file://{path}", f"file://{path}", local=True), None, "")
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    username = password = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        username = unquote(user_text)
        password = unquote(password_text) if colon else None
    path = slash + path
    version, subdir = None, ""
    if scheme in ("http", "https"):
        tree = _TREE_PATH.match(path)
        if tree:
            path, version, subdir = tree.group("repo"), unquote(tree.group("ref")), unquote(tree.group("subdir") or "")
    # ssh keeps its user name (it says which account, not a secret); http(s) carries
    # none: a user part there is a token or account name, both given by askpass.
    keep_user = scheme not in ("http", "https", "git+https", "git+http") and username is not None
    prefix = f"{username}@" if keep_user else ""
    if keep_user:  # ssh takes no password from a URL; a key or agent answers
        username = password = None
    scheme_for_git = {"git+ssh": "ssh", "ssh+git": "ssh", "git+https": "https", "git+http": "http"}.get(scheme, scheme)
    url = f"{scheme_for_git}://{prefix}{hostport}{path}"
    host = hostport.lower()
    key = f"{scheme_for_git}://{prefix}{host}/{_strip_repo_path(path)}"
    return GitUri(GitRemote(url, key, username, password, host_port=host), version, subdir)


def local_remote(top_level: str) -> GitRemote:
    """A repository on this machine, fetched from by path (never written to)."""
    path = os.path.realpath(top_level)
    return GitRemote(path, f"file://{path}", local=True)


def _strip_repo_path(path: str) -> str:
    path = path.strip("/")
    if path.endswith(".git"):
        path = path[: -len(".git")]
    return path


def without_credentials(url: str) -> str:
    """For messages about a URL the user typed: no password or token in it."""
    if is_git_url(url) and _SCHEME_URL.match(url):
        try:
            return parse(url).remote.url
        except ProjectError:
            pass
    return url
