"""`mlproject validate` and `mlproject lock`: a project checked, its environment locked; nothing run."""
from __future__ import annotations

import sys

import click

from runner.cli.common import complete_dirs, debug_option, out, project_options, say
from runner.errors import EXIT_USAGE

@click.command(help="check a project and its parameters; start nothing")
@project_options()
@click.option("--resolve", "resolve_environment", is_flag=True,
              help="also resolve the environment (pip requirements, conda specs) without building it")
@click.option("--locked", is_flag=True, help="check that the lock (pylock.toml, conda-lock.yml) is current, as run --locked")
@debug_option
def validate(uri: str, entry_point: str, param_list: tuple[str, ...], version: str | None, env_manager: str | None,
             resolve_environment: bool, locked: bool) -> int:
    from runner import api
    from runner.progress import Progress
    from runner.validate import report

    lines, problems = report(uri, entry_point, version, api.cli_parameters(param_list), env_manager,
                             resolve_environment, Progress() if resolve_environment else None, locked=locked)
    for line in lines:
        out(line)
    for problem in problems:
        sys.stderr.write(f"error: {problem}\n")
    if problems:
        counted = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        sys.stderr.write(f"hint: {counted} above; fix them and validate again\n")
    return EXIT_USAGE if problems else 0


@click.command(help="lock a project's environment: pylock.toml next to python_env.yaml, conda-lock.yml next to conda.yaml",
             short_help="lock a project's environment (pylock.toml, conda-lock.yml)")
@click.argument("uri", shell_complete=complete_dirs)
@click.option("--platform", "platforms", multiple=True, metavar="PLATFORM",
              help="linux-64, linux-aarch64, osx-64, osx-arm64, win-64 (repeatable; default: this machine's)")
@debug_option
def lock(uri: str, platforms: tuple[str, ...]) -> int:
    from runner import api
    from runner.progress import Progress

    path = api.lock(uri, list(platforms), notify=say, progress=Progress())
    say(f"wrote {path}")
    return 0
