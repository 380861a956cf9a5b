"""`mlproject env`: the environment store."""
from __future__ import annotations

import click

from runner.cli.common import Group, complete_env_keys, debug_option, out, project_options, say

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
    return _env_prepare(uri, version, env_manager, build=True)


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
