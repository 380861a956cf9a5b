"""The one exception tree every user-facing failure belongs to.

Each error carries a one-line message, an optional hint, and the exit code the
CLI uses. Exit codes are part of the documented interface (README):
  2  usage, validation, or anything wrong before a run is created
  1  a failure of the runner itself after the run was created
  the command's own exit code when the command fails
  128+N when the runner is interrupted by signal N (130 Ctrl-C, 143 SIGTERM)
"""
from __future__ import annotations

EXIT_USAGE = 2
EXIT_FAILURE = 1


class RunnerError(Exception):
    """`message` is the one `error:` line; `hint` says what to do; `details` is
    supporting output shown above it (an installer's log); `problems` lists
    every problem when several were found (`mlproject validate` shows them all)."""

    exit_code = EXIT_FAILURE

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        exit_code: int | None = None,
        details: str | None = None,
        problems: list[str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details
        self.problems = problems or [message]
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(RunnerError):
    """Bad flags or arguments."""

    exit_code = EXIT_USAGE


class ProjectError(RunnerError):
    """The project cannot be found, read, or is not a valid MLflow project."""

    exit_code = EXIT_USAGE


class SpecValidationError(ProjectError):
    """An MLproject or environment file breaks its schema or cannot be parsed."""


class ParameterError(RunnerError):
    """A parameter value is missing, repeated, or not of its declared type."""

    exit_code = EXIT_USAGE


class NotAvailableError(RunnerError):
    """A feature that exists in `mlflow run` but is not available here (yet)."""

    exit_code = EXIT_USAGE


class EnvironmentBuildError(RunnerError):
    """Building or finding the project's environment failed."""

    exit_code = EXIT_USAGE


class LaunchError(RunnerError):
    """The command could not be started."""


class TrackingError(RunnerError):
    """Tracking was asked for and cannot be done."""

    exit_code = EXIT_USAGE


class RunFailedError(RunnerError):
    """A synchronous run ended FAILED or KILLED (mlflow raises ExecutionException here)."""

    def __init__(self, message: str, submitted_run, exit_code: int):
        super().__init__(message, exit_code=exit_code)
        self.submitted_run = submitted_run
