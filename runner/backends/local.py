"""The local backend: the run's command starts here, as a child of this process (see runner.launch).

Also the second half of every cluster job: the runner inside the job is a local run of
the row its submitter wrote (`RunRequest.job_of`)."""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

from runner import home
from runner.errors import RunFailedError, RunnerError, UsageError
from runner.launch import SubmittedRun, start
from runner.sources import provenance
from runner.status import RunStatus

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Callable

    from runner.envs.base import EnvManager
    from runner.request import PlannedRun, PreparedRun, RunRequest
    from runner.timing import Timings
    from runner.tracking.ledger import Ledger
    from runner.tracking.session import TrackedRun


def check(config: dict, request: RunRequest) -> None:
    if config:
        raise UsageError(f"the local backend takes no backend config (got {', '.join(sorted(config))})",
                         hint="leave out -c/--backend-config, or choose a cluster backend with -b",
                         python_hint="leave out backend_config, or choose a cluster backend with backend=")
    if request.detach:
        raise UsageError("--detach is for cluster backends (-b slurm); a local run ends with its runner",
                         hint="run it in the background with your shell (&, nohup, tmux) instead",
                         python_hint="use synchronous=False and keep the process alive")
    if request.gpus and request.job_of is None:
        from runner.gpus import GpuRequest

        GpuRequest(request.gpus, request.gpu_devices).pool()  # (enough devices, before the run exists)


def check_plan(state: PlannedRun) -> None:
    """Any plan runs here."""


def submit(state: PreparedRun, on_submitted: Callable[[SubmittedRun], None] | None) -> SubmittedRun:
    """Record the run in the ledger, prepare its environment and inputs, start its command here."""
    from runner import faults
    from runner.envs import realize, unpack_shipped
    from runner.tracking import downloads, pending, redact
    from runner.tracking.ending import end_everywhere

    the_plan, tracked, ledger, notify = state.plan, state.tracked, state.ledger, state.notify
    planned, tracking_plan, progress, timings = state.environment, state.tracking, state.progress, state.timings
    job_of = state.request.job_of
    run_id = state.ledger_id()
    run_dir = home.subdir("runs") / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    context = tracked.context
    log_path = run_dir / "output.log"
    submitted = SubmittedRun(tracked.run_id or run_id, log_path,
                             redact(context.tracking_uri) if context else None, context.experiment_id if context else None)
    submitted.ledger_id = run_id
    if on_submitted is not None:
        on_submitted(submitted)  # from here on a cancel request stops the run, even mid-start

    def end(status: str, exit_code: int | None, reason: str | None) -> None:
        if job_of is not None:
            from runner.backends.job import cluster_verdict

            status, reason = cluster_verdict(job_of, status, reason)
        try:
            if status == RunStatus.SCHEDULED:  # (requeued by its cluster: not ended)
                from runner.backends.job import requeued

                requeued(ledger, run_id, tracked, reason, notify)
            else:
                end_everywhere(ledger, run_id, tracked, status, exit_code, reason, notify)
        finally:
            ledger.close()

    invocation = the_plan.invocation
    command = invocation.command
    if job_of is not None:  # the runner inside a cluster job: its submitter's row
        from runner.backends.job import take_over

        take_over(state, run_id, log_path)

    inputs_dir = run_dir / "inputs"
    private = run_dir / "work"  # this run's own copy of a cached commit (see ProjectDir.private_copy)
    prepared = None
    devices = None  # the GPUs leased to the run (runner.gpus), if it asked for some

    def abandon(exc: BaseException, stage: str) -> None:
        """The run ends before its command started: KILLED on a signal, FAILED on an error."""
        reason = exc.message if isinstance(exc, RunnerError) else f"{exc.__class__.__name__}: {exc}"
        _keep_timings(timings, tracked, run_dir)  # (where the time went up to the failure)
        try:
            end(RunStatus.ended_by(exc), None, f"{stage}: {reason}")
        finally:
            _remove_inputs(inputs_dir, private)
            if prepared is not None:
                prepared.release()
            if devices is not None:
                devices.release()

    try:
        # (Inside the try: an interrupt landing just after the row is written ends it KILLED.)
        if job_of is None:
            state.keep_source_state(run_dir)
            ledger.start(state.ledger_record(run_id, log_path))
            faults.checkpoint("ledger.started")
        pending.clear(state.note)  # the ledger has the run now
        tracked.artifacts.append((log_path, None))
        tracked.artifacts.extend(provenance.artifacts(run_dir))  # (a cluster job's were kept at submission)
        tracked.record_start()  # a refusal here ends the run FAILED, in the ledger and in tracking
        if state.request.shipped_environment is not None:  # (a cluster job: built once, on the submit host)
            unpacking = time.monotonic()
            if unpack_shipped(planned, Path(state.request.shipped_environment), progress, notify):
                timings.record("unpack", time.monotonic() - unpacking)
        with timings.stage("build"):
            prepared = realize(planned, progress)
        if the_plan.source.checkout is not None and prepared.environment.container is None:
            # (a container mounts the shared checkout read-only, which binds root too)
            invocation = replace(invocation, cwd=the_plan.source.private_copy(private))
        if invocation.remote:
            with timings.stage("download"):
                local = downloads.download(invocation.remote, inputs_dir, tracking_plan.uri, tracking_plan.library)
            invocation = invocation.localize(the_plan.project.entry_point(invocation.entry_point), local)
            command = invocation.command
        if prepared.environment.run_tags:
            tracked.set_tags(dict(prepared.environment.run_tags))
        environment = prepared.environment
        if environment.prefix is not None:
            tracked.artifacts.append((environment.prefix / ".mlproject" / "packages.txt", "environment"))
            tracked.artifacts.extend(_keep_environment_lock(planned.module, environment.prefix, run_dir))

        child_env = environment.apply(os.environ)
        child_env.update(tracked.child_env())
        if state.request.gpus and job_of is None:  # (on a cluster, its scheduler hands them out)
            with timings.stage("gpus"):
                devices = _lease_devices(state, submitted, tracked)
            if devices is not None:
                child_env.update(devices.env())
        if tracked.context is not None and tracked.context.artifact_uri:
            # Where the run's artifacts go: a container must be able to write there too.
            child_env["MLPROJECT_ARTIFACT_URI"] = tracked.context.artifact_uri
        # Output goes through a pipe to be teed; keep Python children streaming live.
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        # Lets a later invocation recognise this run's processes if the runner dies.
        child_env["MLPROJECT_RUN_ID"] = run_id
        argv = environment.argv(command, child_env)

        if tracked.context is not None:  # listed until delivered: a runner killed from here on loses none
            from runner.tracking import undelivered

            tracked.undelivered = run_dir / undelivered.FILE_NAME
            undelivered.keep(tracked.undelivered, tracked.context.artifact_uri, tracked.artifacts)
        notify(f"=== Running command '{command}' in run with ID '{submitted.run_id}' ===")
        faults.checkpoint("local.launching")  # (all is ready; the command is not started yet)
        submitted.launching = True  # from here a cancel stops the command instead of the preparation
    except BaseException as exc:
        # Everything from the ledger's row to here: any way out (an error, or a signal that
        # lands while the environment is built or the command line is made) ends the run.
        abandon(exc, "preparation")
        if isinstance(exc, RunnerError):
            _keep_evidence(submitted, exc)
        raise

    def on_finish(outcome) -> None:
        try:
            reason = f"stopped by signal {submitted.cancel_signal}" if outcome.status == RunStatus.KILLED else None
            end(outcome.status, outcome.exit_code, reason)
        finally:
            if environment.container is not None:  # gone even if its launcher was killed
                environment.container.cleanup(run_id, launcher_killed=outcome.exit_code == 128 + 9)
            prepared.release()
            the_plan.source.release()
            _remove_inputs(inputs_dir, private)
            if devices is not None:
                devices.release()

    try:
        start(
            submitted,
            argv,
            invocation.cwd,
            child_env,
            echo=state.request.stream_output,
            on_started=lambda pgid: _started(pgid, ledger, run_id, run_dir, timings, tracked),
            on_finish=on_finish,
            guarded=job_of is not None,  # a cluster may kill this runner outright (see launch.py)
        )
    except BaseException as exc:
        if not submitted.started and not submitted.done:
            # Out of start() before the command existed (start ends the run itself when the
            # command cannot start; once it exists its watcher does): the run still ends.
            abandon(exc, "launch")
        else:
            prepared.release()
            if devices is not None:
                devices.release()
        raise
    if tracked.run_id is not None:
        # What the run's end needs (the artifact upload's modules) is imported while the
        # command runs and this thread only waits.
        from runner.tracking import BackgroundImport

        BackgroundImport("runner.tracking.artifacts")
    if state.request.synchronous:
        if not submitted.wait():
            raise RunFailedError(submitted)
    return submitted


def _started(pgid: int, ledger: Ledger, run_id: str, run_dir: Path, timings: Timings, tracked: TrackedRun) -> None:
    """The command's process exists: its group in the ledger, and the cold start's timings kept
    with the run and sent with its end (runner.timing)."""
    ledger.set_process(run_id, pgid)
    timings.command_started()
    _keep_timings(timings, tracked, run_dir)


def _keep_timings(timings: Timings, tracked: TrackedRun, run_dir: Path) -> None:
    """The stages so far, for the run's end to send as tags and for `runs show` to read."""
    tracked.end_tags.update(timings.tags())
    timings.write(run_dir)


def _lease_devices(state: PreparedRun, submitted: SubmittedRun, tracked):
    """The run's own GPUs, waited for while other runs hold them; None if it was cancelled
    meanwhile (start() then starts nothing and ends it KILLED)."""
    from runner import gpus

    request = gpus.GpuRequest(state.request.gpus, state.request.gpu_devices)
    leased = gpus.lease(request, cancelled=lambda: submitted.cancel_signal is not None, on_wait=state.notify)
    if leased is not None:
        tracked.set_tags({gpus.TAG: ",".join(leased.devices)})
    return leased


def _keep_environment_lock(manager: EnvManager, prefix: Path, run_dir: Path) -> list[tuple[Path, str]]:
    """The environment's own lock (what it holds, in its manager's lock form), kept in the
    run's directory too: the environment may be removed before a rerun wants it."""
    from runner.store import META_DIR

    if manager.LOCK_NAME is None:
        return []
    lock = prefix / META_DIR / manager.LOCK_NAME
    if not lock.is_file():
        return []
    copy = run_dir / "environment" / manager.LOCK_NAME
    copy.parent.mkdir(exist_ok=True)
    copy.write_bytes(lock.read_bytes())
    return [(copy, "environment")]


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
    """Downloaded remote inputs, and a private copy of a cached checkout, live as long as their run."""
    import shutil

    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)
