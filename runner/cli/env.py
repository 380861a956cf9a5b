"""`mlproject env`: the environment store."""
from __future__ import annotations

import click

from runner.cli.common import (
    Group, complete_env_keys, complete_managers, debug_option, interruptible, out, project_options, say,
)

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from runner.store import StoredEnv

@click.group(cls=Group, help="manage the environment store")
def env() -> None:
    pass


def _env_prepare(uri: str, version: str | None, env_manager: str | None, build: bool) -> int:
    from runner.api import prepare_environment
    from runner.progress import Progress

    prepared = prepare_environment(uri, version, env_manager, notify=say,
                                   progress=Progress() if build else None, build=build)
    prefix = prepared.environment.prefix
    prepared.release()
    if build:
        say(f"environment ready: {prefix}" if prefix else "nothing to build (local environment)")
    if prefix:
        out(str(prefix))
    return 0


@env.command("build", help="build (or reuse) a project's environment without running it")
@project_options(with_parameters=False)
@debug_option
def env_build(uri: str, version: str | None, env_manager: str | None) -> int:
    return interruptible("env build", lambda: _env_prepare(uri, version, env_manager, build=True))


@env.command("path", help="print the path of a project's environment")
@project_options(with_parameters=False)
@debug_option
def env_path(uri: str, version: str | None, env_manager: str | None) -> int:
    return _env_prepare(uri, version, env_manager, build=False)


@env.command("list", help="environments in the store: key, manager, size, last used, project")
@debug_option
def env_list() -> int:
    from runner.envs import admin

    rows = admin.list_rows()
    if not rows:
        say("no environments yet")
        return 0
    out(f"{'KEY':<14}{'MANAGER':<12}{'SIZE':>10}  {'LAST USED':<12}PROJECT")
    for row in rows:
        out(f"{row.key[:12]:<14}{row.manager:<12}{row.size:>10}  {row.last_used:<12}{row.project}")
    return 0


@env.command("show", help="an environment's details and installed packages")
@click.argument("key", shell_complete=complete_env_keys)
@debug_option
def env_show(key: str) -> int:
    from runner.envs import admin

    out("\n".join(admin.show(key)))
    return 0


@env.command("rm", help="remove an environment (not while a run uses it)")
@click.argument("key", shell_complete=complete_env_keys)
@debug_option
def env_rm(key: str) -> int:
    from runner.envs import admin

    say(f"removed {admin.remove(key)}")
    return 0


@env.command("gc", help="remove environments unused for a while, leftovers, and stale downloads")
@click.option("--older-than", required=True, metavar="DURATION", help="30d, 12h, 45m, 30s; 0 for all unused")
@click.option("--dry-run", is_flag=True, help="print what would be removed and the space freed; remove nothing")
@debug_option
def env_gc(older_than: str, dry_run: bool) -> int:
    from runner.envs import admin

    for line in admin.gc(older_than, dry_run):
        out(line)
    return 0


@env.command("pack", help="write an environment into one archive that `env unpack` takes on another machine")
@click.argument("target", metavar="KEY|PROJECT", shell_complete=complete_env_keys)
@click.option("-o", "--output", default=None, metavar="FILE",
              help="the archive (default: <manager>-<key>.tar.zst here; a directory: that name in it)")
@click.option("-v", "--version", default=None, help="a project's git branch, tag or commit")
@click.option("--env-manager", default=None, shell_complete=complete_managers, help="a project's environment manager")
@debug_option
def env_pack(target: str, output: str | None, version: str | None, env_manager: str | None) -> int:
    from pathlib import Path

    from runner.envs import admin, pack
    from runner.progress import Progress

    def work() -> int:
        progress = Progress()
        packed = pack.pack(_to_pack(target, version, env_manager, progress), Path(output) if output else None,
                           progress=progress)
        say(f"packed {packed.name}: {packed.files} files, {admin.human_size(packed.size)} "
            f"into {admin.human_size(packed.archive_size)}")
        out(str(packed.path))
        return 0

    return interruptible("env pack", work)


def _to_pack(target: str, version: str | None, env_manager: str | None, progress) -> StoredEnv:
    """The environment whose key starts with TARGET, else the environment of the project TARGET
    names (built if it is not)."""
    from runner.api import prepare_environment
    from runner.envs import admin
    from runner.errors import UsageError

    if admin.key_to_pack(target):
        if version is not None or env_manager is not None:
            raise UsageError("-v/--version and --env-manager choose a project's environment, not a key's",
                             hint=f"mlproject env pack {target}")
        return admin.find_one(target)
    prepared = prepare_environment(target, version, env_manager, notify=say, progress=progress, build=True)
    try:
        if prepared.plan is None:
            raise UsageError("this project runs in the current environment (--env-manager local): nothing to pack",
                             hint="pack a project's uv, virtualenv or conda environment")
        return admin.find_one(prepared.plan.key)
    finally:
        prepared.release()


@env.command("unpack", help="put a packed environment into this machine's store (checked against its key)")
@click.argument("archive", type=click.Path(dir_okay=False))
@debug_option
def env_unpack(archive: str) -> int:
    from pathlib import Path

    from runner.envs import pack
    from runner.progress import Progress

    def work() -> int:
        unpacked = pack.unpack(Path(archive), progress=Progress())
        say(f"{unpacked.name} was already in the store" if unpacked.already else f"unpacked {unpacked.name}")
        out(str(unpacked.path))
        return 0

    return interruptible("env unpack", work)
