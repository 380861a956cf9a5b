"""mlproject-runner: run MLflow projects, fast and exactly.

    import runner
    submitted = runner.run("./project", parameters={"alpha": 0.4}, synchronous=False)
    submitted.wait()

Public API only; heavy modules load on first use so `import runner` stays cheap.
"""
from __future__ import annotations

from runner import startup as _startup

if _startup.started_as_command():  # (a signal while the command imports: see runner.startup)
    _startup.hold()
    _startup.tune_collector()
    from runner import faults as _faults

    _faults.checkpoint("import")

from runner.errors import (
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
from runner.version import __version__

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

    from runner.api import attach, rerun, run
    from runner.sweeps import sweep
    from runner.launch import SubmittedRun
    from runner.project.spec import load_project

__all__ = [
    "run",
    "attach",
    "rerun",
    "sweep",
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
