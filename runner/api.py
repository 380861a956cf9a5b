"""run(): the one pipeline behind both the CLI and the Python API.

A RunRequest (the arguments of `mlflow.projects.run`) goes down these stages,
each a function below, in this order:

    submit:            check the request; plan the tracking (an mlflow import starts now)
    plan:              URI --sources.fetch--> ProjectDir --project.load--> Project
                           --params.resolve--> Invocation
    _plan_environment: --envs.plan_environment--> Planned (a conda solve happens here)
    _open_run:         --tracking--> the MLflow run and the ledger, opened together
    _launch:           --envs.realize--> Environment --launch.start--> SubmittedRun
                           --wait--> the run ended, in the ledger and in tracking
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from runner import home
from runner.errors import NotAvailableError, RunFailedError, RunnerError, UsageError
from runner.launch import SubmittedRun, start
from runner.project.params import Invocation, parse_assignments, resolve
from runner.project.spec import Project, load_project
from runner.sources import ProjectDir, fetch

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs ~9 ms on the warm path
    from typing import Any, Callable, Mapping

    from runner.envs import Planned
    from runner.tracking.ledger import Ledger
    from runner.tracking.session import TrackedRun, TrackingPlan

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
        manager = choose_manager(project, env_manager, notify)
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
            raise UsageError(f"-A {item!r}: expected NAME=VALUE or NAME", hint="for example -A memory=2g",
                             python_hint='for example docker_args={"memory": "2g"}')
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
        raise UsageError("--backend-config: not JSON and not a JSON file", hint='for example -c \'{"key": "value"}\'',
                         python_hint='for example backend_config={"key": "value"}') from None
    if not isinstance(parsed, dict):
        raise UsageError("--backend-config: expected a JSON object")
    return parsed


@dataclass(frozen=True)
class RunRequest:
    """What the caller asked for: the arguments of `mlflow.projects.run` and a few of ours.

    It flows through the pipeline unchanged; each stage reads what it needs."""

    uri: str = "."
    entry_point: str = "main"
    version: str | None = None
    parameters: Mapping[str, Any] | None = None
    docker_args: Mapping[str, Any] | None = None
    experiment_name: str | None = None
    experiment_id: str | None = None
    backend: str = "local"
    backend_config: str | Mapping[str, Any] | None = None
    storage_dir: str | None = None
    synchronous: bool = True
    run_id: str | None = None
    run_name: str | None = None
    env_manager: str | None = None
    build_image: bool = False
    docker_auth: Mapping[str, Any] | None = None
    cwd: str | os.PathLike[str] | None = None  # relative URIs and path parameters are taken from here
    stream_output: bool = True
    locked: bool = False  # conda: install only from a current conda-lock.yml

    def caller_cwd(self) -> Path:
        return Path(self.cwd).absolute() if self.cwd is not None else Path.cwd()

    def env_options(self) -> dict[str, Any]:
        """The options some environment managers take (see envs.plan_environment)."""
        return {"locked": self.locked, "build_image": self.build_image, "docker_args": dict(self.docker_args or {})}


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
    request = RunRequest(uri, entry_point, version, parameters, docker_args, experiment_name, experiment_id, backend,
                         backend_config, storage_dir, synchronous, run_id, run_name, env_manager, build_image,
                         docker_auth, cwd, stream_output, locked)
    try:
        return submit(request, notify=notify, progress=progress, on_submitted=on_submitted)
    except RunnerError as exc:
        raise exc.for_python() from None


@dataclass
class _Run:
    """One run on its way down the pipeline: the request and what each stage made of it."""

    request: RunRequest
    tracking: TrackingPlan
    plan: Plan
    notify: Notify
    progress: Notify | None
    environment: Planned | None = None  # decided, not built yet
    tracked: TrackedRun | None = None  # the MLflow run, once created
    ledger: Ledger | None = None
    note: Path | None = None  # names the run until the ledger has it (see tracking.pending)


def submit(
    request: RunRequest,
    *,
    notify: Notify | None = None,
    progress: Notify | None = None,
    on_submitted: Callable[[SubmittedRun], None] | None = None,
) -> SubmittedRun:
    """The pipeline: check the request, plan the tracking, fetch and load the project, plan its
    environment, open the run, prepare, launch. Nothing is created before the run is opened,
    and from then on every way out ends it."""
    from runner.envs import check_manager_name
    from runner.tracking.session import plan_tracking

    notify = notify or _default_notify
    check_manager_name(request.env_manager)
    if (request.backend or "local") not in BACKENDS:
        raise NotAvailableError(f"backend {request.backend!r} is not available", hint="use the local backend (-b local)",
                                python_hint='use the local backend (backend="local")')
    parse_backend_config(request.backend_config)
    caller_cwd = request.caller_cwd()
    # Decided first: when the mlflow library is needed, its import runs in the
    # background while the project and environment are prepared.
    tracking = plan_tracking(caller_cwd, request.experiment_name, request.experiment_id, request.run_id)
    if tracking.note:
        notify(tracking.note)
    the_plan = plan(request.uri, request.entry_point, request.version, request.parameters, request.env_manager,
                    caller_cwd, notify=notify, progress=progress)
    state = _Run(request, tracking, the_plan, notify, progress)
    try:
        _plan_environment(state)
        _open_run(state)
    except BaseException:
        the_plan.source.release()  # once launched, the run's end releases it
        raise
    try:
        return _launch(state, on_submitted)
    except BaseException as exc:
        # Normally ended already (finish() is idempotent); this covers an interrupt
        # or failure between the run's creation and the ledger taking over.
        from runner.tracking import pending

        the_plan.source.release()
        state.tracked.finish("FAILED" if isinstance(exc, Exception) else "KILLED", notify)
        pending.clear(state.note)
        raise


def _plan_environment(state: _Run) -> None:
    """Everything about the environment that can fail before a run exists (a conda solve)."""
    from runner.envs import plan_environment, resolve_before_run
    from runner.tracking import downloads

    for warning in [*state.plan.project.warnings, *state.plan.invocation.warnings]:
        state.notify(f"warning: {warning}")
    state.environment = plan_environment(state.plan.env_manager, state.plan.project, state.notify,
                                         **state.request.env_options())
    resolve_before_run(state.environment, state.progress)
    remote = state.plan.invocation.remote
    downloads.require(remote)
    if remote and state.tracking.library is None:
        from runner.tracking import BackgroundImport

        state.tracking.library = BackgroundImport()


def _open_run(state: _Run) -> None:
    """Create the run in tracking and open the ledger, settling what dead runners left."""
    from runner.tracking import ATTEMPT_TAG, pending, redact
    from runner.tracking.session import begin_tracking, project_tags

    request, source, invocation = state.request, state.plan.source, state.plan.invocation
    tags = project_tags(
        source.source_name, invocation.entry_point, state.plan.env_manager, state.environment.key,
        source.commit, source.repo_url, source.branch, source.dirty, source.branch_named,
    )
    # Before the creation is sent, a note names this attempt and the run carries it
    # as a tag: a SIGKILL anywhere from here leaves a run that can be found and ended.
    if state.tracking.uri is not None:
        from runner.tracking.common import experiment_choice

        attempt = pending.new_attempt()
        tags[ATTEMPT_TAG] = attempt
        state.note = pending.note(attempt, redact(state.tracking.uri),
                                  *experiment_choice(request.experiment_name, request.experiment_id), request.run_id)
    try:
        created = begin_tracking(state.tracking, experiment_name=request.experiment_name,
                                 experiment_id=request.experiment_id, run_id=request.run_id, run_name=request.run_name,
                                 tags=tags, params=invocation.logged)
    except BaseException as exc:
        _settle_note(state.note, exc)
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
            created().finish("FAILED" if isinstance(exc, Exception) else "KILLED", state.notify)
            pending.clear(state.note)
        except BaseException:  # noqa: BLE001 - the note stays; the next invocation ends the run
            pass
        raise
    try:
        state.tracked = created()
    except BaseException as exc:
        ledger.close()
        _settle_note(state.note, exc)
        raise
    state.ledger = ledger
    for orphan in orphans:
        state.notify(f"note: run {orphan.id} had lost its runner; recorded as FAILED")


def _settle_note(note, exc: BaseException) -> None:
    """After a failed creation: the note goes unless the server may have created the run anyway
    (sent but unanswered, or interrupted while waiting); then the next invocation ends it."""
    from runner.tracking import pending

    if isinstance(exc, Exception) and not getattr(exc, "outcome_unknown", False):
        pending.clear(note)


def _launch(state: _Run, on_submitted: Callable[[SubmittedRun], None] | None) -> SubmittedRun:
    """Record the run in the ledger, prepare its environment and inputs, start its command."""
    from runner.envs import realize
    from runner.tracking import downloads, pending, redact
    from runner.tracking.ledger import RunRecord

    the_plan, tracked, ledger, notify = state.plan, state.tracked, state.ledger, state.notify
    planned, tracking_plan, progress = state.environment, state.tracking, state.progress
    # The MLflow run ID when tracked (one ID everywhere); otherwise one of the same
    # form. A continued MLflow run (--run-id) is a new attempt in the ledger.
    run_id = (None if tracked.continued else tracked.run_id) or os.urandom(16).hex()
    run_dir = home.subdir("runs") / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    context = tracked.context
    submitted = SubmittedRun(tracked.run_id or run_id, run_dir / "output.log",
                             redact(context.tracking_uri) if context else None, context.experiment_id if context else None)
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
    pending.clear(state.note)  # the ledger has the run now
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

    inputs_dir = run_dir / "inputs"
    private = run_dir / "work"  # this run's own copy of a cached commit (see ProjectDir.private_copy)
    prepared = None
    try:
        tracked.record_start()  # a refusal here ends the run FAILED, in the ledger and in tracking
        prepared = realize(planned, progress)
        if the_plan.source.checkout is not None and prepared.environment.container is None:
            # (a container mounts the shared checkout read-only, which binds root too)
            invocation = replace(invocation, cwd=the_plan.source.private_copy(private))
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
        _remove_inputs(inputs_dir, private)
        if prepared is not None:
            prepared.release()
        if isinstance(exc, RunnerError):
            _keep_evidence(submitted, exc)
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
            _remove_inputs(inputs_dir, private)

    notify(f"=== Running command '{command}' in run with ID '{submitted.run_id}' ===")
    submitted.launching = True  # from here a cancel stops the command instead of the preparation
    try:
        start(
            submitted,
            environment.argv(command, child_env),
            invocation.cwd,
            child_env,
            echo=state.request.stream_output,
            on_started=lambda pgid: ledger.set_process(run_id, pgid),
            on_finish=on_finish,
        )
    except BaseException:
        prepared.release()
        raise
    if tracked.run_id is not None:
        # What the run's end needs (shutil, for the log artifact: ~10 ms with the archive
        # modules it loads) is imported while the command runs and this thread only waits.
        from runner.tracking import BackgroundImport

        BackgroundImport("runner.tracking.artifacts")
    if state.request.synchronous:
        if not submitted.wait():
            raise RunFailedError(
                f"run {run_id} {submitted.get_status().lower()} (exit code {submitted.exit_code})",
                submitted,
                submitted.exit_code or 1,
            )
    return submitted


def _keep_evidence(submitted: SubmittedRun, exc: RunnerError) -> None:
    """A run that failed before its command started: its error names it, and what the installer
    printed is in its log (`mlproject runs logs ID`), not only in the terminal's scrollback."""
    output = getattr(exc, "output", None) or exc.details
    if output and submitted.log_path is not None:
        with open(submitted.log_path, "a", encoding="utf-8") as log:
            log.write(f"{output.rstrip()}\nerror: {exc.message}\n")
        exc.hint = f"the full output is in the run's log: mlproject runs logs {submitted.run_id}"
    exc.message = f"run {submitted.run_id}: {exc.message}"
    exc.problems = [exc.message]


def _remove_inputs(*directories: Path) -> None:
    """Downloaded remote inputs, and a private copy of a cached checkout, live as long as their run.

    Removed by one `rm -rf`: shutil costs ~11 ms to import (it loads the archive modules), more
    than the removal of a small copy, and nothing else on this path needs it."""
    existing = [str(directory) for directory in directories if directory.exists()]
    if not existing:
        return
    from runner.subprocesses import capture

    try:
        capture(["rm", "-rf", "--", *existing])
    except OSError:  # no rm on this machine
        import shutil

        for directory in existing:
            shutil.rmtree(directory, ignore_errors=True)


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
        planned = plan_environment(choose_manager(project, env_manager, notify), project, notify)
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
    from runner.envs.conda import lock as condalock
    from runner.envs.conda import manager as conda
    from runner.envs.conda.contents import platform_name

    source = fetch(uri, None, Path.cwd(), notify=notify, progress=progress)
    try:
        if source.lease is not None:
            raise UsageError("mlproject lock writes next to conda.yaml: give a local project directory",
                             hint="clone the repository, lock it, and commit conda-lock.yml")
        project = load_project(source.path)
        plan_ = conda.plan(project, notify)
        return condalock.write(plan_.contents, list(platforms or [platform_name()]), progress)
    finally:
        source.release()


def cli_parameters(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    return parse_assignments(items, "-P")
