"""`mlproject validate`: every check a run makes before it starts, and a report."""
from __future__ import annotations

from pathlib import Path

from runner.errors import RunnerError
from runner.project.params import check_command, convert, resolve

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Mapping

    from runner.sources import ProjectDir


def report(
    uri: str,
    entry_point: str,
    version: str | None,
    parameters: Mapping[str, str],
    env_manager: str | None,
    resolve_environment: bool = False,
    progress=None,
    *,
    locked: bool = False,
) -> tuple[list[str], list[str]]:
    """(lines describing what would run, problems found). Creates and starts nothing; with
    `resolve_environment`, the environment is also resolved (not built)."""
    from runner.sources import fetch

    try:
        source = fetch(uri, version, Path.cwd())
    except RunnerError as exc:
        return [], list(exc.problems)
    try:
        return _report(source, entry_point, parameters, env_manager, resolve_environment, progress, locked)
    finally:
        source.release()


def _report(
    source: ProjectDir, entry_point: str, parameters: Mapping[str, str], env_manager: str | None,
    resolve_environment: bool = False, progress=None, locked: bool = False,
) -> tuple[list[str], list[str]]:
    from runner.envs import choose_manager, manager_module, plan_environment
    from runner.project.envfiles import load_env_file
    from runner.project.spec import load_project

    lines: list[str] = []
    problems: list[str] = []
    try:
        project = load_project(source.path)
    except RunnerError as exc:
        return lines, list(exc.problems)
    if source.commit:
        lines.append(f"source: {source.uri} at {source.commit[:12]}" + (" (uncommitted changes)" if source.dirty else ""))
    lines.append(f"project: {project.directory}" + (f" ({project.name})" if project.name else ""))
    lines.extend(f"warning: {w}" for w in project.warnings)
    for entry in project.entry_points.values():
        problems.extend(check_command(entry))
        for param in entry.parameters.values():
            if param.default is None or param.type in ("path", "uri"):
                continue
            try:
                convert(param.type, param.default, project.directory, project.directory)
            except ValueError as exc:
                problems.append(f"entry point {entry.name!r}: parameter {param.name!r}: default {param.default!r} {exc}")
    if project.env.path is not None:
        try:
            load_env_file(project.env.kind, project.env.path)
        except RunnerError as exc:
            problems.extend(exc.problems)
    try:
        # The project is fetched and loaded once, above; the rest of api.plan() from here.
        invocation = resolve(project, entry_point, parameters, Path.cwd())
        manager = choose_manager(project, env_manager)
        lines.extend(f"warning: {w}" for w in invocation.warnings)
        lines.append(f"entry point: {invocation.entry_point}")
        lines.append(f"command: {invocation.command}")
        lines.append(f"environment: {project.env.describe(project.directory)}")
        lines.append(f"env manager: {manager}")
        planned = None
        try:
            lines.append(f"  {manager_module(manager).describe(project)}")
            # Planned as a run plans it: a stale lock is a warning, and under --locked an error.
            said: list[str] = []
            planned = plan_environment(manager, project, notify=said.append, locked=locked)
            lines.extend(line for line in said if line not in lines)
        except RunnerError as exc:
            problems.append(exc.message)
        if resolve_environment and planned is not None:
            problems.extend(_resolve(planned, progress, lines))
    except RunnerError as exc:
        problems.extend(exc.problems)
    return lines, list(dict.fromkeys(problems))


def _resolve(planned, progress, lines: list[str]) -> list[str]:
    from runner.envs import check_resolves

    try:
        check_resolves(planned, progress)
    except RunnerError as exc:
        if exc.details:
            lines.extend(f"  | {line}" for line in exc.details.splitlines())
        return [exc.message]
    lines.append("environment: resolves")
    return []
