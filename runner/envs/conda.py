"""`--env-manager conda`: conda environments with no conda installed.

The conda packages are solved and installed in-process with py-rattler: the
machine's virtual packages, a solve timeout, the package cache inside the store
(so files hard-link), the environment installed into the store's temporary
directory with every prefix-patched file already pointing at the final path.
The `pip:` list is then installed with uv into the environment's own Python.

rattler costs ~100 ms to import, so it is imported only to solve or build: the
key is computed from the env file's text, and a warm run never imports it.
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


@dataclass
class CondaContents:
    env_file: Path
    channels: tuple[str, ...]  # URLs, in priority order
    specs: tuple[str, ...]  # match specs, channel names resolved to URLs
    pip: Requirements
    platform: str
    variables: dict[str, str]
    has_python: bool
    records: list[Any] | None = field(default=None, repr=False)  # the solve, once done


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


def plan(project: Project, notify: Callable[[str], None] | None = None) -> EnvPlan:
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
    return EnvPlan(NAME, description, summary, meta, contents)


def _spec_name(spec: str) -> str:
    import re

    text = spec.rpartition("::")[2]
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)", text)
    return match.group(1).lower() if match else ""


# -- solving and installing (rattler imported only here) --------------------------
def resolve(plan: EnvPlan, progress: Callable[[str], None] | None = None) -> None:
    """Solve now, before a run exists: an unsatisfiable spec creates nothing."""
    contents: CondaContents = plan.contents
    if contents.records is not None:
        return
    if progress is not None:
        progress(f"solving {len(contents.specs)} conda spec(s)")
    contents.records = _solve(contents)


def _solve(contents: CondaContents) -> list[Any]:
    import asyncio
    import datetime

    import rattler
    from rattler import exceptions

    timeout = float(os.environ.get("MLPROJECT_CONDA_SOLVE_TIMEOUT") or SOLVE_TIMEOUT)
    gateway = rattler.Gateway(cache_dir=home.subdir("cache") / "conda-repodata")
    try:
        return asyncio.run(
            rattler.solve(
                sources=list(contents.channels),
                specs=list(contents.specs),
                gateway=gateway,
                platforms=[contents.platform, "noarch"],
                virtual_packages=rattler.VirtualPackage.detect(),
                timeout=datetime.timedelta(seconds=timeout),
                channel_priority=rattler.ChannelPriority.Strict,
            )
        )
    except exceptions.SolverError as exc:
        raise _solve_error(str(exc), contents, timeout) from None
    except (exceptions.FetchRepoDataError, exceptions.GatewayError, exceptions.InvalidChannelError) as exc:
        raise _channel_error(str(exc), contents) from None
    except exceptions.InvalidMatchSpecError as exc:
        raise EnvironmentBuildError(f"{contents.env_file.name}: invalid match spec: {_first_line(str(exc))}") from None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text.strip())


def _solve_error(text: str, contents: CondaContents, timeout: float) -> EnvironmentBuildError:
    from runner.envs.condachannels import redact

    where = ", ".join(redact(c) for c in contents.channels)
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
    import asyncio

    import rattler

    contents: CondaContents = plan.contents
    resolve(plan, progress)
    records = contents.records
    if progress is not None:
        progress(f"installing {len(records)} conda package(s)")
    try:
        asyncio.run(
            rattler.install(
                records,
                target_prefix=tmp,
                cache_dir=home.subdir("cache") / "conda-pkgs",
                show_progress=False,
                execute_link_scripts=False,
                alternative_target_prefix=final,  # patched files name where it will live
            )
        )
    except Exception as exc:  # noqa: BLE001 (rattler raises several unrelated types)
        raise EnvironmentBuildError(f"installing the conda packages failed: {_first_line(str(exc))}") from None
    meta = tmp / ".mlproject"
    meta.mkdir(exist_ok=True)
    lines = sorted(f"{r.name.normalized}=={r.version}={r.build} ({_channel_of(r)})" for r in records)
    if contents.pip.lines:
        _install_pip(contents, tmp, final, meta, progress)
        from runner.envs.installed import installed_packages

        conda_names = {r.name.normalized for r in records}
        lines += [f"{line} (pip)" for line in installed_packages(tmp) if line.split("==")[0].lower() not in conda_names]
    (meta / "packages.txt").write_text("".join(line + "\n" for line in lines))


def _channel_of(record) -> str:
    from runner.envs.condachannels import redact

    return redact(str(record.url).rsplit("/", 2)[0])


def _install_pip(contents: CondaContents, tmp: Path, final: Path, meta: Path, progress) -> None:
    from runner.envs.build import relocate, run_step
    from runner.envs.uv import requirement_args, uv_binary, uv_env

    python = tmp / "bin" / "python"
    if not python.exists():
        raise EnvironmentBuildError("the conda environment has no bin/python for its pip: list")
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
