"""run(): the one pipeline behind both the CLI and the Python API.

    URI --sources.fetch--> ProjectDir --project.load--> Project
        --params.resolve--> Invocation --envs.plan_environment--> Planned
        --tracking--> run opened --envs.realize--> Environment
        --launch--> SubmittedRun --wait--> run ended
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from runner import home
from runner.errors import NotAvailableError, RunFailedError, UsageError
from runner.launch import SubmittedRun, start
from runner.project.params import Invocation, parse_assignments, resolve
from runner.project.spec import Project, load_project
from runner.sources import ProjectDir, fetch

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs ~9 ms on the warm path
    from typing import Any, Callable, Mapping

BACKENDS = ("local",)

Notify = "Callable[[str], None]"


@dataclass(frozen=True)
class Plan:
    """Everything decided before anything is created or started."""

    source: ProjectDir
    project: Project
    invocation: Invocation
    env_manager: str


def _default_notify(message: str) -> None:
    import logging  # only for API callers; the CLI passes its own notify

    logging.getLogger("runner").info(message)


def plan(
    uri: str,
    entry_point: str = "main",
    version: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    env_manager: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    *,
    notify: Notify | None = None,
    progress: Notify | None = None,
) -> Plan:
    """Fetch, load and validate a project and its parameters; start nothing.

    A project fetched from the git cache is leased until `plan.source.release()`.
    """
    from runner.envs import choose_manager

    caller_cwd = Path(cwd).absolute() if cwd is not None else Path.cwd()
    # A relative local path is taken from the caller's directory, not the process's.
    source = fetch(uri, version, caller_cwd, notify=notify, progress=progress)
    try:
        project = load_project(source.path)
        invocation = resolve(project, entry_point, parameters, caller_cwd)
        manager = choose_manager(project, env_manager)
    except BaseException:
        source.release()
        raise
    return Plan(source, project, invocation, manager)


def parse_docker_args(items: list[str] | tuple[str, ...] | None) -> dict[str, str | bool]:
    """`-A name=value` -> {"name": "value"}; a bare `-A name` -> {"name": True} (a flag)."""
    result: dict[str, str | bool] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not name:
            raise UsageError(f"-A {item!r}: expected NAME=VALUE or NAME", hint="for example -A memory=2g")
        result[name] = value if sep else True
    return result


def parse_backend_config(value: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, str):
        return dict(value)
    text = value
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as handle:
            text = handle.read()
    try:
        parsed = json.loads(text)
    except ValueError:
        raise UsageError("--backend-config: not JSON and not a JSON file", hint='for example -c \'{"key": "value"}\'') from None
    if not isinstance(parsed, dict):
        raise UsageError("--backend-config: expected a JSON object")
    return parsed


def run(
    uri: str = ".",
    entry_point: str = "main",
    version: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    docker_args: Mapping[str, Any] | None = None,
    experiment_name: str | None = None,
    experiment_id: str | None = None,
    backend: str = "local",
    backend_config: str | Mapping[str, Any] | None = None,
    storage_dir: str | None = None,
    synchronous: bool = True,
    run_id: str | None = None,
    run_name: str | None = None,
    env_manager: str | None = None,
    build_image: bool = False,
    docker_auth: Mapping[str, Any] | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
    stream_output: bool = True,
    notify: Notify | None = None,
    progress: Notify | None = None,
    on_submitted: Callable[[SubmittedRun], None] | None = None,
    locked: bool = False,
) -> SubmittedRun:
    """Run an MLflow project; the arguments are those of `mlflow.projects.run`.

    Returns a SubmittedRun. With `synchronous=True` (the default) it waits and,
    as MLflow does, raises RunFailedError if the run did not finish successfully.
    """
    from runner.envs import check_manager_name
    from runner.tracking.session import plan_tracking

    notify = notify or _default_notify
    check_manager_name(env_manager)
    backend = backend or "local"
    if backend not in BACKENDS:
        raise NotAvailableError(f"backend {backend!r} is not available", hint="use the local backend (-b local)")
    parse_backend_config(backend_config)
    caller_cwd = Path(cwd).absolute() if cwd is not None else Path.cwd()
    # Decided first: when the mlflow library is needed, its import runs in the
    # background while the project and environment are prepared.
    tracking_plan = plan_tracking(caller_cwd, experiment_name, experiment_id, run_id)
    if tracking_plan.note:
        notify(tracking_plan.note)

    the_plan = plan(uri, entry_point, version, parameters, env_manager, caller_cwd, notify=notify, progress=progress)
    try:
        env_options = {"locked": locked, "build_image": build_image, "docker_args": dict(docker_args or {})}
        return _track_and_launch(the_plan, tracking_plan, experiment_name, experiment_id, run_id, run_name, synchronous,
                                 stream_output, notify, progress, on_submitted, env_options)
    except BaseException:
        the_plan.source.release()  # once launched, the run's end releases it
        raise


def _track_and_launch(the_plan: Plan, tracking_plan, experiment_name, experiment_id, run_id, run_name, synchronous,
                      stream_output, notify, progress, on_submitted, env_options) -> SubmittedRun:
    from runner.envs import plan_environment, resolve_before_run
    from runner.tracking.session import begin_tracking, project_tags

    for warning in the_plan.project.warnings:
        notify(f"warning: {warning}")
    planned = plan_environment(the_plan.env_manager, the_plan.project, notify, **env_options)
    resolve_before_run(planned, progress)
    invocation = the_plan.invocation
    from runner.tracking import downloads

    downloads.require(invocation.remote)
    if invocation.remote and tracking_plan.library is None:
        from runner.tracking import BackgroundImport

        tracking_plan.library = BackgroundImport()
    source = the_plan.source
    tags = project_tags(
        source.source_name, invocation.entry_point, the_plan.env_manager, planned.key,
        source.commit, source.repo_url, source.branch, source.dirty,
    )
    from runner.tracking import ATTEMPT_TAG, pending, redact

    # Before the creation is sent, a note names this attempt and the run carries it
    # as a tag: a SIGKILL anywhere from here leaves a run that can be found and ended.
    note = None
    if tracking_plan.uri is not None:
        from runner.tracking.common import experiment_choice

        attempt = pending.new_attempt()
        tags[ATTEMPT_TAG] = attempt
        note = pending.note(attempt, redact(tracking_plan.uri), *experiment_choice(experiment_name, experiment_id), run_id)
    try:
        created = begin_tracking(tracking_plan, experiment_name=experiment_name, experiment_id=experiment_id, run_id=run_id,
                                 run_name=run_name, tags=tags, params={**invocation.texts, **invocation.extra})
    except BaseException as exc:
        _settle_note(note, exc)
        raise
    # While a tracking server creates the run: import and open the ledger (sqlite3 and
    # all), settle what dead runners left.
    try:
        from runner.tracking.ledger import Ledger
        from runner.tracking.runs import reconcile

        ledger = Ledger()
        orphans = reconcile(ledger)
    except BaseException as exc:
        try:
            created().finish("FAILED" if isinstance(exc, Exception) else "KILLED", notify)
            pending.clear(note)
        except BaseException:  # noqa: BLE001 - the note stays; the next invocation ends the run
            pass
        raise
    try:
        tracked = created()
    except BaseException as exc:
        ledger.close()
        _settle_note(note, exc)
        raise
    for orphan in orphans:
        notify(f"note: run {orphan.id} had lost its runner; recorded as FAILED")
    try:
        return _launch(the_plan, planned, tracked, tracking_plan, ledger, synchronous, stream_output, notify, progress,
                       on_submitted, note)
    except BaseException as exc:
        # Normally ended already (finish() is idempotent); this covers an interrupt
        # or failure between the run's creation and the ledger taking over.
        tracked.finish("FAILED" if isinstance(exc, Exception) else "KILLED", notify)
        pending.clear(note)
        raise


def _settle_note(note, exc: BaseException) -> None:
    """After a failed creation: the note goes unless the server may have created the run anyway
    (sent but unanswered, or interrupted while waiting); then the next invocation ends it."""
    from runner.tracking import pending

    if isinstance(exc, Exception) and not getattr(exc, "outcome_unknown", False):
        pending.clear(note)


def _launch(the_plan: Plan, planned, tracked, tracking_plan, ledger, synchronous: bool, stream_output: bool, notify,
            progress, on_submitted, note) -> SubmittedRun:
    from runner.envs import realize
    from runner.errors import RunnerError
    from runner.tracking import redact
    from runner.tracking.ledger import RunRecord

    # The MLflow run ID when tracked (one ID everywhere); otherwise one of the same
    # form. A continued MLflow run (--run-id) is a new attempt in the ledger.
    run_id = (None if tracked.continued else tracked.run_id) or os.urandom(16).hex()
    run_dir = home.subdir("runs") / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    submitted = SubmittedRun(tracked.run_id or run_id, run_dir / "output.log")
    if on_submitted is not None:
        on_submitted(submitted)  # from here on a cancel request stops the run, even mid-start

    invocation = the_plan.invocation
    command = invocation.command
    ledger.start(
        RunRecord(
            id=run_id,
            project_uri=the_plan.source.uri,
            project_dir=str(the_plan.project.directory),
            entry_point=invocation.entry_point,
            command=command,
            env_manager=the_plan.env_manager,
            env_key=planned.key,
            log_path=str(submitted.log_path),
            parameters={**invocation.texts, **invocation.extra},
            git_commit=the_plan.source.commit,
            tracking_run_id=tracked.run_id,
            tracking_uri=redact(tracking_plan.uri) if tracked.run_id else None,
        )
    )
    from runner.tracking import pending

    pending.clear(note)  # the ledger has the run now
    tracked.artifacts.append((submitted.log_path, None))

    def end(status: str, exit_code: int | None, reason: str | None) -> None:
        # The ledger first: the outcome is never lost, even if tracking is down. Until
        # the row says the MLflow run was ended, a later invocation will end it there.
        try:
            ledger.finish(run_id, status, exit_code, reason)
        finally:
            try:
                tracked.finish(status, notify)
                if tracked.end_recorded:
                    ledger.tracking_ended(run_id)
            finally:
                ledger.close()

    from runner.tracking import downloads

    inputs_dir = run_dir / "inputs"
    prepared = None
    try:
        tracked.record_start()  # a refusal here ends the run FAILED, in the ledger and in tracking
        prepared = realize(planned, progress)
        if invocation.remote:
            local = downloads.download(invocation.remote, inputs_dir, tracking_plan.uri, tracking_plan.library)
            invocation = invocation.localize(the_plan.project.entry_point(invocation.entry_point), local)
            command = invocation.command
        if prepared.environment.run_tags:
            tracked.set_tags(dict(prepared.environment.run_tags))
    except BaseException as exc:
        interrupted = not isinstance(exc, Exception)
        reason = exc.message if isinstance(exc, RunnerError) else f"{exc.__class__.__name__}: {exc}"
        end("KILLED" if interrupted else "FAILED", None, f"preparation: {reason}")
        _remove_inputs(inputs_dir)
        if prepared is not None:
            prepared.release()
        raise
    environment = prepared.environment
    if environment.prefix is not None:
        tracked.artifacts.append((environment.prefix / ".mlproject" / "packages.txt", "environment"))

    child_env = environment.apply(os.environ)
    child_env.update(tracked.child_env())
    if tracked.context is not None and tracked.context.artifact_uri:
        # Where the run's artifacts go: a container must be able to write there too.
        child_env["MLPROJECT_ARTIFACT_URI"] = tracked.context.artifact_uri
    # Output goes through a pipe to be teed; keep Python children streaming live.
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    # Lets a later invocation recognise this run's processes if the runner dies.
    child_env["MLPROJECT_RUN_ID"] = run_id

    def on_finish(outcome) -> None:
        try:
            reason = f"stopped by signal {submitted.cancel_signal}" if outcome.status == "KILLED" else None
            end(outcome.status, outcome.exit_code, reason)
        finally:
            if environment.container is not None:  # gone even if its launcher was killed
                environment.container.cleanup(run_id)
            prepared.release()
            the_plan.source.release()
            _remove_inputs(inputs_dir)

    notify(f"=== Running command '{command}' in run with ID '{submitted.run_id}' ===")
    submitted.launching = True  # from here a cancel stops the command instead of the preparation
    try:
        start(
            submitted,
            environment.argv(command, child_env),
            invocation.cwd,
            child_env,
            echo=stream_output,
            on_started=lambda pgid: ledger.set_process(run_id, pgid),
            on_finish=on_finish,
        )
    except BaseException:
        prepared.release()
        raise
    if synchronous:
        if not submitted.wait():
            raise RunFailedError(
                f"run {run_id} {submitted.get_status().lower()} (exit code {submitted.exit_code})",
                submitted,
                submitted.exit_code or 1,
            )
    return submitted


def _remove_inputs(inputs_dir: Path) -> None:
    """Downloaded remote inputs live as long as their run."""
    if inputs_dir.exists():
        import shutil

        shutil.rmtree(inputs_dir, ignore_errors=True)


def prepare_environment(
    uri: str,
    version: str | None = None,
    env_manager: str | None = None,
    *,
    notify: Notify | None = None,
    progress: Notify | None = None,
    build: bool = True,
):
    """Build (or with build=False, only find) a project's environment; returns a Prepared
    whose lease the caller releases. Used by `mlproject env build|path`."""
    from runner.envs import check_manager_name, choose_manager, existing, plan_environment, realize
    from runner.errors import EnvironmentBuildError

    check_manager_name(env_manager)
    source = fetch(uri, version, Path.cwd(), notify=notify, progress=progress)
    try:
        project = load_project(source.path)
        planned = plan_environment(choose_manager(project, env_manager), project, notify)
    finally:
        source.release()  # the environment does not need the project's files once planned
    if build:
        return realize(planned, progress)
    found = existing(planned)
    if found is None:
        raise EnvironmentBuildError(
            f"the {planned.manager} environment of this project is not built yet (key {planned.key[:12]})",
            hint=f"build it with `mlproject env build {uri}`",
        )
    return found


def lock(
    uri: str,
    platforms: list[str] | tuple[str, ...] | None = None,
    *,
    notify: Notify | None = None,
    progress: Notify | None = None,
) -> Path:
    """Solve a conda project for each platform and write conda-lock.yml next to its conda.yaml."""
    from runner.envs import conda, condalock

    source = fetch(uri, None, Path.cwd(), notify=notify, progress=progress)
    try:
        if source.lease is not None:
            raise UsageError("mlproject lock writes next to conda.yaml: give a local project directory",
                             hint="clone the repository, lock it, and commit conda-lock.yml")
        project = load_project(source.path)
        plan_ = conda.plan(project, notify)
        return condalock.write(plan_.contents, list(platforms or [conda.platform_name()]), progress)
    finally:
        source.release()


def cli_parameters(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    return parse_assignments(items, "-P")
