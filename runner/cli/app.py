"""The `mlproject` group: every command module's commands, in the order of the README's tour,
and `main`, which turns every failure into one `error:` line, one `hint:` line and the
documented exit code: our own errors (RunnerError) with theirs, click's usage errors with 2."""
from __future__ import annotations

import os
import sys

import importlib

import click

from runner import faults, startup
from runner.cli.common import Group, print_error, say
from runner.errors import EXIT_USAGE, RunnerError, out_of_descriptors

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, Sequence


def _version_message() -> str:
    from runner.version import __version__

    return f"mlproject-runner {__version__}"


# Each command's module, imported when the command is asked for (a run does not pay for the
# other seven: ~3 ms of a warm run), in the order `--help` lists them.
COMMANDS = {
    "run": "runner.cli.run", "job": "runner.cli.run", "sweep": "runner.cli.sweep",
    "validate": "runner.cli.project", "env": "runner.cli.env", "runs": "runner.cli.runs",
    "cache": "runner.cli.cache", "rerun": "runner.cli.run", "lock": "runner.cli.project",
}


class _CommandsOnDemand(Group):
    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        command = getattr(importlib.import_module(module), cmd_name)
        assert isinstance(command, click.Command) and command.name == cmd_name, (module, cmd_name)
        return command


@click.group(cls=_CommandsOnDemand, context_settings={"help_option_names": ["-h", "--help"]},
             help="Run MLflow projects, fast and exactly.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, help="show the version and exit",
              callback=lambda ctx, _param, value: (click.echo(_version_message()), ctx.exit()) if value else None)
def cli() -> None:
    pass


def main(argv: Sequence[str] | None = None) -> int:
    code = _dispatch(argv)
    startup.leaving()
    return code


def _dispatch(argv: Sequence[str] | None) -> int:
    startup.release()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args and "_MLPROJECT_COMPLETE" not in os.environ:  # the shell asking for completions
        with click.Context(cli, info_name="mlproject", help_option_names=["-h", "--help"]) as ctx:
            sys.stderr.write(cli.get_help(ctx) + "\n")
        return EXIT_USAGE
    result: Any = None
    try:
        faults.checkpoint("cli.dispatch")  # (Python's own Ctrl-C; the command's handlers are not set yet)
        result = cli.main(args, prog_name="mlproject", standalone_mode=False)
        # The work is done and recorded: a signal now could only kill the process in its last
        # milliseconds (Python restores the default handlers as it shuts down) and lose its exit code.
        startup.ignore()
        faults.checkpoint("cli.done")  # (the work recorded; signals ignored from here)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`mlproject runs list | head -1`): what it did not read is dropped
        # quietly, and Python's own flush at exit must not complain either. A run's exit code
        # stays its command's.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return result if isinstance(result, int) else 0
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "mlproject"
        print_error(exc.format_message(), f"see `{command} --help`")
        return EXIT_USAGE
    except click.ClickException as exc:
        print_error(exc.format_message(), "see `mlproject --help`")
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):  # (Ctrl-C before a command's own handlers: nothing was started)
        startup.ignore()  # (a second one must not turn the exit code into a death by signal)
        say("aborted")
        if startup.started_as_command():
            # Python may still take the KeyboardInterrupt for unhandled and end the process by
            # SIGINT after its exit code was decided (seen: exit -2 after "aborted", 121 in 1,500
            # random strikes, 2026-12-05); nothing of a run exists to be closed.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    except RunnerError as exc:
        if "--debug" in args:
            import traceback

            traceback.print_exc()
        hint = exc.hint
        if out_of_descriptors():  # (what failed could not open a file: a store, a log, a socket)
            hint = f"this process has run out of open files: {_RAISE_FILE_LIMIT}"
        print_error(exc.message, hint, exc.details)
        return exc.exit_code
    except Exception as exc:  # a full disk is the machine's state, not a bug: one line, as for any error
        said = _machine_limit(exc)
        if said is None or "--debug" in args:
            raise
        print_error(*said)
        return 1
    return result if isinstance(result, int) else 0


_RAISE_FILE_LIMIT = "raise the limit (`ulimit -n 4096` in the shell that runs mlproject)"


def _machine_limit(exc: BaseException) -> tuple[str, str] | None:
    """(error, hint) when the exception is the machine's state (a full disk, the open-file limit
    reached), which no traceback explains; None for anything else."""
    import errno

    unended = ("the next mlproject command ends in the ledger and in tracking whatever this one could not")
    number = exc.errno if isinstance(exc, OSError) else None
    if number in (errno.ENOSPC, errno.EDQUOT) or "database or disk is full" in str(exc):  # (sqlite3's own words)
        return (f"no space left on the device: {exc}",
                f"free space where MLPROJECT_HOME and the tracking store are; {unended}")
    if number in (errno.EMFILE, errno.ENFILE) or (number is None and out_of_descriptors()):
        # (sqlite3 says only "unable to open database file"; nothing more is imported here: that
        # needs a file too)
        which = "the system's" if number == errno.ENFILE else "this process's"
        return (f"too many open files ({which} limit reached): {exc}",
                f"{_RAISE_FILE_LIMIT}; {unended}")
    return None
