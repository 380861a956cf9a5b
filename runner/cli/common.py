"""What every command module shares: output, completion, the options several commands take."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable

import click

from runner.seams import BACKENDS, ENV_MANAGERS  # (the registry: names only, nothing imported)
from runner.status import RunStatus

RUN_STATUSES = tuple(status.value for status in RunStatus)


def print_error(message: str, hint: str | None, details: str | None = None) -> None:
    if details:  # e.g. the installer's own output, above the one-line summary
        sys.stderr.write("".join(f"  | {line}\n" for line in details.splitlines()))
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
    sys.stderr.flush()


def say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def out(line: str) -> None:
    sys.stdout.write(line + "\n")


# -- completion (only what is cheap: the project's own file, the ledger) --------------------
def complete_dirs(ctx, param, incomplete: str):
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


def complete_entry_points(ctx, param, incomplete: str) -> list[str]:
    project = _local_project(ctx)
    names = list(project.entry_points) if project is not None else []
    return [name for name in names if name.startswith(incomplete)]


def complete_parameters(ctx, param, incomplete: str) -> list[str]:
    project = _local_project(ctx)
    if project is None or "=" in incomplete:
        return []
    try:
        entry = project.entry_point(ctx.params.get("entry_point") or "main")
    except Exception:  # noqa: BLE001
        return []
    return [f"{name}=" for name in entry.parameters if name.startswith(incomplete)]


def complete_managers(ctx, param, incomplete: str) -> list[str]:
    return [name for name in ENV_MANAGERS if name.startswith(incomplete)]


def complete_run_ids(ctx, param, incomplete: str) -> list[str]:
    try:
        from runner.tracking.ledger import Ledger

        ledger = Ledger()
        try:
            return [r.id for r in ledger.list(None, 50) if r.id.startswith(incomplete)]
        finally:
            ledger.close()
    except Exception:  # noqa: BLE001
        return []


def complete_env_keys(ctx, param, incomplete: str) -> list[str]:
    try:
        from runner.store import Store

        return [env.key for env in Store().list() if env.key.startswith(incomplete)]
    except Exception:  # noqa: BLE001
        return []


# -- shared options ---------------------------------------------------------------------------
def debug_option(function):
    """--debug, taken by every command: main() reads it from the arguments (tracebacks shown)."""
    return click.option("--debug", is_flag=True, expose_value=False, help="show tracebacks")(function)


def project_options(with_parameters: bool = True):
    def decorate(function):
        options = [
            click.argument("uri", shell_complete=complete_dirs),
        ]
        if with_parameters:
            options += [
                click.option("-e", "--entry-point", default="main", show_default=True, help="entry point to run",
                             shell_complete=complete_entry_points),
                click.option("-P", "--param-list", multiple=True, metavar="NAME=VALUE", help="a parameter (repeatable)",
                             shell_complete=complete_parameters),
            ]
        options += [
            click.option("-v", "--version", default=None, help="git branch, tag or commit"),
            click.option("--env-manager", default=None, metavar="|".join(ENV_MANAGERS), shell_complete=complete_managers,
                         help="default: from the project (docker_env: docker, conda.yaml: conda, else uv)"),
        ]
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


BACKEND_CONFIG_HELP = "the backend's settings: a JSON object, or a file holding one"


def retry_options(function):
    """--retries and --retry-failed (runner.retries), for a run and for a sweep's trials."""
    options = [
        click.option("--retries", type=int, default=None, metavar="N",
                     help="run again, as a new run, up to N times when the cluster ended the job (a lost node, "
                          "a preemption)"),
        click.option("--retry-failed", is_flag=True, default=None, help="with --retries: a failed command too"),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def where_options(function):
    """Where a run (or a sweep's trials) runs and is recorded: -b, -c and the experiment."""
    options = [
        click.option("--experiment-name", default=None, help="the MLflow experiment to record in, by name (made if new)"),
        click.option("--experiment-id", default=None, help="the MLflow experiment to record in, by ID"),
        click.option("-b", "--backend", default="local", show_default=True, metavar="|".join(BACKENDS),
                     help="where it runs: on this machine, or as a Slurm or Ray job (-c: its config)"),
        click.option("-c", "--backend-config", default=None, metavar="JSON_OR_FILE", help=BACKEND_CONFIG_HELP),
        click.option("--tracking", type=click.Choice(["auto", "offline", "online"]), default=None,
                     help="offline: record on this machine for `mlproject runs sync`; auto (default, or "
                          "MLPROJECT_TRACKING): so too when the tracking server cannot be reached"),
    ]
    for option in reversed(options):
        function = option(function)
    return function


class Group(click.Group):
    """Commands listed in the order they are defined (the order of the README's tour)."""

    def list_commands(self, ctx) -> list[str]:
        return list(self.commands)


class Interrupted(BaseException):
    def __init__(self, signum: int):
        self.signum = signum


def _raise_interrupted(signum: int, _frame) -> None:
    raise Interrupted(signum)


def interrupt_on_signals() -> None:
    """Ctrl-C, SIGTERM and SIGHUP raise inside the work (KeyboardInterrupt, Interrupted) so that
    its cleanup runs: nothing is left half-made. Ctrl-C is taken even when this process was
    started with SIGINT ignored (a background job of a script, `cmd &`, inherits that)."""
    import signal

    from runner import startup

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, startup.where_safe(_raise_interrupted))
    signal.signal(signal.SIGINT, startup.where_safe(signal.default_int_handler))


def interrupted_signal(exc: BaseException) -> int:
    import signal

    return exc.signum if isinstance(exc, Interrupted) else signal.SIGINT


def interruptible(what: str, work: Callable[[], int]) -> int:
    """Run a store command's `work` so that a signal abandons it cleanly: what it was making is
    removed by its own cleanup, and the exit code is 128 + the signal's number."""
    import signal

    from runner import startup

    try:
        interrupt_on_signals()  # (inside the `try`: the first handler set may raise before the others are)
        return work()
    except (KeyboardInterrupt, Interrupted) as exc:
        startup.ignore()  # (cleaned up: a second signal must not turn the exit code into a death)
        number = interrupted_signal(exc)
        say(f"{what} interrupted by {signal.Signals(number).name}: nothing was left half-made")
        return 128 + number


