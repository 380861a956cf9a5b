"""`mlproject run` and `mlproject rerun` (and `job`, the runner inside a cluster job): one request,
submitted and followed to its end; the exit code says how it ended."""
from __future__ import annotations

import os
import signal
import sys

import click

from runner import startup
from runner.cli.common import (
    BACKEND_CONFIG_HELP, ENV_MANAGERS, Interrupted, complete_run_ids, debug_option, out, project_options, say,
    retry_options, where_options,
)
from runner.status import RunStatus

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, Callable

    from runner.retries import RetryPolicy

@click.command(help="run a project (same flags as `mlflow run`)")
@project_options()
@click.option("-A", "--docker-args", multiple=True, metavar="NAME[=VALUE]", help="extra `docker run` option")
@where_options
@click.option("--detach", is_flag=True, help="cluster backends: return once the job is queued")
@click.option("--storage-dir", default=None, help="where remote path parameters are downloaded")
@click.option("--run-id", default=None, help="continue this existing MLflow run")
@click.option("--run-name", default=None, help="the MLflow run's name (default: a generated one)")
@click.option("--build-image", is_flag=True, help="docker: bake the project into an image")
@click.option("--locked", is_flag=True, help="install only from a current lock (pylock.toml or conda-lock.yml)")
@click.option("--gpus", "gpu_devices", default=None, metavar="LIST",
              help="the GPUs to choose from, e.g. 0,1 (default: CUDA_VISIBLE_DEVICES's or nvidia-smi's)")
@click.option("--gpus-per-run", "gpus", type=int, default=None, metavar="K",
              help="the run gets K GPUs no other run holds, waiting while none are free (default: 1 with --gpus)")
@retry_options
@click.option("--no-conda", is_flag=True, hidden=True)  # MLflow 1.x; the tutorials still use it
@debug_option
def run(uri: str, entry_point: str, param_list: tuple[str, ...], version: str | None, env_manager: str | None,
        docker_args: tuple[str, ...], experiment_name: str | None, experiment_id: str | None, backend: str,
        backend_config: str | None, storage_dir: str | None, run_id: str | None, run_name: str | None,
        build_image: bool, locked: bool, no_conda: bool, detach: bool, gpu_devices: str | None,
        gpus: int | None, retries: int | None, retry_failed: bool | None, tracking: str | None) -> int:
    from runner import api
    from runner.retries import RetryPolicy

    if no_conda:
        if env_manager not in (None, "local"):
            raise click.UsageError(f"--no-conda means --env-manager local; it cannot be given with --env-manager {env_manager}")
        say("note: --no-conda (MLflow 1.x) is taken as --env-manager local")
        env_manager = "local"
    request = api.RunRequest(
        uri,
        entry_point=entry_point,
        version=version,
        parameters=api.cli_parameters(param_list),
        docker_args=api.parse_docker_args(docker_args),
        experiment_name=experiment_name,
        experiment_id=experiment_id,
        backend=backend,
        backend_config=backend_config,
        storage_dir=storage_dir,
        synchronous=False,
        run_id=run_id,
        run_name=run_name,
        env_manager=env_manager,
        build_image=build_image,
        locked=locked,
        detach=detach,
        tracking=tracking,
    )
    if gpus is not None or gpu_devices is not None:  # (runner.gpus only for a run that asks for GPUs)
        from dataclasses import replace

        from runner.gpus import count_given, parse_devices

        devices = parse_devices(gpu_devices)
        request = replace(request, gpus=count_given(gpus, devices, "--gpus-per-run"), gpu_devices=devices)
    return run_request(request, policy=RetryPolicy(retries or 0, bool(retry_failed)))


@click.command(hidden=True, help="(internal) the runner inside a cluster job: carry out a submitted request")
@click.argument("request_file", type=click.Path(dir_okay=False), required=False)
@click.option("--from-env", is_flag=True, help="the request is in MLPROJECT_JOB_REQUEST (Ray jobs)")
@debug_option
def job(request_file: str | None, from_env: bool) -> int:
    from runner.backends.job import MARK_VARIABLE, JobRequest

    requests = JobRequest.load(request_file, from_env)
    mark = os.environ.pop(MARK_VARIABLE, None) if from_env else None  # (a Ray job carrying several runs)
    if mark is not None or any(request.output is not None for request in requests):  # (or an array task's)
        from runner.cli.carry import carry

        return carry(requests, mark)
    return run_request(requests[0].run_request(), in_job=True)


def run_request(request, in_job: bool = False, policy: RetryPolicy | None = None, heard: list[int] | None = None,
                watch: Callable[[Any], None] | None = None) -> int:
    """Submit a request and follow it to its end (or, detached, to its queueing): the exit code.
    With a retry policy, a run the infrastructure ended is submitted again (runner.retries).
    `heard`: every interrupting signal received is added to it; `watch` is called with the run's
    handle about every 0.25 s while it runs (a carrier's, see runner.cli.carry)."""
    from runner import api
    from runner.progress import Progress
    from runner.retries import RetryPolicy, next_attempt

    policy = policy or RetryPolicy()
    policy.check(request.detach)
    active = []  # the SubmittedRun of each attempt, once it exists
    received: list[int] = []
    abandoning: list[int] = []  # the signal that abandoned the preparation
    retrying: list[bool] = []  # an attempt ended and the next is being prepared

    def on_signal(signum: int, _frame) -> None:
        if heard is not None:
            heard.append(signum)
        current = active[-1] if active else None
        if current is not None and current.done and not retrying:
            return  # the run has ended and its end is recorded: nothing left to stop
        received.append(signum)
        if current is not None and not current.done and current.launching:
            run_id = current.run_id
            # os.write: the main thread may be inside a write to sys.stderr right now.
            if len(received) == 1:
                again = "" if in_job else " (Ctrl-C again to kill now)"  # (a job is stopped by its cluster)
                os.write(2, f"stopping run {run_id}{again}\n".encode())
            elif len(received) == 2:
                os.write(2, f"killing run {run_id} now\n".encode())
            current.request_cancel(signum)
        elif not abandoning:
            abandoning.append(signum)
            raise Interrupted(signum)  # the command has not started: abandon the preparation
        # (else: the preparation is being abandoned; another signal would cut its cleanup short)


    try:
        # (Inside the `try`: the first handler set may raise before the others are.)
        for signum in startup.INTERRUPT_SIGNALS:
            signal.signal(signum, startup.where_safe(on_signal))
        # A resized window reaches the command's terminal (see runner.launch).
        signal.signal(signal.SIGWINCH, lambda _signum, _frame: active[-1].sync_window_size() if active else None)
        attempt = 1
        while True:
            submitted = api.submit(request, notify=say, progress=Progress(), on_submitted=active.append)
            retrying.clear()
            if request.detach:
                out(f"{submitted.run_id} {submitted.backend} job {submitted.job_id}")
                say(f"follow it with: mlproject runs logs {submitted.run_id} -f")
                return 0
            while not submitted.done:
                submitted.wait(0.25)
                if watch is not None and not submitted.done:
                    watch(submitted)
            why = None if received or submitted.end_error else policy.why_again(submitted, attempt)
            if why is None:
                break
            retrying.append(True)  # (a signal from here abandons the next attempt's preparation)
            attempt += 1
            say(f"run {submitted.run_id} failed ({why}): attempt {attempt} of {policy.retries + 1}")
            request = next_attempt(request, submitted.run_id, attempt)
    except Interrupted as interrupted:
        startup.ignore()  # the run is ended: nothing more to stop while it says so
        name = signal.Signals(interrupted.signum).name
        if retrying:  # between attempts: the last one ended as recorded, the next never started its command
            say(f"interrupted by {name} before attempt {attempt}'s command started "
                "(a run already created for it is recorded as KILLED)")
        elif active:  # the run exists: it was ended KILLED before its command started
            say(f"interrupted by {name}: run {active[-1].run_id} recorded as KILLED before its command started")
        else:
            say(f"interrupted by {name} before the command started (a run already created is recorded as KILLED)")
        return 128 + interrupted.signum
    status = submitted.get_status()
    end_error = submitted.end_error
    if end_error:  # the outcome is known here but not recorded: never a silent success
        say(f"error: run {submitted.run_id} {status.lower()}, but its end could not be recorded: {end_error}")
        say("hint: free space where MLPROJECT_HOME and the tracking store are; the next mlproject command "
             "records the run as FAILED (its runner ended without recording)")
        return 1
    if in_job:  # the submitter, following the job's output, says how it ended
        return 128 + received[0] if received else 0 if status == RunStatus.FINISHED else submitted.exit_code or 1
    if received and status == RunStatus.FINISHED:  # (a cluster's job that ended before the stop reached it)
        say(f"=== Run (ID '{submitted.run_id}') succeeded: the stop asked by {signal.Signals(received[0]).name} "
             "came after its end ===")
        code = 0
    elif received:
        say(f"=== Run (ID '{submitted.run_id}') killed by {signal.Signals(received[0]).name} ===")
        code = 128 + received[0]
    elif status == RunStatus.FINISHED:
        say(f"=== Run (ID '{submitted.run_id}') succeeded ===")
        code = 0
    else:
        why = submitted.reason  # a cluster's word on how its job ended
        # (a job whose node was lost has no exit code: the cluster's word says what happened)
        code_said = "" if submitted.exit_code is None else f" with exit code {submitted.exit_code}"
        say(f"=== Run (ID '{submitted.run_id}') {status.lower()}{code_said}" + (f" ({why})" if why else "") + " ===")
        code = submitted.exit_code or 1
    if sys.stderr.isatty():
        say(where_it_went(submitted))
    return code


def where_it_went(submitted) -> str:
    """One line: where the run is recorded and how to look at it."""
    uri, run_id = submitted.tracking_uri, submitted.run_id
    if uri is None:
        return f"recorded in the local ledger only; see it with: mlproject runs show {run_id}"
    if uri.startswith(("http://", "https://")):
        return f"tracked at {uri.rstrip('/')}/#/experiments/{submitted.experiment_id}/runs/{run_id}"
    return (f"tracked in {uri} (experiment {submitted.experiment_id}, run {run_id}); "
            f"see it with: mlflow ui --backend-store-uri {uri}")


@click.command(help="run a recorded run again: same source, changes, parameters and packages",
             short_help="run a recorded run again, as it ran")
@click.argument("run_id", shell_complete=complete_run_ids)
@click.option("-P", "--param-list", "param_list", multiple=True, metavar="NAME=VALUE",
              help="change one parameter (a changed rerun, tagged as such)")
@click.option("--env-manager", type=click.Choice(list(ENV_MANAGERS)), default=None, help="default: the run's own")
@click.option("-b", "--backend", default=None, help="default: the run's own")
@click.option("-c", "--backend-config", default=None, metavar="JSON_OR_FILE", help=BACKEND_CONFIG_HELP)
@click.option("--allow-differences", is_flag=True, help="run even when it cannot be run as it ran")
@click.option("--detach", is_flag=True, help="cluster backends: return once the job is queued")
@debug_option
def rerun(run_id: str, param_list: tuple[str, ...], env_manager: str | None, backend: str | None,
          backend_config: str | None, allow_differences: bool, detach: bool) -> int:
    from dataclasses import replace

    from runner import api
    from runner.reproduce.rerun import plan_rerun, rerun_request

    planned = plan_rerun(run_id, api.cli_parameters(param_list), env_manager, backend, backend_config)
    request = rerun_request(planned, allow_differences, say)
    return run_request(replace(request, synchronous=False, detach=detach))
