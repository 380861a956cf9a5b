"""The Ray backend: a run becomes a Ray job (the job submission API) that runs the runner itself.

Submission (this host): the run is created in tracking (SCHEDULED) and in the ledger; the
project goes to the cluster as the job's `runtime_env` `working_dir`, made from a
content-addressed snapshot (see backends.staging: no `.git`, `mlruns`, `mlflow.db`; Ray
leaves out what `.gitignore` excludes and uploads a package only once per content); the
runner itself goes as `py_modules` (this host's `runner` package, uploaded once per
version), so the nodes need only a Python with the runner's dependencies; the project's
environment goes built, packed once per key (runner.envs.pack) as one more `py_modules`
package, which each node's runner unpacks into its own store instead of building. The request
travels as JSON in the job's environment (`MLPROJECT_JOB_REQUEST`), and the entrypoint
only says `exec <python> -m runner job --from-env`.

This host speaks the dashboard's Jobs REST API (runner.backends.ray_rest) for all but
uploading a package: a job of packages the cluster already holds (their `gcs://` URIs are
kept from the first job that uploaded them) is submitted without Ray's SDK, and the SDK
uploads in a worker process of its own (runner.backends.ray_upload), never imported here.

Nodes share no files with this host: the runner on the node keeps its own ledger row and
ends the MLflow run; this host follows the job through Ray (its state, its exit code, its
output, copied into the run's log here) and records its end in this host's ledger.

Credentials never travel: a job's runtime_env is shown by the dashboard. The tracking URI
is sent without them; a cluster that tracks to a server with authentication has the
`MLFLOW_TRACKING_*` credentials in its own environment.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from runner import home
from runner.backends.cluster import JobState, abandon, follow_submitted, record_scheduled, replace_log_if_grown, stop_handles
from runner.backends.job import REQUEST_VARIABLE, JobRequest
from runner.backends.ray_rest import RayRest, RayRestError
from runner.errors import LaunchError, NotAvailableError, ProjectError, RunnerError, UsageError
from runner.status import RunStatus

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, Callable

    from runner.backends.cluster import ClusterRun
    from runner.request import PlannedRun, PreparedRun, RunRequest

KNOWN_KEYS = ("address", "entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory", "entrypoint_resources",
              "runtime_env", "metadata", "python", "staging_dir", "ship_environment")
# Linux refuses an environment string longer than 128 KiB (MAX_ARG_STRLEN).
_MAX_VARIABLE = 128 * 1024 - len(REQUEST_VARIABLE) - 2
JOB_PREFIX = "mlproject-"  # a job's submission ID is this and the run's ledger ID
# Ray's final job states, as the run ends; PENDING and RUNNING are a job under way.
_ENDS = {"SUCCEEDED": RunStatus.FINISHED, "FAILED": RunStatus.FAILED, "STOPPED": RunStatus.KILLED}
# JobInfo.error_type of a job the cluster lost (Ray 2.x): its supervisor actor died with its node.
_LOST = ("JOB_SUPERVISOR_ACTOR_DIED",)
_PREAMBLE_END = "Running entrypoint for job "  # Ray's own lines come before it in a job's log
_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
# Ray stops a job with SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S (3 s by default):
# the runner on the node must have stopped its command's process group by then.
_NODE_KILL_GRACE = "2"
_NOT_READY_SECONDS = 60.0
_PROBE_SECONDS = 600.0  # a runtime_env with pip packages is installed before the check runs
_PACKAGES_LOCK = threading.Lock()
_PROBE_LOCK = threading.Lock()
_PROBED: dict[Path, dict] = {}  # the nodes' answers this process asked for, by where they are kept
_RUNNER_MODULES: dict[Path, Path] = {}  # staging root -> this runner's module directory there
QUICK_STATE: bool = False  # asking Ray is a request to a remote dashboard: local runs do not wait on it
# Ray has no job arrays: a sweep's trials go out as carrier jobs, several trials to a job, no more
# jobs than --max-parallel (runner.backends.ray_carriers); few trials, one job each.
JOB_ARRAYS: bool = True
ARRAY_NOUN: str = "carrier job"


@dataclass(frozen=True)
class RayOptions:
    address: str
    python: str = "python"
    runtime_env: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    entrypoint: dict = field(default_factory=dict)  # entrypoint_num_cpus, _gpus, _memory, _resources
    staging_dir: Path = field(default_factory=home.staging)
    ship_environment: bool = True  # built here once and shipped packed, instead of built on each node


def _problem(message: str, hint: str) -> UsageError:
    return UsageError(f"ray backend: {message}", hint=hint)


def check(config: dict[str, Any], request: RunRequest) -> RayOptions:
    """The config as options; the SDK is installed and the cluster's dashboard answers."""
    unknown = sorted(set(config) - set(KNOWN_KEYS))
    if unknown:
        raise _problem(f"unknown config key(s): {', '.join(unknown)}", f"known keys: {', '.join(KNOWN_KEYS)}")
    address = config.get("address") or os.environ.get("RAY_ADDRESS")
    if not address or not isinstance(address, str):
        raise _problem("no cluster address", 'give "address": "http://HEAD:8265" in -c, or set RAY_ADDRESS')
    entrypoint = {}
    for key in ("entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory"):
        value = config.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise _problem(f"{key} must be a number, not {json.dumps(value)}", f'for example "{key}": 1')
            entrypoint[key] = value
    if request.gpus and "entrypoint_num_gpus" not in entrypoint:
        entrypoint["entrypoint_num_gpus"] = request.gpus  # (--gpus-per-run/--gpus-per-trial; Ray sets CUDA_VISIBLE_DEVICES)
    for key in ("entrypoint_resources", "runtime_env", "metadata"):
        value = config.get(key, {})
        if not isinstance(value, dict):
            raise _problem(f"{key} must be an object", f'for example "{key}": {{}}')
        if value:
            entrypoint[key] = value
    runtime_env = entrypoint.pop("runtime_env", {})
    if "working_dir" in runtime_env or "py_modules" in runtime_env:
        raise _problem("runtime_env may not set working_dir or py_modules: the project and the runner travel there",
                       "leave them out; other runtime_env keys (env_vars, pip, ...) are merged with ours")
    metadata = entrypoint.pop("metadata", {})
    python = config.get("python", "python")
    if not isinstance(python, str) or not python:
        raise _problem("python must be the nodes' interpreter (a name or a path)", '"python": "python3"')
    ship = config.get("ship_environment", True)
    if not isinstance(ship, bool):
        raise _problem(f"ship_environment must be true or false, not {json.dumps(ship)}", '"ship_environment": false')
    options = RayOptions(address, python, runtime_env, {str(k): str(v) for k, v in metadata.items()}, entrypoint,
                         home.staging(config.get("staging_dir")), ship)
    _reachable(options.address)
    return options


def _reachable(address: str) -> None:
    """The SDK is installed (found, not imported: it is needed only to upload a package) and
    the cluster's dashboard answers."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise no_sdk()
    try:
        _rest(address).version()
    except Exception as exc:  # noqa: BLE001 - URLError, a refused connection, an HTTP error, a proxy's page
        raise unreachable(address, _first_line(exc)) from None


def no_sdk() -> NotAvailableError:
    return NotAvailableError("the ray backend needs Ray's job SDK, which is not installed",
                             hint="pip install 'mlproject-runner[ray]'")


def unreachable(address: str, said: str) -> UsageError:
    return _problem(f"cannot reach the Ray cluster at {address}: {said}",
                    "check the address (the dashboard's, usually http://HEAD:8265) and that the cluster is up")


def _rest(address: str) -> RayRest:
    return RayRest(address)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0][:300]


# -- the nodes' Python ------------------------------------------------------------------
def check_plan(state: PlannedRun) -> None:
    """Before the run exists: the nodes' Python can run the runner for this plan (its
    dependencies, and what its environment manager needs). Asked of the cluster by a probe
    job (~2 s) once per cluster, Python, runtime_env and runner version; a good answer is
    kept, a refusal is always a fresh one."""
    from runner.backends import nodecheck

    options: RayOptions = state.backend_options
    needed = nodecheck.needed(state.plan.env_manager)
    kept = _node_report_path(options)
    with _PROBE_LOCK:  # (a sweep's trials, submitted at once, wait for one probe)
        report = _PROBED.get(kept)  # asked by this process: fresh, even when it refuses
        if report is None:
            report = _read_json(kept)
            if report is None or _lacks(report, needed) or set(needed) - set(report.get("checked", ())):
                report = _PROBED[kept] = _probe_nodes(options, state.progress)
                kept.parent.mkdir(parents=True, exist_ok=True)
                kept.write_text(json.dumps(report))
    version = report.get("python", "?")
    if tuple(int(part) for part in version.split(".")[:2] if part.isdigit()) < nodecheck.MINIMUM_PYTHON:
        raise _problem(f"the nodes' Python ({options.python}) is {version}; the runner needs 3.9 or newer",
                       'set "python" in -c to a newer interpreter on the nodes')
    lacking = _lacks(report, needed)
    if lacking:
        names = ", ".join(nodecheck.DISTRIBUTIONS.get(module, module) for module in lacking)
        raise _problem(f"the nodes' Python ({options.python}, {version}) lacks {names}, which the runner needs there"
                       + (f" (for --env-manager {state.plan.env_manager})" if set(lacking) - set(nodecheck.CORE) else ""),
                       "pip install mlproject-runner on the nodes (or list it in runtime_env's pip), or set \"python\" "
                       "to an interpreter that has it")


def _lacks(report: dict, needed: tuple[str, ...]) -> list[str]:
    return [module for module in needed if module in report.get("missing", [])]


def _node_report_path(options: RayOptions) -> Path:
    import hashlib

    what = json.dumps([options.address, options.python, options.runtime_env, _runner_module(options.staging_dir).parent.name],
                      sort_keys=True, default=str)
    return options.staging_dir / "node-checks" / f"{hashlib.sha256(what.encode()).hexdigest()[:32]}.json"


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _probe_nodes(options: RayOptions, progress) -> dict:
    import time

    from runner.backends import nodecheck
    from runner.progress import step

    rest = _rest(options.address)
    runtime_env = {**options.runtime_env, "py_modules": [str(_runner_module(options.staging_dir))]}
    job_id = f"{JOB_PREFIX}nodecheck-{os.urandom(8).hex()}"
    with step(progress, f"checking the Ray nodes' Python ({options.python}; once per cluster and runner version)"):
        try:
            _submit_when_ready(options.address, {
                "entrypoint": f"exec {_quote(options.python)} -m runner.backends.nodecheck "
                              + " ".join(map(_quote, nodecheck.probed())),
                "submission_id": job_id, "runtime_env": runtime_env, "metadata": {"mlproject": "node check"}})
            deadline = time.monotonic() + _PROBE_SECONDS
            while (rest.job(job_id) or {}).get("status") not in _ENDS:
                if time.monotonic() > deadline:
                    rest.stop(job_id)
                    raise _problem(f"the check of the nodes' Python did not end in {_PROBE_SECONDS:.0f} s",
                                   f"see `ray job logs {job_id}` on the cluster")
                time.sleep(0.1)
            logs = rest.logs(job_id)
        except RunnerError:
            raise
        except Exception as exc:  # noqa: BLE001 - the SDK's errors are RuntimeError, ValueError, HTTP errors
            raise LaunchError(f"Ray refused the check of its nodes' Python: {_first_line(exc)}",
                              hint="check the backend config (-c) and `ray job list` on the cluster") from None
    report = nodecheck.read(logs)
    if report is None:
        said = [line for line in logs.split(_PREAMBLE_END)[-1].splitlines()[1:] if line.strip()]
        raise _problem(f"the nodes could not run the runner with {options.python!r}: "
                       f"{said[-1][:300] if said else 'no output'}",
                       'set "python" in -c to the interpreter on the nodes that has mlproject-runner\'s dependencies')
    return report


# -- submission -------------------------------------------------------------------------
def submit(state: PreparedRun, on_submitted: Callable[[ClusterRun], None] | None) -> ClusterRun:
    """Record the run (SCHEDULED), submit its job; then follow it unless detached."""
    options: RayOptions = state.backend_options
    run_dir = home.subdir("runs") / state.ledger_id()
    run_dir.mkdir(parents=True, exist_ok=True)
    job_id = JOB_PREFIX + run_dir.name
    sent: list[bool] = []  # the submission has been sent: Ray may have the job
    try:
        record = record_scheduled(state, run_dir, run_dir / "output.log", "ray")
        _remember(record.id, options.address)  # (before: a job Ray took is found if this process dies)
        _submit_job(state, options, record.id, job_id, sent)
    except BaseException as exc:
        if sent:
            _withdraw(options.address, job_id)
        abandon(state, exc, run_dir.name)
        raise
    # (From here the job is Ray's: interrupted before the handle exists, the run is settled
    # from the job's own end, as a detached one is.)
    return follow_submitted(state, record, job_id, "Ray", on_submitted)


def _withdraw(address: str, job_id: str) -> None:
    """A job Ray may have taken while its submission was interrupted: stopped, so that it never
    runs a run this host records as ended (its runner would have ended it FINISHED in tracking
    behind a ledger that says KILLED: seed 20261210, a SIGHUP during the submission).

    Asked again until Ray says it stopped: Ray records a job before it names the job's
    supervisor, and a stop asked in between finds no supervisor and is dropped (`stop_job`
    says False; the job then runs). A job Ray never heard of is looked for 1 s."""
    import time

    rest = _rest(address)
    started = time.monotonic()
    while True:
        known = True
        try:
            if rest.stop(job_id):
                return  # its supervisor has the stop
            details = rest.job(job_id)
            if details is not None and details.get("status") in _ENDS:
                return
            known = details is not None
        except Exception:  # noqa: BLE001 - no such job (not taken, or not yet recorded), or Ray unreachable
            known = False
        if time.monotonic() - started > (_WITHDRAW_WAIT if known else 1.0):
            return
        time.sleep(0.1)


_WITHDRAW_WAIT = 5.0  # seconds: a supervisor is named within a second or two of the job's record


def submit_array(states: list[PreparedRun], throttle: int | None = None) -> list[ClusterRun]:
    """A sweep's trials: carried by `throttle` jobs when they are more (runner.backends.ray_carriers),
    else one job each, submitted one after another."""
    from runner.backends import ray_carriers

    if throttle and ray_carriers.carriers_for(len(states), throttle):
        return ray_carriers.submit_array(states, throttle)
    handles: list[ClusterRun] = []
    for number, state in enumerate(states):
        try:
            handles.append(submit(state, None))
        except BaseException as exc:
            for left in states[number + 1:]:  # (prepared, never submitted: ended as the first was)
                abandon(left, exc, left.ledger_id())
            stop_handles(handles, getattr(exc, "signum", None))  # (queued, but no caller holds them)
            raise
    return handles


def _submit_job(state: PreparedRun, options: RayOptions, run_id: str, job_id: str, sent: list[bool]) -> None:
    # (The job's working directory is the staged project; the node does not see the caller's
    # directory, so path parameters are taken from there: no cwd.)
    job, shipped = job_for(state, options, job_id, {})
    job_request = JobRequest.of(state, "ray", run_id, ".", environment=shipped, own_ledger=True)
    encoded = job_request.to_json(indent=None)
    if len(encoded) > _MAX_VARIABLE:
        raise UsageError(f"the job's request ({len(encoded) // 1024} KiB with its recorded lock) is too large for the "
                         "environment Ray hands the job (at most 128 KiB a variable)",
                         hint="rerun it here (-b local) or on a cluster that shares files (-b slurm)")
    job["runtime_env"]["env_vars"][REQUEST_VARIABLE] = encoded
    job["metadata"]["mlproject_run_id"] = state.tracked.run_id or run_id
    send(options, job, state.progress, sent)


def job_for(state: PreparedRun, options: RayOptions, job_id: str, metadata: dict[str, str]) -> tuple[dict[str, Any], str | None]:
    """The Ray job that runs the runner on the node for `state`'s project and environment, but
    for the request(s) it carries (env_vars, added by the caller); and where the environment it
    ships is, relative to its module path (JobRequest.environment), if it ships one."""
    from runner.backends.staging import snapshot

    project = snapshot(state.plan.source.path, options.staging_dir, state.progress)
    shipped = _environment_package(state, options)
    env_vars = dict(options.runtime_env.get("env_vars") or {})
    env_vars.setdefault("MLPROJECT_KILL_GRACE", _NODE_KILL_GRACE)
    if state.tracking.uri is None:
        env_vars["MLPROJECT_NO_TRACKING"] = "1"
    else:
        from runner.tracking import redact

        env_vars["MLFLOW_TRACKING_URI"] = redact(state.tracking.uri)
        if redact(state.tracking.uri) != state.tracking.uri or any(os.environ.get(n) for n in _CREDENTIALS):
            state.notify("note: tracking credentials are not sent to Ray (the dashboard shows a job's environment); "
                         "the cluster's own environment must have them")
    py_modules = [str(_runner_module(options.staging_dir)), *([str(shipped[0])] if shipped else [])]
    runtime_env = {**options.runtime_env, "working_dir": str(project), "py_modules": py_modules, "env_vars": env_vars}
    job = {"entrypoint": f"exec {_quote(options.python)} -m runner job --from-env", "submission_id": job_id,
           "runtime_env": runtime_env, "metadata": {**options.metadata, **metadata}, **options.entrypoint}
    return job, shipped[1] if shipped else None


def send(options: RayOptions, job: dict[str, Any], progress, sent: list[bool]) -> None:
    """Submit the job (`sent` gets True as it goes: Ray may have it from then on); Ray's refusal
    as a ProjectError (the package too large) or a LaunchError."""
    from runner.progress import step

    with step(progress, f"submitting Ray job {job['submission_id']}"):
        sent.append(True)
        try:
            _submit_when_ready(options.address, job)
            from runner import faults

            faults.checkpoint("ray.submitted")  # (Ray has the job; this host has not named it yet)
        except Exception as exc:  # noqa: BLE001 - the SDK's errors are RuntimeError, ValueError, HTTP errors
            message = _first_line(exc)
            if "maximum" in str(exc).lower() and "size" in str(exc).lower():  # the package, or the request carrying it
                raise ProjectError(f"Ray refused the project: {message} (Ray takes a working_dir of at most 100 MiB)",
                                   hint="list what the job does not need (data, checkpoints) in .gitignore") from None
            raise LaunchError(f"Ray refused the job: {message}",
                              hint="check the backend config (-c) and `ray job list` on the cluster") from None


# Ray sends a package in one gRPC message of at most 512 MiB (RAY_max_grpc_message_size): an
# environment packed larger is built on each node instead.
_PACKAGE_LIMIT = 500 * 1024 * 1024


def _environment_package(state: PreparedRun, options: RayOptions) -> tuple[Path, str] | None:
    """The run's environment, packed once per key (backends.shipping), as a directory that goes
    as a package of the job's `py_modules`: Ray uploads it once, each node fetches it once, and
    the node's runner unpacks it instead of building (see JobRequest.environment). (directory,
    the archive's path relative to the module path), or None: nothing to ship, `"ship_environment":
    false`, or too large for Ray to carry."""
    from runner.backends.shipping import packed_environment

    archive = packed_environment(state, options.staging_dir) if options.ship_environment else None
    if archive is None:
        return None
    size = archive.stat().st_size
    if size >= _PACKAGE_LIMIT:
        state.notify(f"note: {archive.name} is {size >> 20} MiB, more than Ray carries in a "
                     f"package ({_PACKAGE_LIMIT >> 20} MiB): each node builds the environment")
        return None
    return archive.parent, f"{archive.parent.name}/{archive.name}"


def _runner_module(root: Path) -> Path:
    """This runner as a module directory for the nodes (`root/runner-<hash>/runner`, with its
    schemas inside, as in the wheel): made once per version of the code; Ray uploads it once.
    Hashed once per process (a sweep submits many jobs)."""
    with _PACKAGES_LOCK:
        if root not in _RUNNER_MODULES:
            _RUNNER_MODULES[root] = _make_runner_module(root)
        return _RUNNER_MODULES[root]


def _make_runner_module(root: Path) -> Path:
    import shutil

    from runner.backends.staging import directory_key
    from runner.project.schema import schema_dir

    package, schemas = Path(__file__).resolve().parents[1], schema_dir()
    key = directory_key(package) + directory_key(schemas)
    final = root / f"runner-{key[:16]}{key[64:80]}" / "runner"
    if final.is_dir():
        return final
    import tempfile

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".runner-", dir=root))  # (another process may make it at once)
    shutil.copytree(package, tmp / "runner", ignore=shutil.ignore_patterns("__pycache__", "schemas"))
    shutil.copytree(schemas, tmp / "runner" / "schemas")
    try:
        os.rename(tmp, final.parent)
    except OSError:  # made meanwhile by another submission: the same contents
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _submit_when_ready(address: str, job: dict[str, Any]) -> None:
    """Submit the job, asked again while the cluster says it is not ready yet ("No available
    agent to submit job, please try again later": a cluster that has just started), for up to
    a minute. Its packages as the cluster already holds them when it does (one REST request);
    else through the SDK, which uploads them, and what they became is kept for the next job."""
    import time

    deadline = time.monotonic() + _NOT_READY_SECONDS
    while True:
        try:
            held = _held_packages(address, job["runtime_env"])
            if held is not None:
                _rest(address).submit({**job, "runtime_env": {**held, "env_vars": job["runtime_env"].get("env_vars", {})}})
            else:
                from runner.backends import ray_upload

                ray_upload.submit(address, job)  # (the SDK, in a worker: runner.backends.ray_upload)
                _keep_packages(address, job["runtime_env"], job["submission_id"])
            return
        except RuntimeError as exc:
            if "try again later" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


# Where a job's packages went: (cluster, working_dir, py_modules, the rest of runtime_env but its
# env_vars) -> the runtime_env the cluster recorded for it, `gcs://` URIs in place of the local
# directories. Both directories are content-addressed (backends.staging, _runner_module): the
# same path is the same contents.
_PACKAGES_FILE = "ray-packages.json"


def _packages_key(address: str, runtime_env: dict[str, Any]) -> str:
    return json.dumps([RayRest(address).base, {k: v for k, v in runtime_env.items() if k != "env_vars"}],
                      sort_keys=True, default=str)


def _packages_path() -> Path:
    return home.home() / _PACKAGES_FILE


def _held_packages(address: str, runtime_env: dict[str, Any]) -> dict[str, Any] | None:
    """The runtime_env (without env_vars) a job of these packages had, if the cluster still
    holds every package it names; else None (the SDK uploads them)."""
    known = (_read_json(_packages_path()) or {}).get(_packages_key(address, runtime_env))
    if not isinstance(known, dict):
        return None
    uris = [known.get("working_dir"), *(known.get("py_modules") or [])]
    rest = _rest(address)
    if not all(isinstance(uri, str) and "://" in uri and rest.holds(uri) for uri in uris):
        return None
    return known


def _keep_packages(address: str, runtime_env: dict[str, Any], job_id: str) -> None:
    """What the cluster recorded of a job the SDK submitted: its packages' URIs, for the next."""
    try:
        recorded = dict((_rest(address).job(job_id) or {}).get("runtime_env") or {})
    except Exception:  # noqa: BLE001 - not kept: the next job goes through the SDK again
        return
    recorded.pop("env_vars", None)
    if not str(recorded.get("working_dir", "")).startswith("gcs://"):
        return
    path = _packages_path()
    with _PACKAGES_LOCK:  # (a sweep's trials: one process; other processes may lose an entry, not corrupt one)
        kept = _read_json(path) or {}
        if len(kept) > 200:  # (old projects' entries: the file stays small)
            kept = dict(list(kept.items())[-100:])
        kept[_packages_key(address, runtime_env)] = recorded
        home.save_text(path, json.dumps(kept))


def _quote(word: str) -> str:
    import shlex

    return shlex.quote(word)


def _remember(run_id: str, address: str) -> None:
    """Which cluster a run's job is on (a job ID alone does not say)."""
    (home.subdir("runs") / run_id / "ray.json").write_text(json.dumps({"address": address}))


def _address_of(job_id: str) -> str:
    run_id = job_id.split("_")[0].removeprefix(JOB_PREFIX)  # (a carried trial's: its carrier's)
    try:
        return json.loads((home.subdir("runs") / run_id / "ray.json").read_text())["address"]
    except (OSError, ValueError, KeyError):
        raise LaunchError(f"which Ray cluster runs job {job_id} was not recorded here",
                          hint="follow it with `ray job status` on the cluster") from None


# -- the job, as Ray sees it ------------------------------------------------------------
def chosen_job_id(ledger_id: str) -> str | None:
    """The submission ID this host gives the run's job, once it has said which cluster it goes to
    (a carried trial's: its carrier's and its place there)."""
    said = _read_json(home.subdir("runs") / ledger_id / "ray.json")
    if said is None:
        return None
    return str(said.get("job_id") or JOB_PREFIX + ledger_id)


def shares_ledger(run_id: str) -> bool:
    """Never: the nodes keep their own ledgers, and this host records the end from Ray's word."""
    return False


def job_state(job_id: str) -> JobState | None:
    """How job `job_id` is doing, from the cluster's job table; None when Ray does not know it."""
    return job_states([job_id])[job_id]


def job_state_of(info: dict[str, Any]) -> JobState:
    """A job's state from its entry in Ray's job table."""
    name = str(info.get("status"))
    status = _ENDS.get(name)
    exit_code = info.get("driver_exit_code")
    if status == RunStatus.FINISHED:
        exit_code = 0
    elif status == RunStatus.KILLED and exit_code is None:
        exit_code = 143
    reason = None
    message = info.get("message") or ""
    if status == RunStatus.FAILED and message:  # Ray appends the job's last logs: the run's log has them
        reason = message.strip().splitlines()[0].split(", last available logs")[0][:300]
    # The job's supervisor died with its node (a lost node), not by the command's own failure.
    lost = status == RunStatus.FAILED and str(info.get("error_type")) in _LOST
    return JobState(name, status, exit_code, info.get("driver_node_id"), reason, lost=lost)


def job_states(job_ids: list[str]) -> dict[str, JobState | None]:
    """Each job's own answer (Ray's list of all jobs grows with every job it ever ran); carried
    trials' from their carriers' logs, one read per carrier."""
    from runner.backends import ray_carriers

    carried = [job_id for job_id in job_ids if ray_carriers.is_carried_job(job_id)]
    states = ray_carriers.job_states(carried) if carried else {}
    for job_id in job_ids:
        if job_id not in states:
            info = _rest(_address_of(job_id)).job(job_id)
            states[job_id] = None if info is None else job_state_of(info)
    return states


def cancel(job_id: str) -> None:
    """Stop the job (a carried trial's: its carrier, with the trials it has not ended)."""
    address = _address_of(job_id)
    job_id = job_id.split("_")[0]
    try:
        stopped = _rest(address).stop(job_id)
    except (RayRestError, OSError) as exc:
        if "does not exist" not in str(exc):
            raise LaunchError(f"Ray did not stop job {job_id}: {_first_line(exc)}",
                              hint=f"ray job stop {job_id} --address {address}") from None
        return
    if not stopped:  # (recorded, its supervisor not yet named, or over: see _withdraw)
        _withdraw(address, job_id)


def pull_output(job_id: str, log_path: Path) -> None:
    """Copy the job's output (Ray keeps it on the cluster) into the run's log here. Ray answers
    with the whole log each time; the file is replaced only when the log grew, so several
    followers of one run can pull at once."""
    from runner.backends import ray_carriers

    if ray_carriers.is_carried_job(job_id):
        ray_carriers.pull_output(job_id, log_path)
        return
    logs = _rest(_address_of(job_id)).logs(job_id)
    marker = logs.find(_PREAMBLE_END)
    if marker < 0:
        return  # the entrypoint has not started: what there is is Ray's (its runtime_env setup)
    newline = logs.find("\n", marker)
    data = logs[newline + 1:].encode() if newline >= 0 else b""
    replace_log_if_grown(log_path, len(data), lambda copy: copy.write(data))


def stopped_by_cluster() -> tuple[str, str] | None:
    """Ray says nothing about a stop until the job's processes are gone: the runner's own signal
    handling records the stop (KILLED), and this host records Ray's word at the end."""
    return None

