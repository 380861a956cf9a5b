"""The `mlproject` command: parse arguments, call the API, render. No logic here.

argparse rather than click: it imports in ~8 ms against click's ~30 ms, and the
whole warm-path budget of `mlproject run` is 100 ms.
"""
from __future__ import annotations

import argparse
import signal
import sys

from runner.errors import EXIT_USAGE, RunnerError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs ~9 ms on the warm path
    from typing import Sequence

INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        _print_error(message, f"see `{self.prog} --help`")
        raise SystemExit(EXIT_USAGE)


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


def _add_project_arguments(parser: argparse.ArgumentParser, with_parameters: bool = True) -> None:
    parser.add_argument("uri", help="project directory or git URL; URI#subdir selects a subdirectory")
    if with_parameters:
        parser.add_argument("-e", "--entry-point", default="main", help="entry point to run (default: main)")
        parser.add_argument("-P", "--param-list", action="append", default=[], metavar="NAME=VALUE", help="a parameter (repeatable)")
    parser.add_argument("-v", "--version", default=None, help="git branch, tag or commit")
    parser.add_argument("--env-manager", default=None, help="local, virtualenv, uv, conda (default: from the project)")


def _define_run(run: argparse.ArgumentParser) -> None:
    _add_project_arguments(run)
    run.add_argument("-A", "--docker-args", action="append", default=[], metavar="NAME[=VALUE]", help="extra `docker run` option")
    run.add_argument("--experiment-name", default=None)
    run.add_argument("--experiment-id", default=None)
    run.add_argument("-b", "--backend", default="local")
    run.add_argument("-c", "--backend-config", default=None, metavar="JSON_OR_FILE")
    run.add_argument("--storage-dir", default=None, help="where remote path parameters are downloaded")
    run.add_argument("--run-id", default=None, help="continue this existing MLflow run")
    run.add_argument("--run-name", default=None)
    run.add_argument("--build-image", action="store_true", help="docker: bake the project into an image")
    run.add_argument("--locked", action="store_true", help="conda: install only from a current conda-lock.yml")
    run.add_argument("--debug", action="store_true", help="show tracebacks")


def _define_validate(validate: argparse.ArgumentParser) -> None:
    _add_project_arguments(validate)
    validate.add_argument("--debug", action="store_true", help="show tracebacks")


def _define_env(env: argparse.ArgumentParser) -> None:
    actions = env.add_subparsers(dest="env_command", metavar="ACTION", parser_class=_Parser, prog="mlproject env")
    actions.required = True
    build = actions.add_parser("build", help="build (or reuse) a project's environment without running it")
    _add_project_arguments(build, with_parameters=False)
    path = actions.add_parser("path", help="print the path of a project's environment")
    _add_project_arguments(path, with_parameters=False)
    actions.add_parser("list", help="environments in the store: key, manager, size, last used, project")
    show = actions.add_parser("show", help="an environment's details and installed packages")
    show.add_argument("key")
    rm = actions.add_parser("rm", help="remove an environment (not while a run uses it)")
    rm.add_argument("key")
    gc = actions.add_parser("gc", help="remove environments unused for a while, leftovers, and stale downloads")
    gc.add_argument("--older-than", required=True, metavar="DURATION", help="e.g. 30d, 12h, 0 for all unused")
    for sub in (build, path, show, rm, gc):
        sub.add_argument("--debug", action="store_true", help="show tracebacks")


def _define_runs(runs: argparse.ArgumentParser) -> None:
    actions = runs.add_subparsers(dest="runs_command", metavar="ACTION", parser_class=_Parser, prog="mlproject runs")
    actions.required = True
    listing = actions.add_parser("list", help="recent runs from the local ledger")
    listing.add_argument("--status", choices=("RUNNING", "FINISHED", "FAILED", "KILLED"), type=str.upper)
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser("show", help="one run's record")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    logs = actions.add_parser("logs", help="a run's output")
    logs.add_argument("run_id")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    cancel = actions.add_parser("cancel", help="stop a run started elsewhere")
    cancel.add_argument("run_id")
    for sub in (listing, show, logs, cancel):
        sub.add_argument("--debug", action="store_true", help="show tracebacks")


def _define_lock(lock: argparse.ArgumentParser) -> None:
    lock.add_argument("uri", help="a local project directory with a conda.yaml")
    lock.add_argument("--platform", action="append", default=[], metavar="PLATFORM",
                      help="linux-64, linux-aarch64, osx-64, osx-arm64, win-64 (repeatable; default: this machine's)")
    lock.add_argument("--debug", action="store_true", help="show tracebacks")


def _define_cache(cache: argparse.ArgumentParser) -> None:
    actions = cache.add_subparsers(dest="cache_command", metavar="ACTION", parser_class=_Parser, prog="mlproject cache")
    actions.required = True
    listing = actions.add_parser("list", help="cached git mirrors and checkouts")
    gc = actions.add_parser("gc", help="remove checkouts and mirrors not used for a while (never one in use)")
    gc.add_argument("--older-than", required=True, metavar="DURATION", help="e.g. 30d, 12h, 0 for all unused")
    for sub in (listing, gc):
        sub.add_argument("--debug", action="store_true", help="show tracebacks")


COMMANDS = {
    "run": ("run a project (same flags as `mlflow run`)", _define_run),
    "validate": ("check a project and its parameters; start nothing", _define_validate),
    "env": ("manage the environment store", _define_env),
    "runs": ("list, inspect, follow and cancel runs (the local ledger)", _define_runs),
    "cache": ("manage the git project cache", _define_cache),
    "lock": ("solve a conda project for each platform and write conda-lock.yml", _define_lock),
}


def build_parser(wanted: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `wanted`, only that subcommand's arguments are defined (faster start)."""
    from runner.version import __version__

    parser = _Parser(prog="mlproject", description="Run MLflow projects, fast and exactly.")
    parser.add_argument("--version", action="version", version=f"mlproject-runner {__version__}")
    # prog given: argparse would otherwise build a help formatter (and import shutil) to compute it.
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, prog="mlproject")
    for name, (help_text, define) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if wanted is None or wanted == name:
            define(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(wanted if wanted in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "env":
            return _env(args)
        if args.command == "runs":
            return _runs(args)
        if args.command == "cache":
            return _cache(args)
        if args.command == "lock":
            return _lock(args)
        return _validate(args)
    except RunnerError as exc:
        if getattr(args, "debug", False):
            import traceback

            traceback.print_exc()
        _print_error(exc.message, exc.hint, exc.details)
        return exc.exit_code


class _Interrupted(BaseException):
    def __init__(self, signum: int):
        self.signum = signum


def _run(args: argparse.Namespace) -> int:
    from runner import api
    from runner.envs.build import terminal_progress

    active = []  # the SubmittedRun, once it exists
    received: list[int] = []

    def on_signal(signum: int, _frame) -> None:
        received.append(signum)
        if active and active[0].launching:
            active[0].request_cancel(signum)
        else:
            raise _Interrupted(signum)  # the command has not started: abandon the preparation

    for signum in INTERRUPT_SIGNALS:
        signal.signal(signum, on_signal)
    try:
        submitted = api.run(
            args.uri,
            entry_point=args.entry_point,
            version=args.version,
            parameters=api.cli_parameters(args.param_list),
            docker_args=api.parse_docker_args(args.docker_args),
            experiment_name=args.experiment_name,
            experiment_id=args.experiment_id,
            backend=args.backend,
            backend_config=args.backend_config,
            storage_dir=args.storage_dir,
            synchronous=False,
            run_id=args.run_id,
            run_name=args.run_name,
            env_manager=args.env_manager,
            build_image=args.build_image,
            notify=_say,
            progress=terminal_progress(),
            on_submitted=active.append,
            locked=args.locked,
        )
        while not submitted.done:
            submitted.wait(0.25)
    except _Interrupted as interrupted:
        _say(f"interrupted by {signal.Signals(interrupted.signum).name}")
        return 128 + interrupted.signum
    status = submitted.get_status()
    if received:
        _say(f"=== Run (ID '{submitted.run_id}') killed by {signal.Signals(received[0]).name} ===")
        return 128 + received[0]
    if status == "FINISHED":
        _say(f"=== Run (ID '{submitted.run_id}') succeeded ===")
        return 0
    _say(f"=== Run (ID '{submitted.run_id}') {status.lower()} with exit code {submitted.exit_code} ===")
    return submitted.exit_code or 1


def _env(args: argparse.Namespace) -> int:
    from runner.envs import admin

    action = args.env_command
    if action in ("build", "path"):
        from runner.api import prepare_environment
        from runner.envs.build import terminal_progress

        prepared = prepare_environment(
            args.uri, args.version, args.env_manager, notify=_say, progress=terminal_progress() if action == "build" else None,
            build=action == "build",
        )
        prefix = prepared.environment.prefix
        prepared.release()
        if action == "build":
            _say(f"environment ready: {prefix}" if prefix else "nothing to build (local environment)")
        if prefix:
            sys.stdout.write(f"{prefix}\n")
        return 0
    if action == "list":
        rows = admin.list_rows()
        if not rows:
            _say("no environments yet")
            return 0
        sys.stdout.write(f"{'KEY':<14}{'MANAGER':<12}{'SIZE':>10}  {'LAST USED':<12}PROJECT\n")
        for row in rows:
            sys.stdout.write(f"{row.key[:12]:<14}{row.manager:<12}{row.size:>10}  {row.last_used:<12}{row.project}\n")
        return 0
    if action == "show":
        sys.stdout.write("\n".join(admin.show(args.key)) + "\n")
        return 0
    if action == "rm":
        _say(f"removed {admin.remove(args.key)}")
        return 0
    for line in admin.gc(args.older_than):
        sys.stdout.write(line + "\n")
    return 0


def _runs(args: argparse.Namespace) -> int:
    import json

    from runner.tracking import runs
    from runner.tracking.ledger import Ledger

    ledger = Ledger()
    runs.reconcile(ledger)
    action = args.runs_command
    if action == "list":
        records = ledger.list(args.status, args.limit)
        if args.json:
            sys.stdout.write(json.dumps([runs.describe(r) for r in records], indent=2) + "\n")
            return 0
        sys.stdout.write(f"{'RUN ID':<34}{'STATUS':<10}{'EXIT':>5}  {'STARTED':<20}{'ENTRY':<12}PROJECT\n")
        import time as _time

        for r in records:
            started = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(r.start_time))
            code = "" if r.exit_code is None else str(r.exit_code)
            sys.stdout.write(f"{r.id:<34}{r.status:<10}{code:>5}  {started:<20}{r.entry_point:<12}{r.project_uri}\n")
        return 0
    if action == "show":
        record = runs.describe(runs.find(ledger, args.run_id))
        if args.json:
            sys.stdout.write(json.dumps(record, indent=2) + "\n")
        else:
            for key, value in record.items():
                sys.stdout.write(f"{key}: {value}\n")
        return 0
    if action == "logs":
        record = runs.find(ledger, args.run_id)

        def write(chunk: bytes) -> None:
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()

        if args.follow:
            runs.follow(record, ledger, write)
        else:
            try:
                with open(record.log_path, "rb") as handle:
                    write(handle.read())
            except OSError:
                _say(f"no output recorded for run {record.id}")
        return 0
    record = runs.cancel(ledger, args.run_id)
    _say(f"run {record.id}: {record.status}")
    return 0


def _lock(args: argparse.Namespace) -> int:
    from runner import api
    from runner.envs.build import terminal_progress

    path = api.lock(args.uri, args.platform, notify=_say, progress=terminal_progress())
    _say(f"wrote {path}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    import time

    from runner.envs.admin import human_age, parse_duration
    from runner.sources import cache

    if args.cache_command == "gc":
        result = cache.gc(parse_duration(args.older_than))
        sys.stdout.write(
            f"removed {result.checkouts_removed} checkout(s) and {result.mirrors_removed} mirror(s); "
            f"kept {result.checkouts_in_use} checkout(s) in use and {result.mirrors_kept} mirror(s)\n"
        )
        return 0
    now = time.time()
    mirrors, checkouts = cache.list_mirrors(), cache.list_checkouts()
    if not mirrors and not checkouts:
        _say("the git cache is empty")
        return 0
    sys.stdout.write(f"{'MIRROR':<14}{'LAST USED':<12}URL\n")
    for mirror in sorted(mirrors, key=lambda m: -m.last_used):
        sys.stdout.write(f"{'-':<14}{human_age(now - mirror.last_used):<12}{mirror.url}\n")
    sys.stdout.write(f"{'CHECKOUT':<14}{'LAST USED':<12}URL\n")
    for item in sorted(checkouts, key=lambda c: -c.last_used):
        sys.stdout.write(f"{item.commit[:12]:<14}{human_age(now - item.last_used):<12}{item.url}\n")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from runner import api
    from runner.validate import report

    lines, problems = report(
        args.uri, args.entry_point, args.version, api.cli_parameters(args.param_list), args.env_manager
    )
    for line in lines:
        sys.stdout.write(line + "\n")
    for problem in problems:
        sys.stderr.write(f"error: {problem}\n")
    return EXIT_USAGE if problems else 0


if __name__ == "__main__":
    sys.exit(main())
