"""mlproject-runner as an MLflow project backend, for teams that keep calling MLflow:

    mlflow run ./project -b mlproject -c '{"backend": "slurm", "partition": "gpu"}'
    mlflow.projects.run(uri, backend="mlproject", backend_config={"backend": "ray", ...})

MLflow finds this module through the `mlflow.project_backend` entry point group (see
pyproject.toml) and calls `MlprojectBackend.run`, which hands the request to the same
pipeline as `mlproject run` and `runner.run` (environments, git cache, ledger, backends).
`backend_config` names this runner's backend (`"backend"`: local, slurm or ray; local when
left out); its other keys are that backend's config, as `-c` gives them to `mlproject run`.

As MLflow asks of a plugin, `run` returns once the run is submitted (the command started,
or the cluster job queued); MLflow then waits for it when the caller is synchronous, and
its callers can `wait()`, `get_status()` and `cancel()` the returned run. A local run is
kept by its own process (runner.keeper), so it goes on when `mlflow run -b mlproject`, which
MLflow runs asynchronously for every plugin backend, returns.

Imported by MLflow only: mlflow is installed wherever this module is loaded.
"""
from __future__ import annotations

from typing import Any

from mlflow.projects.backend.abstract_backend import AbstractBackend
from mlflow.projects.submitted_run import SubmittedRun

from runner.launch import RunHandle

# What MLflow itself adds to every plugin's backend_config (mlflow.projects.utils), and the
# RunRequest field each one is. SYNCHRONOUS is MLflow's to honour: it waits on the result.
_MLFLOW_KEYS = {
    "ENV_MANAGER": "env_manager",
    "DOCKER_ARGS": "docker_args",
    "STORAGE_DIR": "storage_dir",
    "build_image": "build_image",
    "docker_auth": "docker_auth",
    "_mlflow_local_backend_run_id": "run_id",
}
_IGNORED_KEYS = ("SYNCHRONOUS",)


class MlprojectBackend(AbstractBackend):
    """The `mlproject` backend of `mlflow run -b` and `mlflow.projects.run(backend=)`."""

    def run(self, project_uri: str, entry_point: str, params: dict[str, Any] | None, version: str | None,
            backend_config: dict[str, Any] | None, tracking_uri: str | None,
            experiment_id: str | None) -> MlprojectSubmittedRun:
        from runner import api
        from runner.errors import RunnerError
        from runner.request import RunRequest

        config = dict(backend_config or {})
        options = {field: config.pop(key) for key, field in _MLFLOW_KEYS.items() if config.get(key) is not None}
        for key in (*_IGNORED_KEYS, *_MLFLOW_KEYS):
            config.pop(key, None)
        backend = str(config.pop("backend", "local") or "local")
        request = RunRequest(
            uri=project_uri, entry_point=entry_point or "main", version=version, parameters=params or {},
            experiment_id=experiment_id, backend=backend, backend_config=config,
            # Asynchronous whatever MLflow's caller asked: MLflow waits on the returned run itself.
            synchronous=False,
            # Where MLflow's caller tracks (mlflow.set_tracking_uri may have set it in-process only).
            tracking_uri=tracking_uri or None,
            **options,
        )
        try:
            return MlprojectSubmittedRun(api.submit_for_python(request))
        except RunnerError as exc:
            raise exc.for_python() from None


class MlprojectSubmittedRun(SubmittedRun):
    """MLflow's SubmittedRun over this runner's handle of the run."""

    def __init__(self, handle: RunHandle):
        super().__init__()
        self.handle = handle

    @property
    def run_id(self) -> str:
        return self.handle.run_id

    def wait(self) -> bool:
        return self.handle.wait()

    def get_status(self) -> str:
        return self.handle.get_status()

    def cancel(self) -> None:
        """Stop the run and wait until its end (KILLED) is recorded."""
        self.handle.cancel()
