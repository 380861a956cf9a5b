"""What flows down the pipeline: the caller's request, the plan made of it, and the run being made.

Shared by `runner.api` (which makes them) and `runner.backends` (which runs them), so that
neither layer reaches into the other."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping

    from runner.envs import PlannedEnv
    from runner.project.params import Invocation
    from runner.project.spec import Project
    from runner.sources import ProjectDir
    from runner.timing import Timings
    from runner.tracking.ledger import Ledger
    from runner.tracking.session import TrackedRun, TrackingTarget

    Notify = Callable[[str], None]


@dataclass(frozen=True)
class JobOf:
    """Carried by the request of a runner inside a cluster job: which backend, which ledger row
    (see runner.backends.job)."""

    backend: str
    run_id: str
    own_ledger: bool = False  # the node keeps its own ledger (it does not share MLPROJECT_HOME)


@dataclass(frozen=True)
class RunRequest:
    """What the caller asked for: the arguments of `mlflow.projects.run` and a few of ours.

    It flows through the pipeline unchanged; each stage reads what it needs."""

    uri: str = "."
    entry_point: str = "main"
    version: str | None = None
    parameters: Mapping[str, Any] | None = None
    docker_args: Mapping[str, Any] | None = None
    experiment_name: str | None = None
    experiment_id: str | None = None
    backend: str = "local"
    backend_config: str | Mapping[str, Any] | None = None
    storage_dir: str | None = None
    synchronous: bool = True
    run_id: str | None = None
    run_name: str | None = None
    env_manager: str | None = None
    build_image: bool = False
    docker_auth: Mapping[str, Any] | None = None
    cwd: str | os.PathLike[str] | None = None  # relative URIs and path parameters are taken from here
    stream_output: bool = True
    locked: bool = False  # install only from a current lock file (pylock.toml, conda-lock.yml)
    # A cluster backend: return once the job is queued instead of following it to its end.
    detach: bool = False
    # The run is a child of this MLflow run (a sweep's trials); else of the caller's active run.
    parent_run_id: str | None = None
    # Internal: this process is the cluster job of this ledger row (see runner.backends), and
    # the packed environment its submitter built and the job brought, as a path on this node.
    job_of: JobOf | None = None
    shipped_environment: str | None = None
    # A rerun (runner.rerun): where the original was tracked, the uncommitted changes it ran
    # with (applied to the checkout of `version`), the lock its environment was installed
    # from, and the tags that say what it reruns.
    tracking_uri: str | None = None
    patch: str | None = None
    lock_file: str | None = None
    tags: Mapping[str, str] | None = None
    # A rerun: `path` parameters logged as the original logged them (as its caller gave them),
    # while the command gets the absolute paths the original's command got.
    logged_paths: Mapping[str, str] | None = None
    # GPUs: the run gets this many devices of its own (runner.gpus), out of `gpu_devices` (None:
    # the machine's) here, or asked of the scheduler on a cluster.
    gpus: int = 0
    gpu_devices: tuple[str, ...] | None = None
    # auto | offline | online (runner.tracking.offline); None: MLPROJECT_TRACKING's, else auto.
    tracking: str | None = None

    def caller_cwd(self) -> Path:
        return Path(self.cwd).absolute() if self.cwd is not None else Path.cwd()

    def tracking_mode(self) -> str:
        from runner.tracking.offline import check_mode

        if self.job_of is not None:
            return "online"  # (a cluster job continues the run its submitter made, where it is)
        return check_mode(self.tracking or os.environ.get("MLPROJECT_TRACKING") or "auto", self.backend)

    def env_options(self) -> dict[str, Any]:
        """The options some environment managers take (see envs.plan_environment)."""
        return {"locked": self.locked, "lock_file": self.lock_file, "build_image": self.build_image,
                "docker_args": dict(self.docker_args or {})}


@dataclass(frozen=True)
class ResolvedProject:
    """The project fetched and loaded, its entry point's parameters resolved and its environment
    manager chosen: the first stage, before anything is created or started."""

    source: ProjectDir
    project: Project
    invocation: Invocation
    env_manager: str


@dataclass
class PlannedRun:
    """A run planned: the request, where it will be tracked, its project and parameters, and its
    environment decided (not built yet). Nothing of it exists anywhere yet."""

    request: RunRequest
    tracking: TrackingTarget
    plan: ResolvedProject
    notify: Notify
    progress: Notify | None
    backend_options: Any  # what the backend's check() made of the backend config
    environment: PlannedEnv
    timings: Timings  # how long each stage took so far (runner.timing)


@dataclass
class PreparedRun(PlannedRun):
    """A run opened: it exists in tracking, the ledger is open, and a backend takes it from here."""

    tracked: TrackedRun  # the MLflow run (or, untracked, its stand-in)
    ledger: Ledger
    note: Path | None = None  # names the run until the ledger has it (see tracking.pending)

    @classmethod
    def opened(cls, planned: PlannedRun, tracked: TrackedRun, ledger: Ledger, note: Path | None) -> PreparedRun:
        return cls(planned.request, planned.tracking, planned.plan, planned.notify, planned.progress,
                   planned.backend_options, planned.environment, planned.timings, tracked, ledger, note)

    def ledger_id(self) -> str:
        """The run's ledger ID: the MLflow run ID when tracked (one ID everywhere), otherwise one of
        the same form. A continued MLflow run (--run-id) is a new attempt in the ledger; a cluster
        job continues the row its submitter wrote."""
        if self.request.job_of is not None:
            return self.request.job_of.run_id
        return (None if self.tracked.continued else self.tracked.run_id) or os.urandom(16).hex()

    def keep_source_state(self, run_dir: Path) -> None:
        """What a rerun needs of a dirty working copy (its diff, its untracked files' names), of a
        project outside git (its files' digests, and the files when small), and
        of the files its `path` parameters name, taken when the run is submitted, before the code
        or the data can change again."""
        from runner.sources import provenance

        source, invocation = self.plan.source, self.plan.invocation
        if self.request.patch:  # a rerun of a dirty run: dirty with the same changes
            provenance.keep_patch(Path(self.request.patch), run_dir)
        elif source.dirty and source.work_tree is not None:
            provenance.capture(source.work_tree, run_dir)
        elif source.commit is None and source.checkout is None:  # a directory outside git: its files
            provenance.keep_files(source.path, run_dir)
        if invocation.given_paths:
            provenance.keep_inputs({name: invocation.texts[name] for name in invocation.given_paths
                                    if name in invocation.texts}, run_dir)

    def ledger_record(self, run_id: str, log_path: Path, **extra: Any):
        """The run's ledger row, as every backend writes it (`extra`: its status, backend)."""
        from runner.tracking import redact
        from runner.tracking.ledger import RunRecord

        source, invocation, tracked = self.plan.source, self.plan.invocation, self.tracked
        return RunRecord(
            id=run_id, project_uri=source.uri, project_dir=str(self.plan.project.directory),
            entry_point=invocation.entry_point, command=invocation.command, env_manager=self.plan.env_manager,
            env_key=self.environment.key, log_path=str(log_path), parameters={**invocation.texts, **invocation.extra},
            git_commit=source.commit, tracking_run_id=tracked.run_id,
            tracking_uri=redact(self.tracking.uri) if tracked.run_id and self.tracking.uri else None, **extra,
        )
