"""Recording runs in MLflow tracking.

    resolve_uri()  where runs go, exactly as MLflow decides it
    open_tracker() the fastest exact way to reach that store:
        http(s)://                  RestTracker (MLflow's REST API; no mlflow import)
        sqlite at a verified schema SqliteTracker (direct writes; no mlflow import)
        anything else               LibraryTracker (the mlflow package, imported in
                                    the background while the environment is prepared)

Every tracker has the same few methods: start(request) -> RunContext (the run
exists), record_start(request, run_id) (its parameters), end(run_id, status),
log_artifact(run_id, path, artifact_path), and find_running(experiment, key,
value) for the runs a dead runner left. The REST tracker also has
begin(request), which sends the creation and returns a function that waits
for it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from runner.errors import TrackingError

from typing import TYPE_CHECKING

# Every run the runner creates carries this tag, whose value is written down before the
# creation is sent: a run whose creation's answer was lost can be found by it.
ATTEMPT_TAG = "mlproject.attempt"

if TYPE_CHECKING:
    from typing import Protocol

    class Tracker(Protocol):
        """The tracking-store seam: what RestTracker, SqliteTracker and LibraryTracker each do
        (open_tracker's return type makes the type checker hold each to it)."""

        uri: str

        def start(self, request: StartRequest) -> RunContext: ...

        def record_start(self, request: StartRequest, run_id: str) -> None: ...

        def end(self, run_id: str, status: str, end_time_ms: int | None = None,
                tags: dict[str, str] | None = None) -> None: ...  # (tags: set with the end, at once)

        def set_tags(self, run_id: str, tags: dict[str, str]) -> None: ...

        def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None,
                         artifact_uri: str = "") -> None: ...

        def find_running(self, experiment_name: str | None, experiment_id: str | None, key: str,
                         value: str) -> list[str]: ...

        def results(self, run_id: str) -> tuple[dict[str, str], dict[str, float]]: ...

        def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]: ...

        def recorded_run(self, run_id: str) -> RecordedRunData: ...

        def read_artifact(self, run: RecordedRunData, path: str) -> bytes | None: ...


@dataclass(frozen=True)
class RecordedRunData:
    """A run as a tracking store has it (what `mlproject rerun` needs of a run it did not start)."""

    run_id: str
    experiment_id: str
    status: str
    artifact_uri: str
    tags: dict[str, str]
    params: dict[str, str]


def read_local_artifact(artifact_uri: str, path: str) -> bytes | None:
    """An artifact under a local artifact root (a path or file:// URI); None if absent.
    (Raises TrackingError when the root is not local: the caller's store knows another way.)"""
    from runner.tracking.artifacts import local_root

    root = local_root(artifact_uri)
    if root is None:
        raise TrackingError(f"cannot read artifacts at {artifact_uri!r} without the mlflow package",
                            hint="pip install 'mlproject-runner[mlflow]'")
    try:
        return (root / path).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


@dataclass(frozen=True)
class StartRequest:
    experiment_name: str | None
    experiment_id: str | None
    run_name: str | None
    tags: dict[str, str]
    params: dict[str, str]
    existing_run_id: str | None = None  # --run-id: continue this run

    def tags_for_existing_run(self) -> dict[str, str]:
        """The tags a continued run is given (a new run gets them all at creation); its name stays as it was."""
        return {k: v for k, v in self.tags.items() if k != "mlflow.runName"}


@dataclass(frozen=True)
class RunContext:
    run_id: str
    experiment_id: str
    tracking_uri: str  # as the child must see it (absolute for local stores)
    artifact_uri: str = ""
    extra: dict = field(default_factory=dict)

    def child_env(self) -> dict[str, str]:
        return {
            **self.extra,
            "MLFLOW_RUN_ID": self.run_id,
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_EXPERIMENT_ID": self.experiment_id,
        }


def resolve_uri(cwd: Path) -> tuple[str, bool]:
    """(tracking URI, whether the user asked for it), as MLflow 3.7+ resolves it."""
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return absolute_uri(configured, cwd), True
    if _has_file_store_data(cwd / "mlruns"):
        return (cwd / "mlruns").as_uri(), False
    return f"sqlite:///{cwd / 'mlflow.db'}", False


def _has_file_store_data(mlruns: Path) -> bool:
    # MLflow's test: an experiment directory (digits) holding meta.yaml. A sqlite
    # store's artifacts also live in ./mlruns/<id>/, but without meta.yaml.
    try:
        with os.scandir(mlruns) as entries:
            return any(e.is_dir() and e.name.isdigit() and os.path.lexists(os.path.join(e.path, "meta.yaml")) for e in entries)
    except OSError:
        return False


def absolute_uri(uri: str, cwd: Path) -> str:
    # The command runs in the project directory: a relative store path must keep
    # pointing where the caller meant.
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{cwd / uri[len('sqlite:///'):]}"
    if "://" not in uri and not uri.startswith(("databricks", "sqlite:")):
        return Path(cwd, uri).absolute().as_uri()
    if uri.startswith("file:") and not uri.startswith("file:///") and not uri.startswith("file://"):
        return Path(cwd, uri[len("file:"):]).absolute().as_uri()
    return uri


def redact(uri: str) -> str:
    """A URI with any password or token masked, for messages and records."""
    from runner.sources import redact_url

    return redact_url(uri)


def local_store_path(uri: str) -> Path | None:
    """The file (sqlite:///PATH) or directory (file://PATH) of a store on this machine; None
    for any other kind of store."""
    for scheme in ("sqlite:///", "file://"):
        if uri.startswith(scheme):
            return Path(uri[len(scheme):])
    return None


def way_to(uri: str) -> str:
    """How `uri` is reached: "rest", "sqlite" (direct writes, verified schema) or "library"."""
    if uri.startswith(("http://", "https://")):
        return "rest"
    if uri.startswith("sqlite:///") and not os.environ.get("MLFLOW_WORKSPACE"):
        from runner.tracking.sqlite_direct import verified_schema

        path = local_store_path(uri)
        if path is not None and path.is_file() and verified_schema(path):
            return "sqlite"
    return "library"


def open_tracker(uri: str, library_import=None, way: str | None = None, timeout: float | None = None) -> Tracker:
    """The tracker for `uri` (`way` as decided by way_to, computed when not given).

    `timeout` bounds each request to a tracking server (otherwise MLPROJECT_HTTP_TIMEOUT,
    else MLFLOW_HTTP_REQUEST_TIMEOUT, else 120 s as MLflow)."""
    way = way or way_to(uri)
    if way == "rest":
        from runner.tracking.rest import RestTracker

        return RestTracker(uri, timeout)
    if way == "sqlite":
        from runner.tracking.sqlite_direct import SqliteTracker

        from runner.tracking import offline

        path = local_store_path(uri)
        assert path is not None  # (way_to found a sqlite:/// file)
        return SqliteTracker(uri, path, offline.artifact_root() if offline.is_store(uri) else None)
    from runner.tracking.mlflow_lib import LibraryTracker

    return LibraryTracker(uri, library_import)


def tracker_for(tracking_uri: str, quick: bool = False) -> Tracker:
    """A tracker for a URI as the ledger stores it (redacted): the current MLFLOW_TRACKING_URI,
    credentials and all, when it is the same store. `quick`: a short network timeout."""
    return open_tracker(with_credentials(tracking_uri), timeout=3.0 if quick else None)


def with_credentials(recorded_uri: str) -> str:
    """A URI as the ledger or a tag records it (credentials masked): the current
    MLFLOW_TRACKING_URI, credentials and all, when it names the same store; else as recorded."""
    current = os.environ.get("MLFLOW_TRACKING_URI")
    return current if current and redact(current) == recorded_uri else recorded_uri


class BackgroundImport:
    """Import a module in a thread so that its cost overlaps other work: mlflow (~2.5 s) while
    the environment is prepared; what a run's end needs while its command runs."""

    def __init__(self, module: str = "mlflow.tracking") -> None:
        import threading

        if module.startswith("mlflow"):
            # dataclasses peeks at sys.modules["typing"] without the import lock: were
            # the thread below half-way through importing typing (mlflow imports it), a
            # dataclass defined meanwhile in this thread would see a partial module and
            # fail. So typing is imported here first (this path costs seconds anyway).
            import typing  # noqa: F401

        self.module = module
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"mlproject-import-{module}")
        self._thread.start()

    def _run(self) -> None:
        try:
            __import__(self.module)
        except BaseException as exc:  # noqa: BLE001 - reported when the module is needed
            self.error = exc

    def wait(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise TrackingError(
                f"cannot use MLflow tracking: importing mlflow failed ({self.error.__class__.__name__}: {self.error})",
                hint="pip install 'mlproject-runner[mlflow]', or set MLFLOW_TRACKING_URI to an http(s) server",
            )


def mlflow_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("mlflow") is not None
