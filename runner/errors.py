"""The one exception tree every user-facing failure belongs to.

Each error carries a one-line message, an optional hint, and the exit code the
CLI uses. Exit codes are part of the documented interface (README):
  2  usage, validation, or anything wrong before a run is created
  1  a failure of the runner itself after the run was created
  the command's own exit code when the command fails
  128+N when the runner is interrupted by signal N (130 Ctrl-C, 143 SIGTERM)
"""
from __future__ import annotations

import errno
import os

from runner.status import RunStatus

EXIT_USAGE = 2
EXIT_FAILURE = 1


class RunnerError(Exception):
    """`message` is the one `error:` line; `hint` says what to do; `details` is
    supporting output shown above it (an installer's log); `problems` lists
    every problem when several were found (`mlproject validate` shows them all).

    Every error has a hint: the raise site's own, else its family's `default_hint`.
    `python_hint` says the same in the API's terms (`parameters={...}` rather than
    `-P`); `runner.run()` raises the error with it."""

    exit_code = EXIT_FAILURE
    default_hint = "run again with --debug for the traceback, and report it if it looks like a bug"

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        exit_code: int | None = None,
        details: str | None = None,
        problems: list[str] | None = None,
        python_hint: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint
        self.python_hint = python_hint
        self.details = details
        self.problems = problems or [message]
        if exit_code is not None:
            self.exit_code = exit_code

    def for_python(self) -> RunnerError:
        """The error as a Python caller should read it: its hint in the API's terms and, when
        the caller uses mlflow, also an `mlflow.exceptions.ExecutionException` (see as_mlflow)."""
        if self.python_hint:
            self.hint = self.python_hint
        return as_mlflow(self)

    def __str__(self) -> str:
        return self.message


_MLFLOW_TWINS: dict[type, type] = {}


def as_mlflow(error: RunnerError) -> RunnerError:
    """The same error, also an instance of `mlflow.exceptions.ExecutionException` (and so of
    `MlflowException`), which code written for `mlflow.projects.run` catches. Only when the caller
    has imported mlflow already: it is never imported for this."""
    import sys

    exceptions = sys.modules.get("mlflow.exceptions")
    execution = getattr(exceptions, "ExecutionException", None)
    if execution is None or isinstance(error, execution):
        return error
    cls = type(error)
    twin = _MLFLOW_TWINS.get(cls)
    if twin is None:
        twin = _MLFLOW_TWINS[cls] = type(cls.__name__, (cls, execution), {"__module__": cls.__module__,
                                                                         "__str__": RunnerError.__str__})
    converted = BaseException.__new__(twin)
    execution.__init__(converted, error.message)  # MlflowException's own fields (error_code, ...)
    converted.__dict__.update(error.__dict__)
    converted.args = error.args
    converted.__traceback__ = error.__traceback__
    return converted


class UsageError(RunnerError):
    """Bad flags or arguments."""

    exit_code = EXIT_USAGE
    default_hint = "see `mlproject --help` (or the command's --help)"


class ProjectError(RunnerError):
    """The project cannot be found, read, or is not a valid MLflow project."""

    exit_code = EXIT_USAGE
    default_hint = "check the project's path or URL; `mlproject validate PROJECT` checks it without running it"


class SpecValidationError(ProjectError):
    """An MLproject or environment file breaks its schema or cannot be parsed."""


class ParameterError(RunnerError):
    """A parameter value is missing, repeated, or not of its declared type."""

    exit_code = EXIT_USAGE
    default_hint = "the entry point's parameters and their types are in MLproject; `mlproject validate PROJECT -P ...` checks values"


class NotAvailableError(RunnerError):
    """A feature that exists in `mlflow run` but is not available here (yet)."""

    exit_code = EXIT_USAGE
    default_hint = "the README's \"Differences from mlflow run\" lists what is not available"


class EnvironmentBuildError(RunnerError):
    """Building or finding the project's environment failed."""

    exit_code = EXIT_USAGE
    default_hint = "check the environment file; `mlproject validate --resolve PROJECT` resolves it without building"


class LaunchError(RunnerError):
    """The command could not be started."""

    default_hint = "check the entry point's command in MLproject"


class TrackingError(RunnerError):
    """Tracking was asked for and cannot be done."""

    exit_code = EXIT_USAGE
    default_hint = "check MLFLOW_TRACKING_URI (and the store behind it); MLPROJECT_NO_TRACKING=1 runs with the local ledger only"


class RunFailedError(RunnerError):
    """A synchronous run ended FAILED or KILLED (mlflow raises ExecutionException here)."""

    default_hint = "the run's output: mlproject runs logs RUN_ID (or the SubmittedRun's log_path)"

    def __init__(self, submitted_run):
        # MLflow's words first ("Run (ID '...') failed"): callers match on them.
        status = submitted_run.get_status()
        how = ": killed" if status == RunStatus.KILLED else ""
        message = f"Run (ID '{submitted_run.run_id}') failed{how} (exit code {submitted_run.exit_code})"
        super().__init__(message, exit_code=submitted_run.exit_code or 1,
                         hint=f"the run's output: mlproject runs logs {getattr(submitted_run, 'run_id', 'RUN_ID')}",
                         python_hint=f"the run's output is in {getattr(submitted_run, 'log_path', 'its log')}")
        self.submitted_run = submitted_run


def out_of_descriptors(headroom: int = 4) -> bool:
    """Whether this process is at its open-file limit (fewer than `headroom` descriptors free: a
    sqlite store opens three): then what failed (a store that could not be opened, a connection
    not made) fails again however long it is asked, and waiting a minute only hides the cause
    (seen: ~58 s under `ulimit -n 8`)."""
    held: list[int] = []
    try:
        for _ in range(headroom):
            held.append(os.dup(2))
    except OSError as exc:
        return exc.errno in (errno.EMFILE, errno.ENFILE)
    finally:
        for fd in held:
            os.close(fd)
    return False
