"""The node-job contract of every cluster backend: the request its submitter writes, and the
node side that carries it out.

A cluster backend's job runs the runner itself (`python -m runner job FILE`, or `--from-env`
where the scheduler passes no files: Ray). The submitter builds one `JobRequest` from the
prepared run (`JobRequest.of`), whichever backend it is; the runner inside the job reads it
back (`JobRequest.load`) and carries it out as a local run of the ledger row its submitter
wrote (`RunRequest.job_of`), continuing the tracked run its submitter created.

A recorded lock (a rerun's) travels inside the request, so a node that shares no file with the
submit host (Ray) installs exactly it too.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runner.request import JobOf

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any

    from runner.backends.base import ClusterBackend
    from runner.request import PreparedRun, RunRequest
    from runner.tracking.ledger import Ledger, RunRecord

# Where a scheduler that passes no files hands the request to the job (Ray: the job's environment).
REQUEST_VARIABLE = "MLPROJECT_JOB_REQUEST"
# A job there that carries several runs (runner.backends.ray_carriers): their requests, as a JSON
# list compressed (zlib, base64: a variable holds at most 128 KiB), and the mark that frames each
# run's output in the job's one log (runner.cli.carry).
REQUESTS_VARIABLE = "MLPROJECT_JOB_REQUESTS"
MARK_VARIABLE = "MLPROJECT_CARRIER_MARK"
# The tag a carried run's tracked run gets when it is cancelled, where the nodes share no file
# with the submit host (Ray): its carrier reads its tracked run's tags while it runs.
CANCEL_TAG = "mlproject.cancel_requested"
REQUEST_FILE = "job.json"  # in the run's directory on the submit host (a shared file system: Slurm)
# In the run's directory (which the nodes share) of a run that shares its job with other runs
# (one array task carrying several trials, runner.cli.carry): its presence says so, and
# the job's state is then the carrier's, not the run's. CANCEL_FILE asks the carrier to stop it.
CARRIED_FILE = "carried"
CANCEL_FILE = "cancel-requested"


@dataclass(frozen=True)
class RecordedLock:
    """A lock file's name and text, carried to the node (it may not see the submitter's files)."""

    name: str
    text: str


@dataclass(frozen=True)
class JobRequest:
    """What the runner inside a job carries out. Parameters are as given: the node resolves them
    from the caller's directory (`cwd`), as the submit host did, where it sees that directory."""

    uri: str  # the project as the node fetches it: a cached git URL, or a staged copy
    version: str | None
    entry_point: str
    parameters: dict[str, Any]
    env_manager: str
    job_of: JobOf
    run_id: str | None = None  # the tracked run the job continues
    docker_args: dict[str, Any] = field(default_factory=dict)
    build_image: bool = False
    locked: bool = False
    lock: RecordedLock | None = None  # install exactly this lock (a rerun)
    storage_dir: str | None = None
    cwd: str | None = None
    # The environment built once on the submit host and packed (runner.envs.pack), which the
    # job brings to its node: an absolute path there, or one relative to a directory of the
    # job's module path (PYTHONPATH: where Ray puts the packages of `py_modules`).
    environment: str | None = None
    # Where this run's output goes when one job carries several runs (the job's own output file
    # is then the carrier's): its log as the submit host recorded it. None: the job's output.
    output: str | None = None

    @classmethod
    def of(cls, state: PreparedRun, backend: str, run_id: str, uri: str, version: str | None = None,
           cwd: str | None = None, environment: str | None = None, own_ledger: bool = False) -> JobRequest:
        """The request for the job of ledger row `run_id`, from the prepared run on the submit host."""
        request = state.request
        lock = None
        if request.lock_file:
            path = Path(request.lock_file)
            lock = RecordedLock(path.name, path.read_text(encoding="utf-8"))
        return cls(
            uri=uri, version=version, entry_point=request.entry_point, parameters=dict(request.parameters or {}),
            env_manager=state.plan.env_manager, job_of=JobOf(backend, run_id, own_ledger), run_id=state.tracked.run_id,
            docker_args=dict(request.docker_args or {}), build_image=request.build_image, locked=request.locked,
            lock=lock, storage_dir=request.storage_dir, cwd=cwd, environment=environment,
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(asdict(self), indent=indent, default=str)

    @classmethod
    def from_json(cls, text: str) -> JobRequest:
        return cls.from_fields(json.loads(text))

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> JobRequest:
        fields = dict(fields)
        fields["job_of"] = JobOf(**fields["job_of"])
        if fields.get("lock") is not None:
            fields["lock"] = RecordedLock(**fields["lock"])
        return cls(**fields)

    @classmethod
    def load(cls, request_file: str | None, from_env: bool) -> list[JobRequest]:
        """The requests of this job: from the environment (popped: not passed on to the command),
        or from its file (a job array's manifest names those of each task on its line, one or
        several: a task that carries several runs, one after another)."""
        from runner.errors import LaunchError, UsageError

        if from_env and REQUESTS_VARIABLE in os.environ:  # a carrier's (Ray)
            return [cls.from_fields(fields) for fields in json.loads(decompress(os.environ.pop(REQUESTS_VARIABLE)))]
        if from_env:
            return [cls.from_json(os.environ.pop(REQUEST_VARIABLE))]
        if request_file is None:
            raise UsageError("give the request file, or --from-env",
                             hint="(internal) a cluster job's command names its request; see runner.backends.job")
        if not os.path.isfile(request_file):  # written by the submitter: this node does not see its files
            raise LaunchError(f"the job's request {request_file} is not on this node ({os.uname().nodename})",
                              hint="the nodes must share MLPROJECT_HOME (or the backend config's mlproject_home) "
                                   "with the submit host, or the config must say they do not (\"shared_home\": false, "
                                   "with a staging_dir they share)")
        request_files = [request_file]
        if request_file.endswith(".manifest"):  # a job array: task N runs the requests on line N
            with open(request_file, encoding="utf-8") as handle:
                request_files = handle.read().splitlines()[int(os.environ["SLURM_ARRAY_TASK_ID"])].split("\t")
        requests = []
        for name in request_files:
            with open(name, encoding="utf-8") as handle:
                requests.append(cls.from_json(handle.read()))
        return requests

    def run_request(self) -> RunRequest:
        """The local run this node carries out (never synchronous: the job's runner follows it)."""
        from runner import home
        from runner.request import RunRequest

        lock_file = None
        if self.lock is not None:  # this node's copy, in the run's own directory here
            copy = home.subdir("runs") / self.job_of.run_id / "requested-lock" / self.lock.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(self.lock.text, encoding="utf-8")
            lock_file = str(copy)
        return RunRequest(
            self.uri, entry_point=self.entry_point, version=self.version, parameters=self.parameters,
            docker_args=self.docker_args, storage_dir=self.storage_dir, synchronous=False, run_id=self.run_id,
            env_manager=self.env_manager, build_image=self.build_image, cwd=self.cwd, locked=self.locked,
            job_of=self.job_of, lock_file=lock_file, shipped_environment=self.shipped_environment(),
        )

    def shipped_environment(self) -> str | None:
        """Where the environment the job brings is on this node; None when it brings none, or
        it is not here (the node then builds the environment itself)."""
        if self.environment is None:
            return None
        if os.path.isabs(self.environment):
            return self.environment if os.path.isfile(self.environment) else None
        for directory in os.environ.get("PYTHONPATH", "").split(os.pathsep):
            candidate = os.path.join(directory, self.environment)
            if directory and os.path.isfile(candidate):
                return candidate
        return None


def compress(text: str) -> str:
    """Text as a compact ASCII string (an environment variable's value)."""
    import base64
    import zlib

    return base64.b64encode(zlib.compress(text.encode(), 9)).decode()


def decompress(value: str) -> str:
    import base64
    import zlib

    return zlib.decompress(base64.b64decode(value)).decode()


# -- the node side: the runner inside the job, taking its row over ---------------------------------
def backend_of(job_of: JobOf) -> ClusterBackend:
    from runner import backends

    return backends.cluster_backend(job_of.backend)


def take_over(state: PreparedRun, run_id: str, log_path: Path) -> None:
    """The runner inside the job takes over the ledger row its submitter wrote (SCHEDULED →
    RUNNING), or writes its own where the node keeps its own ledger (Ray). A row that already
    ended (cancelled while queued; or a second launch of a job that ran, as Slurm does after its
    controller restarts) is not run again: its tracked run gets its recorded end back."""
    from runner.errors import LaunchError

    job_of, ledger, tracked = state.request.job_of, state.ledger, state.tracked
    assert job_of is not None
    if ledger.take_over(run_id) is not None:
        return
    if not ledger.get(run_id) and job_of.own_ledger:
        ledger.start(state.ledger_record(run_id, log_path, backend=job_of.backend))  # this node's own record
        return
    ended = ledger.get(run_id)
    try:
        if ended:  # (continuing the tracked run set it RUNNING again)
            tracked.finish(ended[0].status, state.notify)
    finally:
        tracked.ended = True
        ledger.close()
    raise LaunchError(f"run {run_id} was ended before its job started (cancelled?)",
                      hint=f"see `mlproject runs show {run_id}`")


def cluster_verdict(job_of: JobOf, status: str, reason: str | None) -> tuple[str, str | None]:
    """Whatever the command's own exit said: was the job being taken down by its cluster (its time
    limit: FAILED; a cancel: KILLED; requeued: SCHEDULED, see `requeued`)? A scheduler signals
    every process of the job, so the command may end (even with 0) before this runner hears of it."""
    try:
        verdict = backend_of(job_of).stopped_by_cluster()
    except Exception:  # noqa: BLE001 - the signal's own account stands
        return status, reason
    return verdict or (status, reason)


def requeued(ledger, run_id: str, tracked, reason: str | None, notify) -> None:
    """The job was requeued under the run: the run is not over. It waits SCHEDULED (ledger and
    tracking) for the job's next start, whose runner takes it over and carries it on."""
    from runner.errors import RunnerError
    from runner.status import RunStatus

    ledger.requeued(run_id, reason or "requeued")
    try:
        tracked.set_status(RunStatus.SCHEDULED)
    except RunnerError as exc:
        notify(f"warning: tracking: the requeued run was not set SCHEDULED: {exc.message}")
    tracked.ended = True  # (this runner is done with it; the job's next start goes on with it)
    notify(f"=== {reason}: the run continues when the job starts again ===")


# -- runs that share their job (an array task carrying several trials: runner.cli.carry) ----------
def is_carried(run_id: str) -> bool:
    """Whether run `run_id`'s job carries other runs too: the job's state is then the carrier's
    (running while any of its runs does), and a cancel of the run must not cancel the job."""
    from runner import home

    return (home.subdir("runs") / run_id / CARRIED_FILE).exists()


def cancel_carried(ledger: Ledger, record: RunRecord) -> None:
    """Stop one run of a job that carries several: its carrier, which watches for this file (or,
    where the nodes share no file with this host, for the tag on its tracked run), stops the
    run's command; a run it has not started yet is ended here and never starts."""
    from runner import backends, home
    from runner.errors import LaunchError
    from runner.status import RunStatus
    from runner.tracking.ending import end_recorded

    (home.subdir("runs") / record.id / CANCEL_FILE).touch()
    if not backends.cluster_backend(record.backend).shares_ledger(record.id):
        if not record.tracking_uri or not record.tracking_run_id:
            raise LaunchError(f"run {record.id} shares {record.backend} job {record.job_id} with other runs and is not "
                              "tracked: its carrier cannot be told to stop it alone",
                              hint="stop the whole sweep, or sweep with tracking (its carriers read a cancel from there)")
        from runner.tracking import tracker_for

        tracker_for(record.tracking_uri, quick=True).set_tags(record.tracking_run_id, {CANCEL_TAG: "true"})
    if record.status == RunStatus.SCHEDULED:
        end_recorded(ledger, record, RunStatus.KILLED, None,
                     f"cancelled while waiting in {record.backend} job {record.job_id}", scheduled_only=True)
