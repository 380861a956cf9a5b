"""One run's tracking, from creation to a guaranteed end.

Decides where the run goes and how to reach it, creates it with MLflow's
project tags, gives the child its MLFLOW_* variables, logs the output log and
the environment's package list as artifacts, and ends it FINISHED, FAILED or
KILLED with retries. The local ledger records the same run either way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from runner.errors import TrackingError
from runner.tracking import BackgroundImport, RunContext, StartRequest, mlflow_installed, open_tracker, redact, resolve_uri, way_to
from runner.tracking.common import experiment_choice, retry
from runner.version import __version__

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Callable

    from runner.tracking import Tracker


@dataclass
class TrackingTarget:
    """Where the run will be recorded, decided before anything is created."""

    uri: str | None  # None: untracked
    asked: bool
    library: BackgroundImport | None = None
    note: str | None = None
    way: str | None = None  # see runner.tracking.way_to
    # Recorded offline (runner.tracking.offline): the server the run is for, credentials masked.
    offline_for: str | None = None
    # A server that cannot be reached when the run is created: record offline instead.
    may_go_offline: bool = False

    def go_offline(self, notify: Callable[[str], None] | None = None) -> None:
        """From here on, the run is recorded in the offline store, for `self.uri`."""
        from runner.tracking import offline

        intended = self.uri
        assert intended is not None  # (an untracked run has nowhere to be synced to)
        self.uri = offline.ensure_store(notify)
        self.way = way_to(self.uri)
        self.library = BackgroundImport() if self.way == "library" and self.library is None else self.library
        self.offline_for = redact(intended)
        self.may_go_offline = False


def plan_tracking(cwd: Path, experiment_name: str | None, experiment_id: str | None, run_id: str | None,
                  uri: str | None = None, mode: str = "auto", local: bool = True,
                  notify: Callable[[str], None] | None = None) -> TrackingTarget:
    """`uri`: this tracking store (a rerun goes where its original went); else the usual one.
    `mode` (runner.tracking.offline.MODES): "offline" records in this machine's offline store for
    a later `runs sync`; "auto" does so too when the run is `local` and its server cannot be
    reached; "online" never does."""
    if mode == "offline":
        if run_id:
            raise TrackingError(f"--run-id continues MLflow run {run_id} where it is: it cannot be recorded offline",
                                hint="leave out --tracking offline, or --run-id")
        target = TrackingTarget(uri or resolve_uri(cwd)[0], True)
        target.go_offline(notify)
        return target
    if os.environ.get("MLPROJECT_NO_TRACKING") and not (experiment_name or experiment_id or run_id or uri):
        return TrackingTarget(None, False)  # the local ledger only, by the user's choice
    uri, asked = (uri, True) if uri else resolve_uri(cwd)
    asked = asked or bool(experiment_name or experiment_id or run_id or os.environ.get("MLFLOW_EXPERIMENT_NAME") or os.environ.get("MLFLOW_EXPERIMENT_ID"))
    way = way_to(uri)
    if way == "library" and mlflow_installed():
        from runner.tracking.sqlite_direct import make_store

        way = "sqlite" if make_store(uri) else way
    if way != "library":
        return TrackingTarget(uri, asked, way=way,
                              may_go_offline=mode == "auto" and local and way == "rest" and not run_id)
    if not mlflow_installed():
        if asked:
            raise TrackingError(
                f"tracking to {redact(uri)} needs the mlflow package, which is not installed",
                hint="pip install 'mlproject-runner[mlflow]', or use an http(s) tracking server",
            )
        return TrackingTarget(None, False, note="note: mlflow is not installed; this run is recorded in the local ledger only")
    return TrackingTarget(uri, asked, BackgroundImport(), way=way)


@dataclass
class TrackedRun:
    tracker: Tracker | None
    context: RunContext | None
    request: StartRequest | None = None  # what record_start() logs once the ledger has the run
    artifacts: list[tuple[Path, str | None]] = field(default_factory=list)
    ended: bool = False
    end_recorded: bool = False  # the tracking store has the run's end, and every artifact
    # Where the artifacts not yet in the store are listed (all of them while the command runs, so
    # that a runner killed meanwhile loses none), for a later invocation to deliver with the run's
    # end (see runner.tracking.runs.end_in_tracking); None: a failed upload is only warned of.
    undelivered: Path | None = None
    # Tags sent with the run's end rather than on the way to the command (runner.timing's).
    end_tags: dict[str, str] = field(default_factory=dict)

    @property
    def continued(self) -> bool:
        """An existing MLflow run (--run-id)."""
        return self.request is not None and self.request.existing_run_id is not None

    @property
    def run_id(self) -> str | None:
        return self.context.run_id if self.context else None

    def child_env(self) -> dict[str, str]:
        return self.context.child_env() if self.context else {}

    def record_start(self) -> None:
        """Log the parameters. Separate from the creation so that a failure here, with the
        run already made, ends it FAILED through the ledger like any other failure."""
        if self.context is not None and self.request is not None:
            self.tracker.record_start(self.request, self.context.run_id)  # type: ignore[union-attr]

    def log_metrics(self, metrics: dict[str, float]) -> None:
        if self.context is not None and metrics:
            self.tracker.log_metrics(self.context.run_id, metrics)  # type: ignore[union-attr]

    def set_status(self, status: str) -> None:
        if self.context is not None:
            self.tracker.set_status(self.context.run_id, status)  # type: ignore[union-attr]

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.context is not None and tags:
            self.tracker.set_tags(self.context.run_id, tags)  # type: ignore[union-attr]

    def finish(self, status: str, notify: Callable[[str], None]) -> str | None:
        """Log artifacts and end the run (retried for a bounded time). Returns a problem, if any.

        The artifact uploads and the status update go out at the same time: each is
        one round trip to a tracking server, and the run's end waits for both.
        """
        if self.context is None or self.ended:
            return None
        self.ended = True
        import threading

        problems: list[str] = []
        missed: list[tuple[Path, str | None]] = []
        # The end's tags go with the uploads, on the uploads' own client, where there is one (a
        # server: no round trip more on the end's way); else with the end itself (a local store:
        # one commit).
        tags_with_end = getattr(self.tracker, "clone", None) is None

        def upload() -> None:
            if self.end_tags and not tags_with_end:
                self._send_end_tags(self.uploader, problems)
            for path, artifact_path in self.artifacts:
                if path.exists():
                    try:
                        self.uploader.log_artifact(self.context.run_id, path, artifact_path, self.context.artifact_uri)  # type: ignore[union-attr]
                    except (TrackingError, OSError) as exc:
                        problems.append(f"artifact {path.name}: {exc}")
                        missed.append((path, artifact_path))

        uploading = threading.Thread(target=upload, name="mlproject-artifacts")
        uploading.start()
        try:
            end_tags = self.end_tags if tags_with_end else None
            retry(lambda: self.tracker.end(self.context.run_id, status, tags=end_tags), "ending the run")  # type: ignore[union-attr]
            self.end_recorded = True
        except TrackingError as exc:
            problems.append(str(exc))
        finally:
            uploading.join()
        if self.undelivered is not None:
            if missed:
                from runner.tracking.undelivered import keep

                keep(self.undelivered, self.context.artifact_uri, missed)
                self.end_recorded = False  # (a later invocation delivers them, then ends the run again)
            else:
                self.undelivered.unlink(missing_ok=True)
        for problem in problems:
            notify(f"warning: tracking: {problem}")
        return "; ".join(problems) or None

    def _send_end_tags(self, tracker, problems: list[str]) -> None:
        try:
            tracker.set_tags(self.context.run_id, self.end_tags)  # type: ignore[union-attr]
        except TrackingError as exc:
            problems.append(f"tags: {exc}")

    @property
    def uploader(self):
        """A second client for the uploads, so they do not share a connection with the update."""
        clone = getattr(self.tracker, "clone", None)
        return clone() if clone is not None else self.tracker


def begin_tracking(
    plan: TrackingTarget,
    *,
    experiment_name: str | None,
    experiment_id: str | None,
    run_id: str | None,
    run_name: str | None,
    tags: dict[str, str],
    params: dict[str, str],
    notify: Callable[[str], None] | None = None,
) -> Callable[[], TrackedRun]:
    """Start creating the run; the returned function waits for it.

    Over REST the creation is sent at once and answered while the caller does
    the rest of its preparation; other stores create the run here. A server that
    cannot be reached (the creation never left) makes the run an offline one when
    the plan allows it; `notify` says so."""
    if plan.uri is None:
        return lambda: TrackedRun(None, None)
    try:
        return _begin(plan, experiment_name, experiment_id, run_id, run_name, tags, params)
    except TrackingError as exc:
        if not (plan.may_go_offline and getattr(exc, "unreachable", False)):
            raise
        plan.go_offline(notify)
        if notify is not None:
            notify(f"warning: {exc.message}; this run is recorded offline, and `mlproject runs sync` sends it "
                   "there later")
    from runner.tracking import ATTEMPT_TAG, offline, pending

    if ATTEMPT_TAG in tags:  # its pending note must name where the run is made now
        pending.note(tags[ATTEMPT_TAG], plan.uri, *offline.experiment_here(*experiment_choice(experiment_name,
                                                                                             experiment_id)))
    return _begin(plan, experiment_name, experiment_id, run_id, run_name, tags, params)


def _begin(plan: TrackingTarget, experiment_name: str | None, experiment_id: str | None, run_id: str | None,
           run_name: str | None, tags: dict[str, str], params: dict[str, str]) -> Callable[[], TrackedRun]:
    assert plan.uri is not None  # (an untracked run is begun by its caller)
    if plan.offline_for is not None:
        from runner.tracking import offline

        experiment_name, experiment_id = offline.experiment_here(*experiment_choice(experiment_name, experiment_id))
        if plan.offline_for:
            tags = {**tags, offline.TARGET_TAG: plan.offline_for}
    tracker = open_tracker(plan.uri, plan.library, plan.way)
    request = StartRequest(experiment_name, experiment_id, run_name, tags, params, run_id)
    begin = getattr(tracker, "begin", None)
    if begin is not None:
        created = begin(request)
        from runner import faults

        faults.checkpoint("tracking.sent")  # (sent to the server, its answer not read yet)
        return lambda: TrackedRun(tracker, created(), request=request)
    tracked = TrackedRun(tracker, tracker.start(request), request=request)
    return lambda: tracked


def project_tags(
    source_name: str,
    entry_point: str,
    env_manager: str,
    env_key: str | None,
    git_commit: str | None = None,
    repo_url: str | None = None,
    branch: str | None = None,
    dirty: bool | None = None,
    branch_named: bool = False,
    backend: str = "local",
    parent_run_id: str | None = None,
) -> dict[str, str]:
    tags = {
        "mlflow.user": _user(),
        "mlflow.source.name": source_name,
        "mlflow.source.type": "PROJECT",
        "mlflow.project.entryPoint": entry_point,
        "mlflow.project.backend": backend,
        "mlproject.version": __version__,
    }
    if env_manager != "local":
        tags["mlflow.project.env"] = env_manager
    if env_key:
        tags["mlproject.env.key"] = env_key
    if git_commit:
        tags["mlflow.source.git.commit"] = git_commit
    if repo_url:
        tags["mlflow.source.git.repoURL"] = repo_url
    if branch:
        tags["mlflow.source.git.branch" if branch_named else "mlproject.source.git.branch"] = branch
    if dirty is not None:  # a local working copy: did the code differ from the commit?
        tags["mlproject.source.git.dirty"] = "true" if dirty else "false"
    parent = parent_run_id or active_mlflow_run() or os.environ.get("MLFLOW_RUN_ID")
    if parent:  # started from inside a run (a workflow step): a child of it
        tags["mlflow.parentRunId"] = parent
    return tags


def active_mlflow_run() -> str | None:
    """The run the caller opened with `mlflow.start_run()` in this process, as MLflow's own
    `projects.run` sees it. Only when the caller imported mlflow: it is never imported for this."""
    import sys

    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is None:
        return None
    try:
        run = fluent.active_run()
    except Exception:  # noqa: BLE001 - a parent tag is not worth failing a run for
        return None
    return run.info.run_id if run is not None else None


def _user() -> str:
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return "unknown"
