"""The `mlproject` command: parse arguments (click), call the API, render. No logic here.

Every failure prints one `error:` line and one `hint:` line and exits with the
documented code: our own errors (RunnerError) with theirs, click's usage errors
with 2. Shell completion: `eval "$(_MLPROJECT_COMPLETE=bash_source mlproject)"`
(zsh_source, fish_source likewise).
"""
from __future__ import annotations

from runner import startup

startup.hold()  # (until main() runs: see runner.startup)

import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import click  # noqa: E402

from runner.errors import EXIT_USAGE, RunnerError  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Sequence

from runner.seams import BACKENDS, ENV_MANAGERS  # noqa: E402 - (the registry: names only, nothing imported)
RUN_STATUSES = ("SCHEDULED", "RUNNING", "FINISHED", "FAILED", "KILLED")


def _print_error(message: str, hint: str | None, details: str | None = None) -> None:
    if details:  # e.g. the installer's own output, above the one-line summary
        sys.stderr.write("".join(f"  | {line}\n" for line in details.splitlines()))
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
    sys.stderr.flush()


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


# -- completion (only what is cheap: the project's own file, the ledger) --------------------
def _complete_dirs(ctx, param, incomplete: str):
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="dir")]


def _local_project(ctx):
    """The project named by the command line so far, if it is a local directory."""
    import os

    uri = ctx.params.get("uri") or _uri_from_command_line()
    if not uri or not os.path.isdir(uri.split("#", 1)[0]):
        return None
    from runner.project.spec import load_project

    try:
        return load_project(uri.split("#", 1)[0])
    except Exception:  # noqa: BLE001 - completion never fails loudly
        return None


def _uri_from_command_line() -> str | None:
    """While an option still lacks its value click has not parsed the URI yet; the shell's
    words (COMP_WORDS, set by the bash, zsh and fish scripts alike) still name it."""
    import shlex

    try:
        words = shlex.split(os.environ.get("COMP_WORDS", ""))
    except ValueError:
        return None
    takes_value = {"-e", "--entry-point", "-P", "--param-list", "-v", "--version", "--env-manager", "-A", "--docker-args",
                   "--experiment-name", "--experiment-id", "-b", "--backend", "-c", "--backend-config", "--storage-dir",
                   "--run-id", "--run-name"}
    previous = ""
    for word in words[2:]:
        if not word.startswith("-") and previous not in takes_value and os.path.isdir(word.split("#", 1)[0]):
            return word
        previous = word
    return None


def _complete_entry_points(ctx, param, incomplete: str) -> list[str]:
    project = _local_project(ctx)
    names = list(project.entry_points) if project is not None else []
    return [name for name in names if name.startswith(incomplete)]


def _complete_parameters(ctx, param, incomplete: str) -> list[str]:
    project = _local_project(ctx)
    if project is None or "=" in incomplete:
        return []
    try:
        entry = project.entry_point(ctx.params.get("entry_point") or "main")
    except Exception:  # noqa: BLE001
        return []
    return [f"{name}=" for name in entry.parameters if name.startswith(incomplete)]


def _complete_managers(ctx, param, incomplete: str) -> list[str]:
    return [name for name in ENV_MANAGERS if name.startswith(incomplete)]


def _complete_run_ids(ctx, param, incomplete: str) -> list[str]:
    try:
        from runner.tracking.ledger import Ledger

        ledger = Ledger()
        try:
            return [r.id for r in ledger.list(None, 50) if r.id.startswith(incomplete)]
        finally:
            ledger.close()
    except Exception:  # noqa: BLE001
        return []


def _complete_env_keys(ctx, param, incomplete: str) -> list[str]:
    try:
        from runner.envs.store import Store

        return [env.key for env in Store().list() if env.key.startswith(incomplete)]
    except Exception:  # noqa: BLE001
        return []


# -- shared options ---------------------------------------------------------------------------
def _debug(function):
    return click.option("--debug", is_flag=True, help="show tracebacks")(function)


def _project_options(with_parameters: bool = True):
    def decorate(function):
        options = [
            click.argument("uri", shell_complete=_complete_dirs),
        ]
        if with_parameters:
            options += [
                click.option("-e", "--entry-point", default="main", show_default=True, help="entry point to run",
                             shell_complete=_complete_entry_points),
                click.option("-P", "--param-list", multiple=True, metavar="NAME=VALUE", help="a parameter (repeatable)",
                             shell_complete=_complete_parameters),
            ]
        options += [
            click.option("-v", "--version", default=None, help="git branch, tag or commit"),
            click.option("--env-manager", default=None, metavar="|".join(ENV_MANAGERS), shell_complete=_complete_managers,
                         help="default: from the project (docker_env: docker, conda.yaml: conda, else uv)"),
        ]
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


_BACKEND_CONFIG_HELP = "the backend's settings: a JSON object, or a file holding one"


def _where_options(function):
    """Where a run (or a sweep's trials) runs and is recorded: -b, -c and the experiment."""
    options = [
        click.option("--experiment-name", default=None, help="the MLflow experiment to record in, by name (made if new)"),
        click.option("--experiment-id", default=None, help="the MLflow experiment to record in, by ID"),
        click.option("-b", "--backend", default="local", show_default=True, metavar="|".join(BACKENDS),
                     help="where it runs: on this machine, or as a Slurm or Ray job (-c: its config)"),
        click.option("-c", "--backend-config", default=None, metavar="JSON_OR_FILE", help=_BACKEND_CONFIG_HELP),
    ]
    for option in reversed(options):
        function = option(function)
    return function


class _Group(click.Group):
    """Commands listed in the order they are defined (the order of the README's tour)."""

    def list_commands(self, ctx) -> list[str]:
        return list(self.commands)


def _version_message() -> str:
    from runner.version import __version__

    return f"mlproject-runner {__version__}"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]},
             help="Run MLflow projects, fast and exactly.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, help="show the version and exit",
              callback=lambda ctx, _param, value: (click.echo(_version_message()), ctx.exit()) if value else None)
def cli() -> None:
    pass


# -- run --------------------------------------------------------------------------------------
class _Interrupted(BaseException):
    def __init__(self, signum: int):
        self.signum = signum


@cli.command(help="run a project (same flags as `mlflow run`)")
@_project_options()
@click.option("-A", "--docker-args", multiple=True, metavar="NAME[=VALUE]", help="extra `docker run` option")
@_where_options
@click.option("--detach", is_flag=True, help="cluster backends: return once the job is queued")
@click.option("--storage-dir", default=None, help="where remote path parameters are downloaded")
@click.option("--run-id", default=None, help="continue this existing MLflow run")
@click.option("--run-name", default=None, help="the MLflow run's name (default: a generated one)")
@click.option("--build-image", is_flag=True, help="docker: bake the project into an image")
@click.option("--locked", is_flag=True, help="install only from a current lock (pylock.toml or conda-lock.yml)")
@click.option("--no-conda", is_flag=True, hidden=True)  # MLflow 1.x; the tutorials still use it
@_debug
def run(uri: str, entry_point: str, param_list: tuple[str, ...], version: str | None, env_manager: str | None,
        docker_args: tuple[str, ...], experiment_name: str | None, experiment_id: str | None, backend: str,
        backend_config: str | None, storage_dir: str | None, run_id: str | None, run_name: str | None,
        build_image: bool, locked: bool, no_conda: bool, detach: bool, debug: bool) -> int:
    from runner import api

    if no_conda:
        if env_manager not in (None, "local"):
            raise click.UsageError(f"--no-conda means --env-manager local; it cannot be given with --env-manager {env_manager}")
        _say("note: --no-conda (MLflow 1.x) is taken as --env-manager local")
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
    )
    return _run_request(request)


@cli.command(hidden=True, help="(internal) the runner inside a cluster job: carry out a submitted request")
@click.argument("request_file", type=click.Path(dir_okay=False), required=False)
@click.option("--from-env", is_flag=True, help="the request is in MLPROJECT_JOB_REQUEST (Ray jobs)")
@_debug
def job(request_file: str | None, from_env: bool, debug: bool) -> int:
    import json

    from runner.backends.cluster import JobOf
    from runner.request import RunRequest

    if from_env:
        from runner.backends.ray import REQUEST_VARIABLE

        fields = json.loads(os.environ.pop(REQUEST_VARIABLE))  # (not passed on to the command)
    else:
        if request_file is None:
            raise click.UsageError("give the request file, or --from-env")
        if not os.path.isfile(request_file):  # written by the submitter: this node does not see its files
            from runner.errors import LaunchError

            raise LaunchError(f"the job's request {request_file} is not on this node ({os.uname().nodename})",
                              hint="the nodes must share MLPROJECT_HOME (or the backend config's mlproject_home) "
                                   "with the submit host")
        if request_file.endswith(".manifest"):  # a job array: task N runs the request on line N
            with open(request_file, encoding="utf-8") as handle:
                request_file = handle.read().splitlines()[int(os.environ["SLURM_ARRAY_TASK_ID"])]
        with open(request_file, encoding="utf-8") as handle:
            fields = json.load(handle)
    fields["job_of"] = JobOf(**fields["job_of"])
    return _run_request(RunRequest(**fields, synchronous=False), in_job=True)


def _run_request(request, in_job: bool = False) -> int:
    """Submit a request and follow it to its end (or, detached, to its queueing): the exit code."""
    from runner import api
    from runner.progress import Progress

    active = []  # the SubmittedRun, once it exists
    received: list[int] = []
    abandoning: list[int] = []  # the signal that abandoned the preparation

    def on_signal(signum: int, _frame) -> None:
        if active and active[0].done:
            return  # the run has ended and its end is recorded: nothing left to stop
        received.append(signum)
        if active and active[0].launching:
            run_id = active[0].run_id
            # os.write: the main thread may be inside a write to sys.stderr right now.
            if len(received) == 1:
                again = "" if in_job else " (Ctrl-C again to kill now)"  # (a job is stopped by its cluster)
                os.write(2, f"stopping run {run_id}{again}\n".encode())
            elif len(received) == 2:
                os.write(2, f"killing run {run_id} now\n".encode())
            active[0].request_cancel(signum)
        elif not abandoning:
            abandoning.append(signum)
            raise _Interrupted(signum)  # the command has not started: abandon the preparation
        # (else: the preparation is being abandoned; another signal would cut its cleanup short)


    for signum in startup.INTERRUPT_SIGNALS:
        signal.signal(signum, on_signal)
    # A resized window reaches the command's terminal (see runner.launch).
    signal.signal(signal.SIGWINCH, lambda _signum, _frame: active[0].sync_window_size() if active else None)
    try:
        submitted = api.submit(request, notify=_say, progress=Progress(), on_submitted=active.append)
        if request.detach:
            _out(f"{submitted.run_id} {submitted.backend} job {submitted.job_id}")
            _say(f"follow it with: mlproject runs logs {submitted.run_id} -f")
            return 0
        while not submitted.done:
            submitted.wait(0.25)
    except _Interrupted as interrupted:
        startup.ignore()  # the run is ended: nothing more to stop while it says so
        name = signal.Signals(interrupted.signum).name
        if active:  # the run exists: it was ended KILLED before its command started
            _say(f"interrupted by {name}: run {active[0].run_id} recorded as KILLED before its command started")
        else:
            _say(f"interrupted by {name} before the command started (a run already created is recorded as KILLED)")
        return 128 + interrupted.signum
    status = submitted.get_status()
    end_error = submitted.end_error
    if end_error:  # the outcome is known here but not recorded: never a silent success
        _say(f"error: run {submitted.run_id} {status.lower()}, but its end could not be recorded: {end_error}")
        _say("hint: free space where MLPROJECT_HOME and the tracking store are; the next mlproject command "
             "records the run as FAILED (its runner ended without recording)")
        return 1
    if in_job:  # the submitter, following the job's output, says how it ended
        return 128 + received[0] if received else 0 if status == "FINISHED" else submitted.exit_code or 1
    if received and status == "FINISHED":  # (a cluster's job that ended before the stop reached it)
        _say(f"=== Run (ID '{submitted.run_id}') succeeded: the stop asked by {signal.Signals(received[0]).name} "
             "came after its end ===")
        code = 0
    elif received:
        _say(f"=== Run (ID '{submitted.run_id}') killed by {signal.Signals(received[0]).name} ===")
        code = 128 + received[0]
    elif status == "FINISHED":
        _say(f"=== Run (ID '{submitted.run_id}') succeeded ===")
        code = 0
    else:
        why = submitted.reason  # a cluster's word on how its job ended
        # (a job whose node was lost has no exit code: the cluster's word says what happened)
        code_said = "" if submitted.exit_code is None else f" with exit code {submitted.exit_code}"
        _say(f"=== Run (ID '{submitted.run_id}') {status.lower()}{code_said}" + (f" ({why})" if why else "") + " ===")
        code = submitted.exit_code or 1
    if sys.stderr.isatty():
        _say(where_it_went(submitted))
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


# -- sweep ------------------------------------------------------------------------------------
class _SweepGroup(_Group):
    """`mlproject sweep URI ...` starts a sweep; `sweep show ID` and `sweep list` look at sweeps."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["start", *args]
        return super().parse_args(ctx, args)

    def format_options(self, ctx, formatter) -> None:
        """`mlproject sweep --help` shows what `mlproject sweep URI` takes (sweep start's options)."""
        start = self.commands["start"]
        records = [record for param in start.get_params(ctx)
                   if isinstance(param, click.Option) and (record := param.get_help_record(ctx)) is not None]
        with formatter.section("Options of `mlproject sweep URI` (also `sweep start URI`)"):
            formatter.write_dl(records)
        self.format_commands(ctx, formatter)


@cli.group(cls=_SweepGroup, help="many runs of a project over a parameter space (`mlproject sweep URI -P a=1,2,3`)",
           short_help="many runs of a project over a parameter space",
           options_metavar="[URI] [OPTIONS]", subcommand_metavar="| COMMAND [ARGS]...")
def sweep() -> None:
    pass


@sweep.command("start", help="run a sweep: every trial a child run of one parent run")
@click.argument("uri", required=False, shell_complete=_complete_dirs)
@click.option("-e", "--entry-point", default=None, help="entry point to run (default main)",
              shell_complete=_complete_entry_points)
@click.option("-P", "--param-list", multiple=True, metavar="NAME=VALUES",
              help="a,b,c | range(start,stop[,step]) | choice(a,b) | uniform(a,b) | loguniform(a,b) | int(...) | a fixed value")
@click.option("-v", "--version", default=None, help="git branch, tag or commit")
@click.option("--env-manager", default=None, metavar="|".join(ENV_MANAGERS), shell_complete=_complete_managers)
@click.option("--method", type=click.Choice(["grid", "random", "optuna"]), default=None,
              help="grid (default), random, or optuna (TPE; needs mlproject-runner[optuna])")
@click.option("--max-runs", type=int, default=None, help="random: trials (default 10); grid: the first N points")
@click.option("--seed", type=int, default=None, help="random: the same seed draws the same trials")
@click.option("--max-parallel", type=int, default=None, help="trials at once (default: the number of cores)")
@click.option("--metric", default=None, help="ranks the trials (the last value each logged under this name)")
@click.option("--goal", type=click.Choice(["minimize", "maximize"]), default=None, help="default minimize")
@click.option("--max-failures", type=int, default=None, help="start no more trials once more than N failed")
@_where_options
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False), help="a sweep.yaml")
@click.option("--resume", default=None, metavar="SWEEP_ID", help="run what an interrupted sweep still lacks")
@_debug
def sweep_start(uri: str | None, entry_point: str | None, param_list: tuple[str, ...], version: str | None,
                env_manager: str | None, method: str | None, max_runs: int | None, seed: int | None,
                max_parallel: int | None, metric: str | None, goal: str | None, max_failures: int | None,
                backend: str, backend_config: str | None, experiment_name: str | None, experiment_id: str | None,
                config_file: str | None, resume: str | None, debug: bool) -> int:
    from runner import api
    from runner.progress import Progress
    from runner.sweeps import run_sweep
    from runner.sweeps.driver import table

    if (uri is None) == (resume is None):
        raise click.UsageError("give a project URI to start a sweep, or --resume SWEEP_ID (not both)")
    # Ctrl-C, SIGTERM and SIGHUP stop the sweep: its running trials are cancelled and recorded
    # KILLED, and so is the parent run.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupted)
    # Ctrl-C as KeyboardInterrupt even when this process was started with SIGINT ignored (a
    # background job of a script, `cmd &`, inherits that), as `mlproject run` takes it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = run_sweep(uri or ".", api.cli_parameters(param_list), entry_point, version, method, max_runs, seed,
                           max_parallel, metric, goal, max_failures, backend, backend_config, env_manager,
                           experiment_name, experiment_id, config=config_file, resume=resume, cwd=None, notify=_say,
                           progress=Progress())
    except (KeyboardInterrupt, _Interrupted) as exc:
        startup.ignore()  # the sweep's runs are ended: nothing more to stop while it says so
        number = exc.signum if isinstance(exc, _Interrupted) else signal.SIGINT
        sweep_id = getattr(exc, "sweep_id", None)
        resume_with = f"mlproject sweep --resume {sweep_id}" if sweep_id else "mlproject sweep --resume ID (see `mlproject sweep list`)"
        _say(f"sweep interrupted by {signal.Signals(number).name}: its running trials and its parent run were "
             f"recorded as KILLED; run the rest with: {resume_with}")
        return 128 + number
    for line in table(result.trials, result.metric, result.goal):
        _out(line)
    for note in result.notes:
        _say(note)
    finished = sum(t.status == "FINISHED" for t in result.trials)
    best = (f"; best: trial {result.best.number}, {result.metric}={result.best.metric:g} (run {result.best.run_id})"
            if result.best else "")
    _say(f"=== Sweep {result.sweep_id} {result.status.lower()}: {finished}/{len(result.trials)} trials finished{best}; "
         f"parent run {result.parent_run_id} ===")
    return 0 if result.succeeded else 1


def _raise_interrupted(signum: int, _frame) -> None:
    raise _Interrupted(signum)


@sweep.command("show", help="a sweep's trials, best first")
@click.argument("sweep_id")
@_debug
def sweep_show(sweep_id: str, debug: bool) -> int:
    from runner.sweeps.driver import find, table

    record = find(sweep_id)
    request = record.request
    _out(f"sweep {record.id}: {request['method']} over {', '.join(f'{k}={v}' for k, v in request['parameters'].items())}")
    _out(f"project {request['uri']} (entry point {request['entry_point']}); parent run {record.parent_run_id}")
    for line in table(record.trials, request.get("metric"), request.get("goal") or "minimize"):
        _out(line)
    return 0


@sweep.command("list", help="recent sweeps")
@click.option("--limit", type=int, default=20, show_default=True)
@_debug
def sweep_list(limit: int, debug: bool) -> int:
    import time

    from runner.sweeps.state import SweepStore
    from runner.tracking.ledger import Ledger

    ledger = Ledger()
    try:
        sweeps = SweepStore(ledger).list(limit)
    finally:
        ledger.close()
    _out(f"{'SWEEP ID':<14}{'CREATED':<21}{'METHOD':<8}{'TRIALS':>8}{'DONE':>6}  PROJECT")
    for record in sweeps:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        done = sum(t.done for t in record.trials)
        _out(f"{record.id:<14}{created:<21}{record.request['method']:<8}{len(record.trials):>8}{done:>6}  "
             f"{record.request['uri']}")
    return 0


# -- validate ---------------------------------------------------------------------------------
@cli.command(help="check a project and its parameters; start nothing")
@_project_options()
@click.option("--resolve", "resolve_environment", is_flag=True,
              help="also resolve the environment (pip requirements, conda specs) without building it")
@click.option("--locked", is_flag=True, help="check that the lock (pylock.toml, conda-lock.yml) is current, as run --locked")
@_debug
def validate(uri: str, entry_point: str, param_list: tuple[str, ...], version: str | None, env_manager: str | None,
             resolve_environment: bool, locked: bool, debug: bool) -> int:
    from runner import api
    from runner.progress import Progress
    from runner.validate import report

    lines, problems = report(uri, entry_point, version, api.cli_parameters(param_list), env_manager,
                             resolve_environment, Progress() if resolve_environment else None, locked=locked)
    for line in lines:
        _out(line)
    for problem in problems:
        sys.stderr.write(f"error: {problem}\n")
    if problems:
        counted = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        sys.stderr.write(f"hint: {counted} above; fix them and validate again\n")
    return EXIT_USAGE if problems else 0


# -- env --------------------------------------------------------------------------------------
@cli.group(cls=_Group, help="manage the environment store")
def env() -> None:
    pass


def _env_prepare(uri: str, version: str | None, env_manager: str | None, build: bool) -> int:
    from runner.api import prepare_environment
    from runner.progress import Progress

    prepared = prepare_environment(uri, version, env_manager, notify=_say,
                                   progress=Progress() if build else None, build=build)
    prefix = prepared.environment.prefix
    prepared.release()
    if build:
        _say(f"environment ready: {prefix}" if prefix else "nothing to build (local environment)")
    if prefix:
        _out(str(prefix))
    return 0


@env.command("build", help="build (or reuse) a project's environment without running it")
@_project_options(with_parameters=False)
@_debug
def env_build(uri: str, version: str | None, env_manager: str | None, debug: bool) -> int:
    return _env_prepare(uri, version, env_manager, build=True)


@env.command("path", help="print the path of a project's environment")
@_project_options(with_parameters=False)
@_debug
def env_path(uri: str, version: str | None, env_manager: str | None, debug: bool) -> int:
    return _env_prepare(uri, version, env_manager, build=False)


@env.command("list", help="environments in the store: key, manager, size, last used, project")
@_debug
def env_list(debug: bool) -> int:
    from runner.envs import admin

    rows = admin.list_rows()
    if not rows:
        _say("no environments yet")
        return 0
    _out(f"{'KEY':<14}{'MANAGER':<12}{'SIZE':>10}  {'LAST USED':<12}PROJECT")
    for row in rows:
        _out(f"{row.key[:12]:<14}{row.manager:<12}{row.size:>10}  {row.last_used:<12}{row.project}")
    return 0


@env.command("show", help="an environment's details and installed packages")
@click.argument("key", shell_complete=_complete_env_keys)
@_debug
def env_show(key: str, debug: bool) -> int:
    from runner.envs import admin

    _out("\n".join(admin.show(key)))
    return 0


@env.command("rm", help="remove an environment (not while a run uses it)")
@click.argument("key", shell_complete=_complete_env_keys)
@_debug
def env_rm(key: str, debug: bool) -> int:
    from runner.envs import admin

    _say(f"removed {admin.remove(key)}")
    return 0


@env.command("gc", help="remove environments unused for a while, leftovers, and stale downloads")
@click.option("--older-than", required=True, metavar="DURATION", help="30d, 12h, 45m, 30s; 0 for all unused")
@click.option("--dry-run", is_flag=True, help="print what would be removed and the space freed; remove nothing")
@_debug
def env_gc(older_than: str, dry_run: bool, debug: bool) -> int:
    from runner.envs import admin

    for line in admin.gc(older_than, dry_run):
        _out(line)
    return 0


# -- runs -------------------------------------------------------------------------------------
@cli.group(cls=_Group, help="list, inspect, follow and cancel runs (the local ledger)")
def runs() -> None:
    pass


def _ledger():
    from runner import backends
    from runner.tracking import runs as run_records
    from runner.tracking.ledger import Ledger

    ledger = Ledger()
    backends.reconcile(ledger)
    return ledger, run_records


def _where(record) -> str:
    return f"{record.backend}:{record.job_id or '-'}" if _on_cluster(record) else record.backend


def _on_cluster(record) -> bool:
    """A run whose job a scheduler holds (else its runner is a process here: a run or a sweep's driver)."""
    from runner.backends import CLUSTER_BACKENDS

    return record.backend in CLUSTER_BACKENDS


@runs.command("list", help="recent runs from the local ledger")
@click.option("--status", type=click.Choice(RUN_STATUSES, case_sensitive=False), default=None)
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--sweep", "sweep_id", default=None, metavar="SWEEP_ID", help="only the trials of this sweep")
@click.option("--json", "as_json", is_flag=True)
@_debug
def runs_list(status: str | None, limit: int, sweep_id: str | None, as_json: bool, debug: bool) -> int:
    import json
    import time

    ledger, run_records = _ledger()
    if sweep_id is not None:
        from runner.sweeps.driver import find as find_sweep

        ids = [t.run_id for t in find_sweep(sweep_id).trials if t.run_id]
        records = [run_records.find(ledger, run_id) for run_id in ids]
        records = [r for r in records if status is None or r.status == status.upper()][:limit]
    else:
        records = ledger.list(status.upper() if status else None, limit)
    if as_json:
        _out(json.dumps([run_records.describe(r) for r in records], indent=2))
        return 0
    entry_width = max([len("ENTRY"), *(len(r.entry_point) for r in records)]) + 2
    where_width = max([len("BACKEND"), *(len(_where(r)) for r in records)]) + 2
    _out(f"{'RUN ID':<34}{'STATUS':<11}{'EXIT':>5}  {'STARTED':<21}{'BACKEND':<{where_width}}{'ENTRY':<{entry_width}}PROJECT")
    for r in records:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.start_time))
        code = "" if r.exit_code is None else str(r.exit_code)
        _out(f"{r.id:<34}{r.status:<11}{code:>5}  {started:<21}{_where(r):<{where_width}}"
             f"{r.entry_point:<{entry_width}}{r.project_uri}")
    return 0


@runs.command("show", help="one run's record")
@click.argument("run_id", shell_complete=_complete_run_ids)
@click.option("--json", "as_json", is_flag=True)
@_debug
def runs_show(run_id: str, as_json: bool, debug: bool) -> int:
    import json

    ledger, run_records = _ledger()
    record = run_records.find(ledger, run_id)
    if as_json:
        _out(json.dumps(run_records.describe(record), indent=2))
        return 0
    rows = run_records.summary(record)
    if _on_cluster(record):
        rows.insert(2, ("backend", _job_line(record)))
    attempt = run_records.attempt(ledger, record)
    if attempt is not None:
        rows.insert(2, ("attempt", attempt))
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        _out(f"{label + ':':<{width}}{value}")
    return 0


@runs.command("diff", help="what differs between two runs: source, parameters, packages, metrics")
@click.argument("first", shell_complete=_complete_run_ids)
@click.argument("second", shell_complete=_complete_run_ids)
@_debug
def runs_diff(first: str, second: str, debug: bool) -> int:
    from runner.reproduce.compare import compare
    from runner.reproduce.recorded import recorded

    a, b = recorded(first), recorded(second)
    result = compare(a, b)
    for note in result.notes:
        _say(f"note: {note}")
    same = ", ".join(f"{count} {kind}" for kind, count in result.same.items())
    if not result.rows:
        _out(f"no differences ({same} the same)")
        return 0
    rows = [("", a.run_id[:12], b.run_id[:12]), *result.rows]
    widths = [max(len(row[i]) for row in rows) + 2 for i in (0, 1)]
    for what, left, right in rows:
        _out(f"{what:<{widths[0]}}{left:<{widths[1]}}{right}".rstrip())
    _out(f"the same: {same}")
    return 0


def _job_line(record) -> str:
    """The job of a cluster run, and (while it is unfinished) what its scheduler says of it now."""
    line = f"{record.backend} job {record.job_id or '(not queued)'}"
    if record.finished or record.job_id is None:
        return line
    from runner import backends

    try:
        state = backends.cluster_backend(record.backend).job_state(record.job_id)
    except Exception as exc:  # noqa: BLE001 - the ledger's view is still worth showing
        return f"{line} (the scheduler did not answer: {exc})"
    if state is None:
        return f"{line} (unknown to the scheduler)"
    return f"{line} ({state.name}" + (f" on {state.node}" if state.node else "") + ")"


@runs.command("logs", help="a run's output")
@click.argument("run_id", shell_complete=_complete_run_ids)
@click.option("-f", "--follow", is_flag=True, help="keep printing until the run ends")
@_debug
def runs_logs(run_id: str, follow: bool, debug: bool) -> int:
    ledger, run_records = _ledger()
    record = run_records.find(ledger, run_id)

    def write(chunk: bytes) -> None:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()

    if follow and _on_cluster(record):
        from runner.backends.cluster import ClusterRun

        from runner.progress import Progress

        ledger.close()
        ClusterRun(record, echo=True, progress=Progress()).wait()
    elif follow:
        run_records.follow(record, ledger, write)
    else:
        from runner import backends

        backends.pull_output(record)  # a cluster that keeps the job's output (Ray)
        try:
            with open(record.log_path, "rb") as handle:
                write(handle.read())
        except OSError:
            _say(f"no output recorded for run {record.id}")
    return 0


@runs.command("cancel", help="stop a run started elsewhere")
@click.argument("run_id", shell_complete=_complete_run_ids)
@_debug
def runs_cancel(run_id: str, debug: bool) -> int:
    from runner import backends

    ledger, run_records = _ledger()
    record = run_records.find(ledger, run_id)
    if record.finished:
        # What was asked for holds (as cancel() of an ended run, here and in MLflow): said, exit 0.
        _say(f"run {record.id} had already ended {record.status}: nothing to cancel")
        return 0
    if _on_cluster(record):
        record = backends.cancel(ledger, record)
    else:
        record = run_records.cancel(ledger, run_id)
    _say(f"run {record.id}: {record.status}" + (f" ({record.reason})" if record.reason and _on_cluster(record) else ""))
    return 0


# -- cache ------------------------------------------------------------------------------------
@cli.group(cls=_Group, help="manage the git project cache")
def cache() -> None:
    pass


@cache.command("list", help="cached git mirrors and checkouts")
@_debug
def cache_list(debug: bool) -> int:
    import time

    from runner.envs.admin import human_age
    from runner.sources import cache as git_cache

    now = time.time()
    mirrors, checkouts = git_cache.list_mirrors(), git_cache.list_checkouts()
    if not mirrors and not checkouts:
        _say("the git cache is empty")
        return 0
    _out(f"{'MIRROR':<14}{'LAST USED':<12}URL")
    for mirror in sorted(mirrors, key=lambda m: -m.last_used):
        _out(f"{'-':<14}{human_age(now - mirror.last_used):<12}{mirror.url}")
    _out(f"{'CHECKOUT':<14}{'LAST USED':<12}URL")
    for item in sorted(checkouts, key=lambda c: -c.last_used):
        _out(f"{item.commit[:12]:<14}{human_age(now - item.last_used):<12}{item.url}")
    return 0


@cache.command("gc", help="remove checkouts, mirrors and staged projects not used for a while (never one in use)")
@click.option("--older-than", required=True, metavar="DURATION", help="30d, 12h, 45m, 30s; 0 for all unused")
@click.option("--dry-run", is_flag=True, help="print what would be removed and the space freed; remove nothing")
@click.option("--staging-dir", default=None, type=click.Path(file_okay=False),
              help="the cluster backends' staging_dir (default: $MLPROJECT_HOME/staging)")
@_debug
def cache_gc(older_than: str, dry_run: bool, staging_dir: str | None, debug: bool) -> int:
    from runner import home
    from runner.backends import staging
    from runner.envs.admin import human_size, parse_duration
    from runner.sources import cache as git_cache

    age = parse_duration(older_than)
    result = git_cache.gc(age, dry_run)
    verb, freed = ("would remove", "would be freed") if dry_run else ("removed", "freed")
    _out(f"{verb} {result.checkouts_removed} checkout(s) and {result.mirrors_removed} mirror(s); "
         f"kept {result.checkouts_in_use} checkout(s) in use and {result.mirrors_kept} mirror(s); "
         f"{human_size(result.freed)} {freed}" + ("; nothing was removed (--dry-run)" if dry_run else ""))
    root = home.staging(staging_dir)
    staged = staging.gc(root, age, dry_run)
    _out(f"{verb} {staged.removed} staged project(s) and {staged.leftovers} leftover(s) in {root}; kept "
         f"{staged.in_use} named by queued or running jobs and {staged.kept} used recently; "
         f"{human_size(staged.freed)} {freed}" + ("; nothing was removed (--dry-run)" if dry_run else ""))
    return 0


# -- rerun ------------------------------------------------------------------------------------
@cli.command(help="run a recorded run again: same source, changes, parameters and packages",
             short_help="run a recorded run again, as it ran")
@click.argument("run_id", shell_complete=_complete_run_ids)
@click.option("-P", "--param-list", "param_list", multiple=True, metavar="NAME=VALUE",
              help="change one parameter (a changed rerun, tagged as such)")
@click.option("--env-manager", type=click.Choice(list(ENV_MANAGERS)), default=None, help="default: the run's own")
@click.option("-b", "--backend", default=None, help="default: the run's own")
@click.option("-c", "--backend-config", default=None, metavar="JSON_OR_FILE", help=_BACKEND_CONFIG_HELP)
@click.option("--allow-differences", is_flag=True, help="run even when it cannot be run as it ran")
@click.option("--detach", is_flag=True, help="cluster backends: return once the job is queued")
@_debug
def rerun(run_id: str, param_list: tuple[str, ...], env_manager: str | None, backend: str | None,
          backend_config: str | None, allow_differences: bool, detach: bool, debug: bool) -> int:
    from dataclasses import replace

    from runner import api
    from runner.reproduce.rerun import plan_rerun, rerun_request

    planned = plan_rerun(run_id, api.cli_parameters(param_list), env_manager, backend, backend_config)
    request = rerun_request(planned, allow_differences, _say)
    return _run_request(replace(request, synchronous=False, detach=detach))


# -- lock -------------------------------------------------------------------------------------
@cli.command(help="lock a project's environment: pylock.toml next to python_env.yaml, conda-lock.yml next to conda.yaml",
             short_help="lock a project's environment (pylock.toml, conda-lock.yml)")
@click.argument("uri", shell_complete=_complete_dirs)
@click.option("--platform", "platforms", multiple=True, metavar="PLATFORM",
              help="linux-64, linux-aarch64, osx-64, osx-arm64, win-64 (repeatable; default: this machine's)")
@_debug
def lock(uri: str, platforms: tuple[str, ...], debug: bool) -> int:
    from runner import api
    from runner.progress import Progress

    path = api.lock(uri, list(platforms), notify=_say, progress=Progress())
    _say(f"wrote {path}")
    return 0


# -- entry point ------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    startup.release()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args and "_MLPROJECT_COMPLETE" not in os.environ:  # the shell asking for completions
        with click.Context(cli, info_name="mlproject", help_option_names=["-h", "--help"]) as ctx:
            sys.stderr.write(cli.get_help(ctx) + "\n")
        return EXIT_USAGE
    result: Any = None
    try:
        result = cli.main(args, prog_name="mlproject", standalone_mode=False)
        # The work is done and recorded: a signal now could only kill the process in its last
        # milliseconds (Python restores the default handlers as it shuts down) and lose its exit code.
        startup.ignore()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`mlproject runs list | head -1`): what it did not read is dropped
        # quietly, and Python's own flush at exit must not complain either. A run's exit code
        # stays its command's.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return result if isinstance(result, int) else 0
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "mlproject"
        _print_error(exc.format_message(), f"see `{command} --help`")
        return EXIT_USAGE
    except click.ClickException as exc:
        _print_error(exc.format_message(), "see `mlproject --help`")
        return exc.exit_code
    except click.Abort:  # (Ctrl-C before a command's own handlers: nothing was started)
        startup.ignore()  # (a second one must not turn the exit code into a death by signal)
        _say("aborted")
        return 130
    except RunnerError as exc:
        if "--debug" in args:
            import traceback

            traceback.print_exc()
        _print_error(exc.message, exc.hint, exc.details)
        return exc.exit_code
    except Exception as exc:  # a full disk is the machine's state, not a bug: one line, as for any error
        if not _out_of_space(exc) or "--debug" in args:
            raise
        _print_error(f"no space left on the device: {exc}",
                     "free space where MLPROJECT_HOME and the tracking store are; the next mlproject command "
                     "ends in the ledger and in tracking whatever this one could not")
        return 1
    return result if isinstance(result, int) else 0


def _out_of_space(exc: BaseException) -> bool:
    import errno

    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return "database or disk is full" in str(exc)  # (sqlite3's own words)


if __name__ == "__main__":
    sys.exit(main())
