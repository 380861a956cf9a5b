"""Code written for `mlflow.projects.run` works with `runner.run`: the exceptions it catches."""
from __future__ import annotations

import os
import subprocess
import sys


def _python(script: str, cwd, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}, **extra_env}
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_errors_are_mlflow_execution_exceptions_when_the_caller_uses_mlflow(make_project, tmp_path):
    failing = make_project("entry_points:\n  main:\n    command: 'exit 3'\n")
    script = (
        "import mlflow, runner\n"
        "from mlflow.exceptions import ExecutionException, MlflowException\n"
        f"try:\n    runner.run({str(failing)!r}, env_manager='local')\n"
        "except ExecutionException as exc:\n"
        "    print(isinstance(exc, MlflowException), isinstance(exc, runner.RunFailedError), exc.exit_code)\n"
        f"try:\n    runner.run({str(failing)!r}, backend='databricks')\n"
        "except MlflowException as exc:\n"
        "    print(type(exc).__name__, isinstance(exc, runner.NotAvailableError), exc.hint)\n"
    )
    out = _python(script, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["True True 3",
                                       'NotAvailableError True choose one of: backend="local", backend="slurm", backend="ray"']


def test_without_mlflow_imported_the_errors_stay_ours_and_mlflow_stays_out(make_project, tmp_path):
    failing = make_project("entry_points:\n  main:\n    command: 'exit 3'\n")
    script = (
        "import sys, runner\n"
        f"try:\n    runner.run({str(failing)!r}, env_manager='local')\n"
        "except runner.RunFailedError as exc:\n"
        "    print([c.__module__ for c in type(exc).__mro__ if 'mlflow' in c.__module__], 'mlflow' in sys.modules)\n"
    )
    out = _python(script, tmp_path, MLPROJECT_NO_TRACKING="1")  # a new sqlite store would need the mlflow library
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] False"
