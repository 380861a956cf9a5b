"""run(): the one pipeline behind both the CLI and the Python API.

A RunRequest (the arguments of `mlflow.projects.run`) goes down these stages,
each a function below, in this order:

    submit:            check the request; plan the tracking (an mlflow import starts now)
    plan:              URI --sources.fetch--> ProjectDir --project.load--> Project
                           --params.resolve--> Invocation
    _plan_environment: --envs.plan_environment--> PlannedEnv (a conda solve happens here)
    _open_run:         --tracking--> the MLflow run and the ledger, opened together
    backend.submit:    the backend takes the run (runner.backends): the local one realizes the
                       environment and starts the command here (--> SubmittedRun --wait--> the
                       run ended, in the ledger and in tracking); a cluster one queues a job
                       that runs the runner itself on a node
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from runner.errors import RunFailedError, RunnerError, UsageError
from runner.project.params import parse_assignments, resolve
from runner.project.spec import load_project
from runner.request import ResolvedProject, PlannedRun, PreparedRun, RunRequest
from runner.sources import fetch
from runner.status import RunStatus

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping, Sequence

    from runner.envs import PlannedEnv
    from runner.launch import RunHandle
    from runner.request import Notify
    from runner.retries import RetryPolicy
    from runner.tracking.ledger import Ledger
    from runner.tracking.session import TrackedRun, TrackingTarget

__all__ = ["ResolvedProject", "RunRequest", "attach", "plan", "run", "submit"]


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
    patch: str | None = None,
) -> ResolvedProject:
    """Fetch, load and validate a project and its parameters; start nothing.

    A project fetched from the git cache is leased until `plan.source.release()`. `patch`:
    uncommitted changes (a rerun's recorded diff) applied to the checkout of `version`.
    """
    from runner.envs import choose_manager

    caller_cwd = Path(cwd).absolute() if cwd is not None else Path.cwd()
    # A relative local path is taken from the caller's directory, not the process's.
    source = fetch(uri, version, caller_cwd, notify=notify, progress=progress)
    try:
        if patch:
            from runner.sources.provenance import patched

            source = patched(source, Path(patch))
        project = load_project(source.path)
        invocation = resolve(project, entry_point, parameters, caller_cwd)
        manager = choose_manager(project, env_manager, notify)
    except BaseException:
        source.release()
        raise
    return ResolvedProject(source, project, invocation, manager)


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
    on_submitted: Callable[[RunHandle], None] | None = None,
    locked: bool = False,
    detach: bool = False,
    gpus: int = 0,
    gpu_devices: Sequence[str] | str | None = None,
    retries: int = 0,
    retry_failed: bool = False,
    tracking: str | None = None,
) -> RunHandle:
    """Run an MLflow project; the arguments are those of `mlflow.projects.run`.

    Returns a SubmittedRun. With `synchronous=True` (the default) it waits and,
    as MLflow does, raises RunFailedError if the run did not finish successfully.

    `gpus`: the run gets this many GPUs no other run holds, out of `gpu_devices` (default: those
    CUDA_VISIBLE_DEVICES or `nvidia-smi -L` name), and waits while none are free (runner.gpus).

    `retries` (synchronous runs): a run whose cluster job the infrastructure ended (a lost node,
    a preemption), or with `retry_failed` one that failed, runs again as a new run tagged
    mlproject.retry.attempt and mlproject.retry.of, up to that many times (runner.retries).

    `tracking`: "offline" records the run in this machine's offline store, for `mlproject runs
    sync` to send to its server later; "auto" (the default, or MLPROJECT_TRACKING's) does so
    when the server cannot be reached; "online" never does (runner.tracking.offline).
    """
    try:
        devices = None
        if gpus != 0 or gpu_devices is not None:  # (runner.gpus only for a run that asks for GPUs)
            from runner.gpus import check_count, parse_devices

            check_count(gpus, "gpus")
            devices = parse_devices(gpu_devices)
        request = RunRequest(uri, entry_point, version, parameters, docker_args, experiment_name, experiment_id,
                             backend, backend_config, storage_dir, synchronous, run_id, run_name, env_manager,
                             build_image, docker_auth, cwd, stream_output, locked, detach, gpus=gpus,
                             gpu_devices=devices, tracking=tracking)
        if retries or retry_failed:
            from runner.retries import RetryPolicy

            return _with_retries(request, RetryPolicy(retries, retry_failed), notify, progress, on_submitted)
        return submit_for_python(request, notify, progress, on_submitted)
    except RunnerError as exc:
        raise exc.for_python() from None


def _with_retries(request: RunRequest, policy: RetryPolicy, notify: Notify | None, progress: Notify | None,
                  on_submitted: Callable[[RunHandle], None] | None) -> RunHandle:
    """A synchronous run, submitted again as a new attempt while the policy says so."""
    from runner.retries import next_attempt

    policy.check(request.detach)
    if not request.synchronous:
        raise UsageError("retries need a synchronous run: the caller waits while the next attempt is made",
                         hint="synchronous=True (or retry from your own code with the SubmittedRun's status)")
    attempt = 1
    while True:
        try:
            return submit_for_python(request, notify, progress, on_submitted)
        except RunFailedError as failed:
            why = policy.why_again(failed.submitted_run, attempt)
            if why is None:
                raise
            attempt += 1
            (notify or _default_notify)(f"run {failed.submitted_run.run_id} failed ({why}): attempt {attempt} "
                                        f"of {policy.retries + 1}")
            request = next_attempt(request, failed.submitted_run.run_id, attempt)


def submit_for_python(request: RunRequest, notify: Notify | None = None, progress: Notify | None = None,
                      on_submitted: Callable[[RunHandle], None] | None = None) -> RunHandle:
    """An API caller's run: an asynchronous one on this machine is handed to a keeper process,
    so that it outlives the caller as under MLflow (see runner.keeper); else the pipeline here."""
    from runner import keeper

    if keeper.wanted(request):
        return keeper.hand_over(request, notify or _default_notify, progress, on_submitted)
    return submit(request, notify=notify, progress=progress, on_submitted=on_submitted)


def rerun(
    run_id: str,
    parameters: Mapping[str, Any] | None = None,
    env_manager: str | None = None,
    backend: str | None = None,
    backend_config: str | Mapping[str, Any] | None = None,
    *,
    allow_differences: bool = False,
    synchronous: bool = True,
    stream_output: bool = True,
    notify: Notify | None = None,
    progress: Notify | None = None,
) -> RunHandle:
    """Run a recorded run again (see runner.reproduce.rerun): its source at its commit with its
    uncommitted changes, its entry point and parameters (`parameters` change some), and the
    packages its environment held; a new run tagged mlproject.rerunOf in its experiment.
    What cannot be the same is reported through `notify`; when that makes it not a rerun,
    UsageError, unless `allow_differences`."""
    from dataclasses import replace

    from runner.reproduce.rerun import plan_rerun, rerun_request

    notify = notify or _default_notify
    try:
        planned = plan_rerun(run_id, parameters, env_manager, backend, backend_config)
        request = replace(rerun_request(planned, allow_differences, notify), synchronous=synchronous,
                          stream_output=stream_output)
        return submit_for_python(request, notify, progress)
    except RunnerError as exc:
        raise exc.for_python() from None


def submit(
    request: RunRequest,
    *,
    notify: Notify | None = None,
    progress: Notify | None = None,
    on_submitted: Callable[[RunHandle], None] | None = None,
) -> RunHandle:
    """The pipeline: check the request, plan the tracking, fetch and load the project, plan its
    environment, open the run, prepare, launch. Nothing is created before the run is opened,
    and from then on every way out ends it."""
    notify = notify or _default_notify
    backend, state = _prepare(request, notify, progress)
    try:
        from runner import faults

        faults.checkpoint("pipeline.submit")  # (the run is open; its backend has not taken it yet)
        return backend.submit(state, on_submitted)
    except BaseException as exc:
        _abandon(state, exc)
        raise


def submit_array(requests: list[RunRequest], *, notify: Notify | None = None, throttle: int | None = None) -> list:
    """Many runs of one cluster backend as one job array (a sweep's trials): every run goes
    through the same pipeline as `submit`, then one submission queues them all."""
    from runner import backends
    from runner.tracking.ledger import Ledger

    notify = notify or _default_notify
    prepared = []
    ledger = Ledger()  # (one connection for all: see Ledger.borrowed)
    try:
        try:
            for request in requests:
                # (The first checks the backend config against the cluster and settles what dead
                # runners left; the others, alike, take its word: 1,000 trials, 1,000 times less.)
                first = prepared[0][1] if prepared else None
                prepared.append(_prepare(request, notify, None, checked=first and first.backend_options,
                                         settle=not first, ledger=ledger.borrowed()))
        except BaseException as exc:
            for _, state in prepared:
                _abandon(state, exc)
            raise
        name = requests[0].backend
        if name not in backends.CLUSTER_BACKENDS or not (backend := backends.cluster_backend(name)).JOB_ARRAYS:
            for _, state in prepared:
                _abandon(state, UsageError("no job arrays"))
            raise UsageError(f"backend {name!r} has no job arrays")
        return backend.submit_array([state for _, state in prepared], throttle)
    finally:
        ledger.close()


def _abandon(state: PreparedRun, exc: BaseException) -> None:
    """Normally ended already (finish() is idempotent); this covers an interrupt or failure
    between the run's creation and the ledger taking over."""
    from runner import faults

    faults.checkpoint("pipeline.abandon")
    state.plan.source.release()
    _end_tracked(state.tracked, state.note, exc, state.notify)


def _prepare(request: RunRequest, notify, progress, checked: Any = None, settle: bool = True,
             ledger: Ledger | None = None):
    """Everything before the backend takes the run: (backend, PreparedRun) with the run open.
    `checked`: the backend config as an alike request's check made it (not checked again);
    `settle`: settle what dead runners left (see _open_run); `ledger`: the one to use."""
    from runner import backends
    from runner.envs import check_manager_name
    from runner.timing import Timings
    from runner.tracking.session import plan_tracking

    timings = Timings()
    check_manager_name(request.env_manager)
    tracking_mode = request.tracking_mode()
    backend = backends.get(request.backend)
    backend_options = checked if checked is not None else backend.check(parse_backend_config(request.backend_config), request)
    caller_cwd = request.caller_cwd()
    # Decided first: when the mlflow library is needed, its import runs in the
    # background while the project and environment are prepared.
    tracking = plan_tracking(caller_cwd, request.experiment_name, request.experiment_id, request.run_id,
                             request.tracking_uri, tracking_mode,
                             local=request.backend == "local" and request.job_of is None, notify=notify)
    if tracking.note:
        notify(tracking.note)
    with timings.stage("fetch"):
        the_plan = plan(request.uri, request.entry_point, request.version, request.parameters, request.env_manager,
                        caller_cwd, notify=notify, progress=progress, patch=request.patch)
    if request.logged_paths:
        from dataclasses import replace

        given = the_plan.invocation.given_paths
        kept = {name: text for name, text in request.logged_paths.items() if name in given}
        the_plan = replace(the_plan, invocation=replace(the_plan.invocation, given_paths={**given, **kept}))
    try:
        with timings.stage("solve"):
            environment = _plan_environment(request, tracking, the_plan, notify, progress)
        planned = PlannedRun(request, tracking, the_plan, notify, progress, backend_options, environment, timings)
        backend.check_plan(planned)  # what only the plan tells (its env manager), before the run exists
        with timings.stage("open"):
            state = _open_run(planned, settle, ledger)
    except BaseException:
        the_plan.source.release()  # once launched, the run's end releases it
        raise
    return backend, state


def sync_runs(to: str | None = None, run_ids: Sequence[str] = ()):
    """Send the runs recorded offline to the tracking server each was recorded for (or `to`),
    once each, as `mlproject runs sync` does; returns a SyncResult (`sent`: (ledger ID, server,
    the run's ID there); `waiting`: runs not sent yet, and why). See runner.tracking.sync."""
    from runner import backends
    from runner.tracking.ledger import Ledger
    from runner.tracking.sync import sync

    ledger = Ledger()
    try:
        backends.reconcile(ledger)  # (a run whose runner died is ended first: then it can be sent)
        return sync(ledger, to, tuple(run_ids))
    except RunnerError as exc:
        raise exc.for_python() from None
    finally:
        ledger.close()


def attach(run_id: str):
    """The run `run_id` (or its first characters), started by any process, as a SubmittedRun:
    `wait()`, `get_status()`, `cancel()`. A cluster run is followed through the ledger and its
    scheduler; a local run through the ledger (its cancel stops it through its runner)."""
    from runner import backends
    from runner.backends.cluster import ClusterRun
    from runner.tracking.ledger import Ledger
    from runner.tracking.runs import find

    ledger = Ledger()
    try:
        backends.reconcile(ledger)
        record = find(ledger, run_id)
    except RunnerError as exc:
        raise exc.for_python() from None
    finally:
        ledger.close()
    return ClusterRun(record)


def _plan_environment(request: RunRequest, tracking: TrackingTarget, the_plan: ResolvedProject, notify: Notify,
                      progress: Notify | None) -> PlannedEnv:
    """Everything about the environment that can fail before a run exists (a conda solve)."""
    from runner.envs import plan_environment, resolve_before_run
    from runner.tracking import downloads

    for warning in [*the_plan.project.warnings, *the_plan.invocation.warnings]:
        notify(f"warning: {warning}")
    environment = plan_environment(the_plan.env_manager, the_plan.project, notify, **request.env_options())
    if request.shipped_environment is None:  # (else the submit host resolved it, and built it: the job brings it)
        resolve_before_run(environment, progress)
    remote = the_plan.invocation.remote
    downloads.require(remote)
    if remote and tracking.library is None:
        from runner.tracking import BackgroundImport

        tracking.library = BackgroundImport()
    return environment


def _open_run(state: PlannedRun, settle: bool = True, ledger: Ledger | None = None) -> PreparedRun:
    """Create the run in tracking and open the ledger, settling what dead runners left (unless
    `settle` is False: the process has just done so)."""
    from runner.tracking import pending
    from runner.tracking.session import begin_tracking, project_tags

    request, source, invocation = state.request, state.plan.source, state.plan.invocation
    if request.job_of is not None:
        # The runner inside a cluster job continues the run its submitter created, tagged and
        # gave its parameters: its own view (a staged copy of the project) would be wrong.
        tags, params = {}, {}
    else:
        tags = project_tags(
            source.source_name, invocation.entry_point, state.plan.env_manager, state.environment.key,
            source.commit, source.repo_url, source.branch, source.dirty, source.branch_named, request.backend,
            request.parent_run_id,
        )
        tags.update(request.tags or {})
        params = invocation.logged
    # Before the creation is sent, a note names this attempt and the run carries it
    # as a tag: a SIGKILL anywhere from here leaves a run that can be found and ended.
    note: Path | None = None
    if state.tracking.uri is not None and request.job_of is None:
        note = pending.before_creation(tags, state.tracking.uri, request.experiment_name, request.experiment_id,
                                       request.run_id)
    try:
        created = begin_tracking(state.tracking, experiment_name=request.experiment_name,
                                 experiment_id=request.experiment_id, run_id=request.run_id, run_name=request.run_name,
                                 tags=tags, params=params, notify=state.notify)
    except BaseException as exc:
        pending.settle(note, exc)
        raise
    # While a tracking server creates the run: import and open the ledger (sqlite3 and
    # all), settle what dead runners left.
    try:
        from runner.backends import reconcile
        from runner.tracking.ledger import Ledger
        from runner.tracking.runs import reconcile as reconcile_local

        ledger = ledger or Ledger()
        # (inside a cluster job, only this host's own: the submit side follows the jobs)
        if not settle:
            orphans = []
        elif request.job_of is not None:
            orphans = reconcile_local(ledger)
        else:
            orphans = reconcile(ledger, quick_only=True, backend=request.backend)
    except BaseException as exc:
        try:
            _end_tracked(created(), note, exc, state.notify)
        except BaseException:  # noqa: BLE001 - the note stays; the next invocation ends the run
            pass
        raise
    try:
        tracked = created()
    except BaseException as exc:
        ledger.close()
        pending.settle(note, exc)
        raise
    for orphan in orphans:
        if orphan.backend == "local":
            state.notify(f"note: run {orphan.id} had lost its runner; recorded as FAILED")
        else:
            state.notify(f"note: run {orphan.id} recorded as {orphan.status}" + (f": {orphan.reason}" if orphan.reason else
                                                                                   f" (its {orphan.backend} job ended)"))
    return PreparedRun.opened(state, tracked, ledger, note)


def _end_tracked(tracked: TrackedRun, note: Path | None, exc: BaseException, notify: Notify) -> None:
    """End a run the pipeline is abandoning (FAILED, or KILLED on an interrupt). Its pending
    note goes once the end reached tracking; otherwise the note's reconcile ends it later."""
    from runner.tracking.ending import end_everywhere

    end_everywhere(None, None, tracked, RunStatus.ended_by(exc), None, None, notify,
                   note=note)


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
            f"the {planned.manager} environment of this project is not built yet (key {(planned.key or '')[:12]})",
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
    """Lock a local project's environment for each platform: conda-lock.yml next to its
    conda.yaml, or a PEP 751 pylock.toml next to its python_env.yaml."""
    from runner.platforms import platform_name

    source = fetch(uri, None, Path.cwd(), notify=notify, progress=progress)
    try:
        if source.lease is not None:
            raise UsageError("mlproject lock writes next to the env file: give a local project directory",
                             hint="clone the repository, lock it, and commit the lock file")
        project = load_project(source.path)
        chosen = list(platforms or [platform_name()])
        from runner.envs import choose_manager, manager_module

        return manager_module(choose_manager(project, None)).write_lock(project, chosen, notify, progress)
    finally:
        source.release()


def cli_parameters(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    return parse_assignments(items, "-P")
