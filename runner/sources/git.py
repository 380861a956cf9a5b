"""Running git for the project cache: never interactive, failures as one clear line.

git never prompts: terminal prompts are off, ssh runs in batch mode, and
credentials that came in a URL are answered by a small askpass helper from
environment variables of the git process only, so they never appear in a
command line, a repository's config, or an error message.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from runner import home
from runner.errors import ProjectError
from runner.subprocesses import capture

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Callable, Sequence

    from runner.sources.urls import GitRemote

# Answers only prompts about the host the credentials came with, so a submodule
# on another host never receives them.
_ASKPASS = """#!/bin/sh
case "$1" in
  *"$MLPROJECT_GIT_HOST'"*) ;;
  *) exit 1 ;;
esac
case "$1" in
  Username*) printf '%s\\n' "$MLPROJECT_GIT_USERNAME" ;;
  *) printf '%s\\n' "$MLPROJECT_GIT_PASSWORD" ;;
esac
"""

# Variables that would point git at another repository than the one we name.
_REPOSITORY_VARIABLES = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES",
)

_UNREACHABLE = re.compile(
    r"could not resolve host|could not resolve hostname|connection refused|failed to connect|timed out|"
    r"no route to host|network is unreachable|unable to connect|temporary failure in name resolution|"
    r"connection closed by|connection reset|name or service not known",
    re.IGNORECASE,
)
# The transfer started and then the connection went (a server that died or a network that dropped).
_DROPPED = re.compile(
    r"early eof|invalid index-pack output|index-pack failed|hung up unexpectedly|unexpected disconnect|"
    r"rpc failed|transfer closed with outstanding read data|the remote end hung up",
    re.IGNORECASE,
)
_AUTH = re.compile(
    r"authentication failed|could not read username|could not read password|terminal prompts disabled|"
    r"permission denied \(|permission denied, please try again|host key verification failed|"
    r"returned error: 40[13]|invalid username or password|access denied(?! or repository not exported)",
    re.IGNORECASE,
)
_NOT_A_REPOSITORY = re.compile(
    r"does not appear to be a git repository|repository .* not found|repository not found|not found|"
    r"returned error: 404|not a git repository|repository not exported|no such file or directory",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class GitFailure:
    kind: str  # "unreachable", "auth", "not-a-repository", "other"
    detail: str  # git's own last line, credentials removed


class GitCommandError(ProjectError):
    """A git command failed; `failure` says how (exit code 2: nothing was run)."""

    def __init__(self, message: str, failure: GitFailure, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.failure = failure


def git_env(remote: GitRemote | None = None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in _REPOSITORY_VARIABLES}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GCM_INTERACTIVE"] = "never"
    env["LC_ALL"] = "C"  # git's messages in English: they are read below
    env.pop("SSH_ASKPASS", None)
    env.pop("GIT_ASKPASS", None)
    if "GIT_SSH" not in env:
        ssh = env.get("GIT_SSH_COMMAND") or "ssh"
        env["GIT_SSH_COMMAND"] = f"{ssh} -o BatchMode=yes -o ConnectTimeout=20"
    # A stalled HTTP transfer fails instead of hanging for ever.
    env.setdefault("GIT_HTTP_LOW_SPEED_LIMIT", "1")
    env.setdefault("GIT_HTTP_LOW_SPEED_TIME", "60")
    if remote is not None and remote.has_credentials:
        env["GIT_ASKPASS"] = str(_askpass_script())
        env["MLPROJECT_GIT_HOST"] = remote.host_port
        env["MLPROJECT_GIT_USERNAME"] = remote.username or ""
        env["MLPROJECT_GIT_PASSWORD"] = remote.password or ""
    return env


def _askpass_script() -> Path:
    path = home.subdir("git") / "askpass.sh"
    try:
        if path.read_text() == _ASKPASS:
            return path
    except OSError:
        pass
    tmp = path.with_name(f".askpass.{os.getpid()}.tmp")
    tmp.write_text(_ASKPASS)
    os.chmod(tmp, 0o700)
    os.replace(tmp, path)
    return path


def run_git(
    args: Sequence[str],
    *,
    cwd: Path | str | None = None,
    remote: GitRemote | None = None,
    what: str | None = None,
    progress: Callable[[str], None] | None = None,
    config: Sequence[str] = (),
    input: str | None = None,
) -> str:
    """Run `git args`; return stdout. On failure raise GitCommandError naming `what`."""
    from contextlib import nullcontext

    from runner.progress import step

    argv = ["git"]
    for item in config:
        argv += ["-c", item]
    argv += list(args)
    with step(progress, what) if what is not None else nullcontext():
        try:
            code, out, err = capture(argv, env=git_env(remote), cwd=cwd, merge_stderr=False, input=input)
        except FileNotFoundError:
            raise ProjectError("git is not installed", hint="install git (Debian: apt-get install git)") from None
        if code != 0:
            raise explain(err, what or f"git {args[0]}", remote)
    return out


def explain(stderr: str, what: str, remote: GitRemote | None) -> GitCommandError:
    """git's error output -> one line saying what went wrong, without credentials."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    meaningful = [line for line in lines if line.lower().startswith(("fatal:", "error:", "ssh:", "remote:"))]
    where = remote.url if remote is not None else "the repository"

    def cleaned(line: str) -> str:
        for prefix in ("fatal: ", "error: "):
            if line.startswith(prefix):
                line = line[len(prefix):]
        if remote is not None and remote.password:
            line = line.replace(remote.password, "***")
        line = re.sub(r"(://)[^/@\s]*@", r"\1", line)  # any userinfo git echoes back
        return re.sub(r"^unable to access '[^']*': ", "", line)

    dropped = [line for line in lines if _DROPPED.search(line)]
    if dropped and not any(_AUTH.search(line) for line in lines):
        # Usable like an unreachable server: a branch fetched before still runs, with a warning.
        failure = GitFailure("unreachable", cleaned(dropped[0]))
        return GitCommandError(
            f"the connection to {where} was lost during the transfer ({failure.detail})", failure,
            hint="nothing partial was kept; run again once the server is reachable",
        )
    for kind, pattern in (("auth", _AUTH), ("unreachable", _UNREACHABLE), ("not-a-repository", _NOT_A_REPOSITORY)):
        matching = [line for line in lines if pattern.search(line)]
        if not matching:
            continue
        failure = GitFailure(kind, cleaned(matching[-1]))
        if kind == "auth":
            return GitCommandError(
                f"authentication to {where} failed ({failure.detail})", failure,
                hint="check the credentials: an ssh key or agent for ssh URLs, a token in the URL or a git credential helper for https",
            )
        if kind == "unreachable":
            return GitCommandError(
                f"cannot reach {where} ({failure.detail})", failure,
                hint="check the host name and the network; a commit fetched before runs offline",
            )
        return GitCommandError(f"{where} is not a git repository ({failure.detail})", failure, hint="check the repository URL")
    detail = cleaned((meaningful or lines or ["git failed"])[-1])
    return GitCommandError(f"{what} failed: {detail}", GitFailure("other", detail))
