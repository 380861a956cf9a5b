"""`--env-manager conda`: conda environments with no conda installed.

The conda packages are solved and installed with py-rattler, no conda binary:
the machine's virtual packages, a solve timeout, the package cache inside the
store (so files hard-link), the environment installed into the store's
temporary directory with every prefix-patched file already pointing at the
final path. The `pip:` list is then installed with uv into the environment's
own Python.

rattler runs in short-lived worker processes (worker.py, through solve.py): its native
threads can outlive a call and crash an interpreter at exit, and it costs
~100 ms to import. The key is computed from the env file's text, so a warm run
starts no worker at all.
"""
from __future__ import annotations

import os
from pathlib import Path

from runner import home
from runner.envs import Environment, EnvRecipe, EnvOptions
from runner.envs.conda.contents import LOCK_NAME, CondaContents
from runner.platforms import platform_name
from runner.envs.conda.solve import locked_dict, solve_for, worker
from runner.envs.python.requirements import Requirements, collect
from runner.errors import EnvironmentBuildError
from runner.project.spec import Project

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Callable

NAME = "conda"
RECIPE = "conda-2"  # bump when the way environments are built changes (2: each records its conda-lock.yml)
OPTIONS: tuple[str, ...] = ("locked", "lock_file")
NODE_NEEDS: tuple[str, ...] = ("rattler",)  # py-rattler solves and installs: no conda binary
# (LOCK_NAME, conda-lock.yml: from contents, where the lock code reads it too)


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
    return plan(project, None, EnvOptions()).summary


def plan(project: Project, notify: Callable[[str], None] | None, options: EnvOptions) -> EnvRecipe:
    """`options.locked`: install only from a current conda-lock.yml; `options.lock_file`: install
    exactly this lock (a recorded one, for a rerun), whatever conda.yaml says now."""
    locked, lock_file = options.locked, options.lock_file
    from runner.envs.conda import channels as condachannels
    from runner.envs.python.spec import _index_settings
    from runner.project.envfiles import load_conda_env

    env = project.env
    if env.kind != "conda_env" or env.path is None:
        raise EnvironmentBuildError(
            f"{'python_env' if env.kind == 'python_env' else 'This'} project cannot be executed using conda: "
            "--env-manager conda needs a conda.yaml (conda_env in MLproject)",
            hint="use --env-manager uv for python_env.yaml projects",
            python_hint='use env_manager="uv" for python_env.yaml projects',
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
    names_python = any(_spec_name(s) == "python" for s in specs)
    pip = collect(spec.pip, project.directory, env.path.parent) if spec.pip else Requirements()
    if pip.lines and not any(_spec_name(s) in ("python", "pip") for s in specs):
        specs.append("pip")  # as conda does for a pip: list: pip, and with it python, come along
    has_python = names_python or any(_spec_name(s) == "pip" for s in specs)  # pip depends on python
    contents = CondaContents(env.path, tuple(channels), tuple(specs), pip, platform_name(), dict(spec.variables), has_python,
                             names_python)
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
    if lock_file:
        from runner.envs.conda import lock as condalock

        lock = condalock.read(Path(lock_file))
        if not lock.for_platform(contents.platform):
            raise EnvironmentBuildError(f"the recorded lock has no packages for {contents.platform}")
    else:
        lock = _current_lock(contents, notify, locked)
    if lock is not None:
        from runner.envs.conda import lock as condalock

        contents.locked = lock.for_platform(contents.platform)
        # Installed exactly from the lock: the key is the lock's files for this platform.
        description = {"recipe": RECIPE, "manager": NAME, "platform": contents.platform,
                       "virtual": description["virtual"], "lock": condalock.key_material(lock, contents.platform)}
        summary = f"conda: {len(contents.locked)} package(s) from {LOCK_NAME}"
        meta["source"] = LOCK_NAME
    return EnvRecipe(NAME, description, summary, meta, contents)


def _current_lock(contents: CondaContents, notify, locked: bool):
    """conda-lock.yml next to conda.yaml when it was made from conda.yaml as it is now."""
    from runner.envs.conda import lock as condalock

    path = condalock.lock_path(contents.env_file)
    if not path.is_file():
        if locked:
            raise EnvironmentBuildError(f"--locked: there is no {LOCK_NAME} next to {contents.env_file.name}",
                                        hint="write one with `mlproject lock PROJECT`")
        return None
    lock = condalock.read(path)
    platform = contents.platform
    if not lock.ours and lock.for_platform(platform):
        # Written by conda-lock: installed as it is when asked for, as `conda-lock install` does.
        if locked:
            if notify is not None:
                notify(f"note: {LOCK_NAME} was not written by mlproject (conda-lock?): whether "
                       f"{contents.env_file.name} changed since cannot be checked; installing it as it is")
            return lock
        if notify is not None:
            notify(f"warning: {LOCK_NAME} was not written by mlproject, so whether it is current cannot be checked; "
                   "solving instead (--locked installs it as it is)")
        return None
    if lock.content_hash.get(platform) == condalock.content_hash(contents, platform) and lock.for_platform(platform):
        return lock
    reason = (f"{LOCK_NAME} is stale: {contents.env_file.name} changed since it was written"
              if platform in lock.content_hash else f"{LOCK_NAME} has no packages for {platform}")
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


# -- solving and installing (in a py-rattler worker process: runner.envs.conda.worker) ----
def resolve(plan: EnvRecipe, progress: Callable[[str], None] | None = None) -> None:
    """Solve now, before a run exists: an unsatisfiable spec creates nothing.
    With a current lock, check instead that the channels still have its files."""
    contents: CondaContents = plan.contents
    if contents.records is not None:
        return
    if contents.locked is not None:
        packages = [p for p in contents.locked if p.manager == "conda"]
        contents.records = worker("match", contents, {"packages": [locked_dict(p) for p in packages]})
        return
    from runner.progress import step

    with step(progress, f"solving {len(contents.specs)} conda spec(s)"):
        contents.records = solve_for(contents, contents.platform)
    chosen = next((r["version"] for r in contents.records if r["name"] == "python"), None)
    if not contents.names_python and chosen and progress is not None:
        progress(f"note: {contents.env_file.name} names no python; the solve chose python {chosen}")


def check(plan: EnvRecipe, progress: Callable[[str], None] | None = None) -> None:
    """`validate --resolve`: the solve."""
    resolve(plan, progress)


def write_lock(project: Project, platforms: list[str], notify, progress) -> Path:
    from runner.envs.conda import lock as condalock

    return condalock.write(plan(project, notify, EnvOptions()).contents, platforms, progress)


def build(plan: EnvRecipe, tmp: Path, final: Path, progress=None) -> None:
    contents: CondaContents = plan.contents
    resolve(plan, progress)
    records = contents.records
    assert records is not None  # (resolve() solved them)
    from runner.progress import step

    packages = [{"name": r["name"], "url": r["url"], "sha256": r["sha256"], "md5": r["md5"]} for r in records]
    with step(progress, f"installing {len(records)} conda package(s)"):
        worker("install", contents, {"packages": packages, "target": str(tmp), "final": str(final),
                                      "pkgs_dir": str(home.subdir("cache") / "conda-pkgs")})
    meta = tmp / ".mlproject"
    meta.mkdir(exist_ok=True)
    lines = sorted(f"{r['name']}=={r['version']}={r['build']} ({_channel_of(r)})" for r in records)
    if contents.pip.lines or (contents.locked and any(p.manager == "pip" for p in contents.locked)):
        _install_pip(contents, tmp, final, meta, progress)
        from runner.envs.python.installed import installed_packages

        conda_names = {r["name"] for r in records}
        lines += [f"{line} (pip)" for line in installed_packages(tmp) if line.split("==")[0].lower() not in conda_names]
    (meta / "packages.txt").write_text("".join(line + "\n" for line in lines))
    _record_lock(contents, records, tmp, meta, progress)


def _record_lock(contents: CondaContents, records: list[dict], prefix: Path, meta: Path, progress) -> None:
    """`.mlproject/conda-lock.yml`: what the environment holds (the conda records installed, and
    the pip packages pinned as installed), the lock a rerun installs. Without it (a pip package
    that is not on the index), the run records its package list only."""
    from dataclasses import replace

    from runner.envs.conda import lock as condalock
    from runner.envs.python.installed import installed_packages

    conda_names = {r["name"] for r in records}
    pins = [line for line in installed_packages(prefix) if line.split("==")[0].lower() not in conda_names]
    pinned = replace(contents, pip=collect(pins, prefix)) if pins and contents.pip.lines else replace(contents, pip=Requirements())
    try:
        condalock.write(pinned, [contents.platform], progress, solved={contents.platform: records},
                        path=meta / LOCK_NAME)
    except EnvironmentBuildError as exc:
        with open(meta / "build.log", "a", encoding="utf-8") as handle:
            handle.write(f"note: no conda-lock.yml recorded for this environment: {exc.message}\n")


def _channel_of(record: dict) -> str:
    from runner.envs.conda.channels import redact

    return redact(record["url"].rsplit("/", 2)[0])


def _install_pip(contents: CondaContents, tmp: Path, final: Path, meta: Path, progress) -> None:
    from runner.envs.build import relocate, run_step
    from runner.envs.uvtool import requirement_args, uv_binary, uv_env

    python = tmp / "bin" / "python"
    if not python.exists():
        raise EnvironmentBuildError("the conda environment has no bin/python for its pip: list")
    if contents.locked is not None:  # exactly the locked files, each checked against its hash
        from runner.envs.conda import lock as condalock

        (meta / "pip-locked.txt").write_text("\n".join(condalock.pip_requirement_lines(contents.locked)) + "\n")
        args = ["--no-deps", "--require-hashes", "-r", str(meta / "pip-locked.txt")]
    else:
        args = requirement_args(meta, "pip", contents.pip)
    run_step([uv_binary(), "pip", "install", "--python", str(python), *args], "installing the pip: list",
             env=uv_env(), log=meta / "build.log", progress=progress)
    relocate(tmp, tmp, final)  # console scripts uv wrote name the temporary path


def activate(plan: EnvRecipe, prefix: Path) -> Environment:
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
