"""mlproject-runner: run MLflow projects, fast and exactly.

    import runner
    submitted = runner.run("./project", parameters={"alpha": 0.4}, synchronous=False)
    submitted.wait()

Public API only; heavy modules load on first use so `import runner` stays cheap.
"""
import sys as _sys

# Whether this process is one of the project's commands: the `mlproject` script, or
# `python -m runner…`, during whose package import `sys.argv[0]` is "-m". Asked here, first,
# because later `sys.argv[0]` is the module's path (runner.startup.started_as_command).
_STARTED_AS_COMMAND = bool(_sys.argv) and (_sys.argv[0] == "-m" or _sys.argv[0].rsplit("/", 1)[-1] == "mlproject")

try:
    if _STARTED_AS_COMMAND:  # (a signal while the command imports: see runner.startup)
        from runner import startup as _startup

        _startup.hold()
        if _startup.import_lock_left_held():
            raise KeyboardInterrupt  # (the Ctrl-C that left it so)
        _startup.tune_collector()
        from runner import faults as _faults

        _faults.checkpoint("import")
except BaseException as _interrupted:
    # A Ctrl-C in the instant between the command's first line and its handlers: Python raises
    # it from inside these imports (wrapped in a RuntimeError when it lands in an enum member's
    # creation). Nothing exists yet: exit as the handlers would have, quietly with 128+SIGINT.
    if isinstance(_interrupted, KeyboardInterrupt) or isinstance(_interrupted.__cause__, KeyboardInterrupt):
        import os as _os

        _os._exit(130)
    raise

# (Below the signals' hold on purpose: nothing may be imported before it.)
from runner.errors import (  # noqa: E402
    EnvironmentBuildError,
    LaunchError,
    NotAvailableError,
    ParameterError,
    ProjectError,
    RunFailedError,
    RunnerError,
    SpecValidationError,
    TrackingError,
    UsageError,
)
from runner.version import __version__  # noqa: E402

from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from typing import Any

    from runner.api import attach, rerun, run, sync_runs
    from runner.sweeps import sweep
    from runner.launch import SubmittedRun
    from runner.project.spec import load_project

__all__ = [
    "run",
    "attach",
    "rerun",
    "sweep",
    "sync_runs",
    "SubmittedRun",
    "load_project",
    "RunnerError",
    "UsageError",
    "ProjectError",
    "SpecValidationError",
    "ParameterError",
    "NotAvailableError",
    "EnvironmentBuildError",
    "LaunchError",
    "TrackingError",
    "RunFailedError",
    "__version__",
]

_LAZY = {
    "run": ("runner.api", "run"),
    "attach": ("runner.api", "attach"),
    "rerun": ("runner.api", "rerun"),
    "sweep": ("runner.sweeps", "sweep"),
    "sync_runs": ("runner.api", "sync_runs"),
    "SubmittedRun": ("runner.launch", "SubmittedRun"),
    "load_project": ("runner.project.spec", "load_project"),
}


def __getattr__(name: str) -> "Any":
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'runner' has no attribute {name!r}")
