"""Solving conda specs, and matching a lock's files, in py-rattler worker processes (worker.py).

A worker answers with JSON; its errors come back as kinds that are turned here
into one-line messages naming the env file (a conflict, a missing package, an
unreadable channel, a timeout).
"""
from __future__ import annotations

import os
import sys

from runner import home
from runner.envs.conda.contents import LOCK_NAME, CondaContents
from runner.errors import EnvironmentBuildError

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any

SOLVE_TIMEOUT = 300.0


def solve_for(contents: CondaContents, platform: str) -> list[dict]:
    """Solve for `platform`: this machine's virtual packages, or that platform's usual ones."""
    timeout = float(os.environ.get("MLPROJECT_CONDA_SOLVE_TIMEOUT") or SOLVE_TIMEOUT)
    return worker("solve", contents, {"specs": list(contents.specs), "platform": platform,
                                       "this_platform": contents.platform, "timeout": timeout})


def locked_dict(package) -> dict:
    return {"name": package.name, "url": package.url, "sha256": package.sha256, "md5": package.md5}


def worker(action: str, contents: CondaContents, request: dict) -> Any:
    """Run one py-rattler action in runner.envs.conda.worker; its answer, or the error it names."""
    import json

    from runner.subprocesses import capture

    request = {"action": action, "channels": list(contents.channels), "platform": request.get("platform", contents.platform),
               "cache_dir": str(home.subdir("cache") / "conda-repodata"), **request}
    try:
        code, out, err = capture([sys.executable, "-m", "runner.envs.conda.worker"], input=json.dumps(request),
                                 merge_stderr=False, dies_with_caller=True)
    except OSError as exc:
        raise EnvironmentBuildError(f"cannot start the conda worker: {exc.strerror}") from None
    try:
        answer = json.loads(out)
    except ValueError:
        raise EnvironmentBuildError(
            f"the conda worker failed ({action}, exit code {code})", details=err.strip()[-4000:] or None,
        ) from None
    if "ok" in answer:
        return answer["ok"]
    kind, text = answer["error"]["kind"], answer["error"]["text"]
    if kind == "solver":
        raise _solve_error(text, contents, request.get("timeout", SOLVE_TIMEOUT), request["platform"])
    if kind == "channel":
        raise _channel_error(text, contents)
    if kind == "matchspec":
        raise EnvironmentBuildError(f"{contents.env_file.name}: invalid match spec: {_first_line(text)}")
    if kind == "lock":
        raise EnvironmentBuildError(f"{LOCK_NAME}: {text}", hint="lock again with `mlproject lock` if the channel changed")
    raise EnvironmentBuildError(f"conda {action} failed: {_first_line(text)}")


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text.strip())


def _solve_error(text: str, contents: CondaContents, timeout: float, platform: str) -> EnvironmentBuildError:
    from runner.envs.conda.channels import redact

    where = ", ".join(redact(c) for c in contents.channels)
    if platform != contents.platform:
        where += f" for {platform}"
    lowered = text.lower()
    if "timed out" in lowered or "timeout" in lowered or "cancelled" in lowered:
        return EnvironmentBuildError(
            f"solving {contents.env_file.name} timed out after {timeout:.0f} s",
            hint="pin versions to narrow the search, or raise MLPROJECT_CONDA_SOLVE_TIMEOUT (seconds)",
        )
    missing = _no_candidates(text)
    if missing:
        return EnvironmentBuildError(
            f"{contents.env_file.name}: no package {missing.removesuffix(' *')} in {where}",
            hint="check the package name and version, and the channels",
        )
    return EnvironmentBuildError(
        f"{contents.env_file.name}: the dependencies cannot be satisfied together: {_conflicts(text)}",
        hint="relax the conflicting version constraints named above",
        details=text.strip(),
    )


def _conflicts(text: str) -> str:
    """rattler's explanation tree -> `a 1.0 requires c <1.5; b 2.0 requires c >=2.0`."""
    lines = [line.strip(" │├└─") for line in text.splitlines()]
    found = []
    for index, line in enumerate(lines[:-1]):
        if line.endswith(" would require"):
            wanted = lines[index + 1].split(", which", 1)[0].strip()
            found.append(f"{line[: -len(' would require')]} requires {wanted}")
    if found:
        return "; ".join(dict.fromkeys(found))
    return "; ".join(line for line in lines if line)[:400]


def _no_candidates(text: str) -> str | None:
    import re

    match = re.search(r"[Nn]o candidates were found for ([^\s.]+(?: [^\s]+)?)", text)
    if match:
        return match.group(1).rstrip(".")
    match = re.search(r"cannot solve the request because of: (\S+) cannot be installed because there are no viable options", text)
    return match.group(1) if match else None


def _channel_error(text: str, contents: CondaContents) -> EnvironmentBuildError:
    from runner.envs.conda.channels import redact

    return EnvironmentBuildError(
        f"cannot read a conda channel of {contents.env_file.name} ({', '.join(redact(c) for c in contents.channels)}): "
        f"{redact(_first_line(text))}",
        hint="check the channel names (and channel_alias / custom_channels in your .condarc) and the network; "
             "without a reachable channel, --env-manager uv runs the project with its python and pip: list",
        python_hint="check the channel names (and channel_alias / custom_channels in your .condarc) and the network; "
                    'without a reachable channel, env_manager="uv" runs the project with its python and pip: list',
    )
