"""`--env-manager conda`: conda environments with no conda installed.

The conda packages are solved and installed with py-rattler, no conda binary:
the machine's virtual packages, a solve timeout, the package cache inside the
store (so files hard-link), the environment installed into the store's
temporary directory with every prefix-patched file already pointing at the
final path. The `pip:` list is then installed with uv into the environment's
own Python.

rattler runs in short-lived worker processes (condaworker.py): its native
threads can outlive a call and crash an interpreter at exit, and it costs
~100 ms to import. The key is computed from the env file's text, so a warm run
starts no worker at all.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runner import home
from runner.envs import Environment, EnvPlan
from runner.envs.requirements import Requirements, collect
from runner.errors import EnvironmentBuildError
from runner.project.spec import Project

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

NAME = "conda"
RECIPE = "conda-1"  # bump when the way environments are built changes
SOLVE_TIMEOUT = 300.0
OPTIONS = ("locked",)


@dataclass
class CondaContents:
    env_file: Path
    channels: tuple[str, ...]  # URLs, in priority order
    specs: tuple[str, ...]  # match specs, channel names resolved to URLs
    pip: Requirements
    platform: str
    variables: dict[str, str]
    has_python: bool
    locked: list[Any] | None = None  # the LockedPackages of conda-lock.yml for this platform, when it is current
    records: list[dict] | None = field(default=None, repr=False)  # the solve (or the lock's records), once done


def platform_name() -> str:
    machine = os.uname().machine
    arch = {"x86_64": "64", "amd64": "64", "aarch64": "aarch64", "arm64": "aarch64", "ppc64le": "ppc64le",
            "s390x": "s390x", "i686": "32"}.get(machine, machine)
    system = "osx" if sys.platform == "darwin" else "linux"
    if system == "osx" and arch == "aarch64":
        arch = "arm64"
    return f"{system}-{arch}"


def _virtual_packages_key() -> dict[str, str]:
    """What of the machine changes which packages solve: its C library and CUDA.

    (Read without rattler; the kernel version is left out so an upgrade does not
    invalidate every environment.)"""
    key = {"machine": os.uname().machine}
    try:
        key["libc"] = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        pass
    for name in ("CONDA_OVERRIDE_CUDA", "CONDA_OVERRIDE_GLIBC", "CONDA_OVERRIDE_ARCHSPEC"):
        if name in os.environ:
            key[name] = os.environ[name]
    return key


def describe(project: Project) -> str:
    return plan(project, None).summary


def plan(project: Project, notify: Callable[[str], None] | None = None, locked: bool = False) -> EnvPlan:
    from runner.envs import condachannels
    from runner.envs.pythonenv import _index_settings
    from runner.project.envfiles import load_conda_env

    env = project.env
    if env.kind != "conda_env" or env.path is None:
        raise EnvironmentBuildError(
            "--env-manager conda needs a conda.yaml (conda_env in MLproject)",
            hint="use --env-manager uv for python_env.yaml projects",
        )
    spec = load_conda_env(env.path)
    if notify is not None:
        for warning in spec.warnings:
            notify(f"warning: {warning}")
    settings = condachannels.settings()
    names = spec.channels or settings.channels or ("defaults",)
    channels: list[str] = []
    for name in names:
        channels.extend(url for url in settings.url(name) if url not in channels)
    specs = []
    for text in spec.dependencies:
        text = " ".join(text.split())
        channel, sep, rest = text.rpartition("::")
        if sep:  # conda-forge::numpy: that channel, resolved like the others
            url = settings.url(channel)[0]
            if url not in channels:
                channels.append(url)
            text = f"{url}::{rest}"
        specs.append(text)
    has_python = any(_spec_name(s) == "python" for s in specs)
    pip = collect(spec.pip, project.directory, env.path.parent) if spec.pip else Requirements()
    if pip.lines and not has_python:
        raise EnvironmentBuildError(
            f"{env.path.name}: the pip: list needs python among the dependencies",
            hint="add for example `- python=3.11` to dependencies",
        )
    contents = CondaContents(env.path, tuple(channels), tuple(specs), pip, platform_name(), dict(spec.variables), has_python)
    description = {
        "recipe": RECIPE,
        "manager": NAME,
        "platform": contents.platform,
        "virtual": _virtual_packages_key(),
        "channels": [condachannels.redact(url) for url in channels],
        "specs": sorted(specs),
        "pip": pip.key_material(),
        "index": _index_settings() if pip.lines else {},
    }
    summary = f"conda: {len(specs)} package spec(s) from {', '.join(condachannels.redact(c) for c in channels)}" + (
        f", {len(pip.lines)} pip requirement line(s)" if pip.lines else ""
    )
    meta = {"project": str(project.directory), "source": env.path.name}
    lock = _current_lock(contents, notify, locked)
    if lock is not None:
        from runner.envs import condalock

        contents.locked = lock.for_platform(contents.platform)
        # Installed exactly from the lock: the key is the lock's files for this platform.
        description = {"recipe": RECIPE, "manager": NAME, "platform": contents.platform,
                       "virtual": description["virtual"], "lock": condalock.key_material(lock, contents.platform)}
        summary = f"conda: {len(contents.locked)} package(s) from {condalock.LOCK_NAME}"
        meta["source"] = condalock.LOCK_NAME
    return EnvPlan(NAME, description, summary, meta, contents)


def _current_lock(contents: CondaContents, notify, locked: bool):
    """conda-lock.yml next to conda.yaml when it was made from conda.yaml as it is now."""
    from runner.envs import condalock

    path = condalock.lock_path(contents.env_file)
    if not path.is_file():
        if locked:
            raise EnvironmentBuildError(f"--locked: there is no {condalock.LOCK_NAME} next to {contents.env_file.name}",
                                        hint="write one with `mlproject lock PROJECT`")
        return None
    lock = condalock.read(path)
    platform = contents.platform
    if lock.content_hash.get(platform) == condalock.content_hash(contents, platform) and lock.for_platform(platform):
        return lock
    reason = (f"{condalock.LOCK_NAME} is stale: {contents.env_file.name} changed since it was written"
              if platform in lock.content_hash else f"{condalock.LOCK_NAME} has no packages for {platform}")
    if locked:
        raise EnvironmentBuildError(f"--locked: {reason}", hint=f"update it with `mlproject lock PROJECT --platform {platform}`")
    if notify is not None:
        notify(f"warning: {reason}; solving instead (update it with `mlproject lock`)")
    return None


def _spec_name(spec: str) -> str:
    import re

    text = spec.rpartition("::")[2]
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)", text)
    return match.group(1).lower() if match else ""


# -- solving and installing (in a py-rattler worker process: runner.envs.condaworker) ----
def resolve(plan: EnvPlan, progress: Callable[[str], None] | None = None) -> None:
    """Solve now, before a run exists: an unsatisfiable spec creates nothing.
    With a current lock, check instead that the channels still have its files."""
    contents: CondaContents = plan.contents
    if contents.records is not None:
        return
    if contents.locked is not None:
        packages = [p for p in contents.locked if p.manager == "conda"]
        contents.records = _worker("match", contents, {"packages": [_locked_dict(p) for p in packages]})
        return
    if progress is not None:
        progress(f"solving {len(contents.specs)} conda spec(s)")
    contents.records = solve_for(contents, contents.platform)


def solve_for(contents: CondaContents, platform: str) -> list[dict]:
    """Solve for `platform`: this machine's virtual packages, or that platform's usual ones."""
    timeout = float(os.environ.get("MLPROJECT_CONDA_SOLVE_TIMEOUT") or SOLVE_TIMEOUT)
    return _worker("solve", contents, {"specs": list(contents.specs), "platform": platform,
                                       "this_platform": contents.platform, "timeout": timeout})


def _locked_dict(package) -> dict:
    return {"name": package.name, "url": package.url, "sha256": package.sha256, "md5": package.md5}


def _worker(action: str, contents: CondaContents, request: dict) -> Any:
    """Run one py-rattler action in runner.envs.condaworker; its answer, or the error it names."""
    import json

    from runner.subprocesses import capture

    request = {"action": action, "channels": list(contents.channels), "platform": request.get("platform", contents.platform),
               "cache_dir": str(home.subdir("cache") / "conda-repodata"), **request}
    try:
        code, out, err = capture([sys.executable, "-m", "runner.envs.condaworker"], input=json.dumps(request),
                                 merge_stderr=False)
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
        from runner.envs.condalock import LOCK_NAME

        raise EnvironmentBuildError(f"{LOCK_NAME}: {text}", hint="lock again with `mlproject lock` if the channel changed")
    raise EnvironmentBuildError(f"conda {action} failed: {_first_line(text)}")


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text.strip())


def _solve_error(text: str, contents: CondaContents, timeout: float, platform: str) -> EnvironmentBuildError:
    from runner.envs.condachannels import redact

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
    from runner.envs.condachannels import redact

    return EnvironmentBuildError(
        f"cannot read a conda channel of {contents.env_file.name} ({', '.join(redact(c) for c in contents.channels)}): "
        f"{redact(_first_line(text))}",
        hint="check the channel names (and channel_alias / custom_channels in your .condarc) and the network",
    )


def build(plan: EnvPlan, tmp: Path, final: Path, progress=None) -> None:
    contents: CondaContents = plan.contents
    resolve(plan, progress)
    records = contents.records
    if progress is not None:
        progress(f"installing {len(records)} conda package(s)")
    packages = [{"name": r["name"], "url": r["url"], "sha256": r["sha256"], "md5": r["md5"]} for r in records]
    _worker("install", contents, {"packages": packages, "target": str(tmp), "final": str(final),
                                  "pkgs_dir": str(home.subdir("cache") / "conda-pkgs")})
    meta = tmp / ".mlproject"
    meta.mkdir(exist_ok=True)
    lines = sorted(f"{r['name']}=={r['version']}={r['build']} ({_channel_of(r)})" for r in records)
    if contents.pip.lines or (contents.locked and any(p.manager == "pip" for p in contents.locked)):
        _install_pip(contents, tmp, final, meta, progress)
        from runner.envs.installed import installed_packages

        conda_names = {r["name"] for r in records}
        lines += [f"{line} (pip)" for line in installed_packages(tmp) if line.split("==")[0].lower() not in conda_names]
    (meta / "packages.txt").write_text("".join(line + "\n" for line in lines))


def _channel_of(record: dict) -> str:
    from runner.envs.condachannels import redact

    return redact(record["url"].rsplit("/", 2)[0])


def _install_pip(contents: CondaContents, tmp: Path, final: Path, meta: Path, progress) -> None:
    from runner.envs.build import relocate, run_step
    from runner.envs.uv import requirement_args, uv_binary, uv_env

    python = tmp / "bin" / "python"
    if not python.exists():
        raise EnvironmentBuildError("the conda environment has no bin/python for its pip: list")
    if contents.locked is not None:  # exactly the locked files, each checked against its hash
        from runner.envs import condalock

        (meta / "pip-locked.txt").write_text("\n".join(condalock.pip_requirement_lines(contents.locked)) + "\n")
        args = ["--no-deps", "--require-hashes", "-r", str(meta / "pip-locked.txt")]
    else:
        args = requirement_args(meta, "pip", contents.pip)
    run_step([uv_binary(), "pip", "install", "--python", str(python), *args], "installing the pip: list",
             env=uv_env(), log=meta / "build.log", progress=progress)
    relocate(tmp, tmp, final)  # console scripts uv wrote name the temporary path


def activate(plan: EnvPlan, prefix: Path) -> Environment:
    """What `conda activate` does: PATH, CONDA_PREFIX, the env file's variables,
    and the environment's etc/conda/activate.d scripts."""
    contents: CondaContents = plan.contents
    set_vars = {
        "CONDA_PREFIX": str(prefix),
        "CONDA_DEFAULT_ENV": str(prefix),
        "CONDA_SHLVL": "1",
        "CONDA_PROMPT_MODIFIER": f"({prefix.name}) ",
        **contents.variables,
    }
    unset = ["PYTHONHOME", "VIRTUAL_ENV"]
    if contents.has_python and os.environ.get("PYTHONDONTWRITEBYTECODE"):
        set_vars["PYTHONPYCACHEPREFIX"] = str(prefix / ".pycache")  # see pythonenv.activate
        unset.append("PYTHONDONTWRITEBYTECODE")
    scripts_dir = prefix / "etc" / "conda" / "activate.d"
    scripts = tuple(sorted(str(p) for p in scripts_dir.glob("*.sh"))) if scripts_dir.is_dir() else ()
    return Environment(NAME, plan.key, prefix, (str(prefix / "bin"),), set_vars, tuple(unset), scripts)
