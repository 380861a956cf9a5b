"""MLflow tracking through the mlflow package: every store MLflow supports."""
from __future__ import annotations

import contextlib
from pathlib import Path

from runner.errors import TrackingError
from runner.tracking import RunContext, StartRequest, redact
from runner.tracking.common import experiment_choice, now_ms, refuse_changed_params, tag_filter
from runner.status import RunStatus


@contextlib.contextmanager
def _store_init_lock(uri: str):
    if not uri.startswith("sqlite:///"):
        yield
        return
    import hashlib

    from runner import home
    from runner.filelock import held

    name = hashlib.sha256(uri.encode()).hexdigest()[:24]
    with held(home.subdir("locks") / f"sqlite-init-{name}.lock"):
        yield


class LibraryTracker:
    def __init__(self, uri: str, library_import=None):
        self.uri = uri
        self._import = library_import
        self._client = None

    def client(self):
        if self._client is None:
            if self._import is not None:
                self._import.wait()
            try:
                from mlflow.tracking import MlflowClient
            except ImportError:
                raise TrackingError(
                    f"tracking to {redact(self.uri)} needs the mlflow package",
                    hint="pip install 'mlproject-runner[mlflow]', or use an http(s) tracking server",
                ) from None
            with _store_init_lock(self.uri):
                client = MlflowClient(tracking_uri=self.uri)
                if self.uri.startswith("sqlite:"):
                    # Creating or upgrading a sqlite store happens on first use; MLflow's
                    # migrations break when several processes do it at once, so one does.
                    client.search_experiments(max_results=1)
            self._client = client
        return self._client

    def _call(self, what: str, action):
        try:
            return action()
        except TrackingError:
            raise
        except Exception as exc:  # noqa: BLE001 - any store failure becomes one clear line
            message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise TrackingError(f"MLflow tracking ({redact(self.uri)}): {what} failed: {message}") from None

    def start(self, request: StartRequest) -> RunContext:
        client = self._call("connecting", self.client)

        def create() -> RunContext:
            from mlflow.entities import RunStatus

            if request.existing_run_id:
                run = client.get_run(request.existing_run_id)
                refuse_changed_params(run.info.run_id, dict(run.data.params), request.params)
                client.update_run(run.info.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            else:
                name, experiment_id = experiment_choice(request.experiment_name, request.experiment_id)
                if experiment_id is None:
                    assert name is not None  # (experiment_choice names one whenever it gives no ID)
                    experiment_id = _experiment_by_name(client, name)
                run = client.create_run(experiment_id=str(experiment_id), tags=request.tags, run_name=request.run_name)
            return RunContext(run.info.run_id, str(run.info.experiment_id), self.uri, run.info.artifact_uri or "")

        return self._call("creating the run", create)

    def record_start(self, request: StartRequest, run_id: str) -> None:
        """Log the parameters (and a continued run's tags: a new run got them at creation)."""
        client = self.client()

        def log() -> None:
            from mlflow.entities import Param, RunTag

            params = [Param(k, v) for k, v in request.params.items()]
            tags = [RunTag(k, v) for k, v in request.tags_for_existing_run().items()] if request.existing_run_id else []
            if params or tags:
                client.log_batch(run_id, params=params, tags=tags)

        self._call("logging the parameters", log)

    def end(self, run_id: str, status: str, end_time_ms: int | None = None, tags: dict[str, str] | None = None) -> None:
        if tags:
            self.set_tags(run_id, tags)
        self._call("ending the run", lambda: self.client().set_terminated(run_id, status, end_time_ms or now_ms()))

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        client = self.client()
        self._call("logging metrics", lambda: [client.log_metric(run_id, k, v) for k, v in metrics.items()])

    def set_status(self, run_id: str, status: str) -> None:
        """A status that is not an end (SCHEDULED while a cluster job waits in its queue)."""
        self._call("setting the run's status", lambda: self.client().update_run(run_id, status=status))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        client = self.client()

        def tag() -> None:  # (one request for all: a sweep tags each of its many trials)
            from mlflow.entities import RunTag

            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

        self._call("tagging the run", tag)

    def find_running(self, experiment_name: str | None, experiment_id: str | None, key: str, value: str) -> list[str]:
        """IDs of the RUNNING runs tagged key=value."""
        client = self._call("connecting", self.client)

        def search() -> list[str]:
            name, chosen = experiment_choice(experiment_name, experiment_id)
            if chosen is None:
                assert name is not None  # (experiment_choice names one whenever it gives no ID)
                found = client.get_experiment_by_name(name)
                if found is None:
                    return []
                chosen = found.experiment_id
            runs = client.search_runs([str(chosen)], filter_string=tag_filter(key, value))
            return [run.info.run_id for run in runs if run.info.status == RunStatus.RUNNING]

        return self._call("searching runs", search)

    def results(self, run_id: str) -> tuple[dict[str, str], dict[str, float]]:
        """The run's parameters and the last value of each metric."""
        run = self._call("reading the run", lambda: self.client().get_run(run_id))
        return dict(run.data.params), dict(run.data.metrics)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of each value the run logged under `key`, by step (a step's last value)."""
        history = self._call("reading the metric's history", lambda: self.client().get_metric_history(run_id, key))
        ordered = sorted(history, key=lambda m: (m.step, m.timestamp))
        return sorted({int(m.step): float(m.value) for m in ordered}.items())

    def recorded_run(self, run_id: str):
        from runner.tracking import RecordedRunData

        run = self._call("reading the run", lambda: self.client().get_run(run_id))
        return RecordedRunData(run_id, str(run.info.experiment_id), run.info.status, run.info.artifact_uri or "",
                               dict(run.data.tags), dict(run.data.params))

    def read_artifact(self, run, path: str) -> bytes | None:
        import tempfile

        def download() -> bytes | None:
            listed = {a.path for a in self.client().list_artifacts(run.run_id, path.rpartition("/")[0] or None)}
            if path not in listed:
                return None
            with tempfile.TemporaryDirectory(prefix="mlproject-artifact-") as scratch:
                return Path(self.client().download_artifacts(run.run_id, path, scratch)).read_bytes()

        return self._call("reading an artifact", download)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None, artifact_uri: str = "") -> None:
        self._call("logging an artifact", lambda: self.client().log_artifact(run_id, str(path), artifact_path))


def _experiment_by_name(client, name: str) -> str:
    """The experiment's ID, created if missing (another run creating it at the same moment is fine)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id
