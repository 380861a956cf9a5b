"""The Slurm backend: a run becomes a batch job that runs the runner itself on a node.

Submission (this host): the run is created in tracking (SCHEDULED) and in the ledger,
the project is made reachable from the nodes (a cached git commit as it is, a local
directory as a content-addressed snapshot), the request is written as JSON next to
the run's log, and `sbatch` queues a script that only says
`exec <python> -m runner job <request.json>`. Tracking settings and credentials reach
the job through its environment (sbatch passes the submitter's), never the script
or a command line.

On the node the runner continues that run as a local run does (environment by its
hash, the store's locks, RUNNING, the end). What it cannot record (cancelled while
pending, a dead node) is read from Slurm: `scontrol` while the controller remembers the
job, then `sacct`, then the job completion log; see `job_state`.

Nodes that do not share MLPROJECT_HOME (`"shared_home": false`; they share `staging_dir`
with this host) get everything through the staging directory: the job's request and output
(`staging_dir/jobs/<run>/`, or the array's directory there), the project as a snapshot (a git
commit too: the git cache is this host's), and the environment built here once and packed
(backends.shipping), which the node's runner unpacks into its own store, once per node and
key. That runner keeps its own ledger row and ends the tracked run, as on Ray; this host
follows the job through Slurm, copies its output into the run's log here (`pull_output`)
and records its end.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from runner import home
from runner.backends.cluster import JobState, abandon, follow_submitted, queued_array, record_scheduled, replace_log_if_grown
from runner.backends.job import CARRIED_FILE, REQUEST_FILE, JobRequest
from runner.backends.staging import JOBS, STAGED_OUTPUT
from runner.errors import LaunchError, UsageError
from runner.status import RunStatus

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, Callable

    from runner.backends.cluster import ClusterRun
    from runner.request import PlannedRun, PreparedRun, RunRequest

# mlflow-slurm's keys, with its meaning: key -> sbatch option (None: handled below).
_SBATCH_OPTIONS = {
    "partition": "--partition", "account": "--account", "time": "--time", "mem": "--mem", "nodes": "--nodes",
    "ntasks": "--ntasks", "gpus_per_node": "--gpus-per-node", "gres": "--gres", "job_name": "--job-name",
}
_LISTS = ("modules", "exports", "sbatch_args")
_PATHS = ("staging_dir", "python", "mlproject_home", "sbatch-script-file")
KNOWN_KEYS = (*_SBATCH_OPTIONS, "exclusive", "shared_home", "trials_per_task", "environment", *_LISTS, *_PATHS)

# Slurm's final job states, as the run ends. Everything else (PENDING, RUNNING, COMPLETING,
# CONFIGURING, REQUEUED, SUSPENDED, ...) is a job still under way.
_ENDS = {
    "COMPLETED": RunStatus.FINISHED, "CANCELLED": RunStatus.KILLED, "FAILED": RunStatus.FAILED, "TIMEOUT": RunStatus.FAILED,
    "OUT_OF_MEMORY": RunStatus.FAILED, "NODE_FAIL": RunStatus.FAILED, "BOOT_FAIL": RunStatus.FAILED, "DEADLINE": RunStatus.FAILED,
    "PREEMPTED": RunStatus.FAILED, "REVOKED": RunStatus.FAILED, "SPECIAL_EXIT": RunStatus.FAILED,
}
# The ends the infrastructure caused (the job's command neither failed nor was cancelled).
_LOST = ("NODE_FAIL", "PREEMPTED", "BOOT_FAIL")
# Variables the runner inside the job needs (with --export=NAMES, only these and the user's go).
_RUNNER_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                     "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH",
                     "MLFLOW_TRACKING_CLIENT_CERT_PATH", "MLPROJECT_HOME", "MLPROJECT_NO_TRACKING",
                     "MLPROJECT_KILL_GRACE", "PYTHONPATH")


QUICK_STATE: bool = True  # squeue and sacct answer in milliseconds: every run settles finished jobs
JOB_ARRAYS: bool = True  # a sweep's trials go out as one `sbatch --array`
ARRAY_NOUN: str = "job array"


@dataclass(frozen=True)
class SlurmOptions:
    """The backend config, checked: what sbatch is given and where things are on the nodes."""

    sbatch_args: tuple[str, ...]
    modules: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    exports: tuple[str, ...] | None = None  # None: sbatch's default, the whole environment
    script_file: Path | None = None
    staging_dir: Path = field(default_factory=home.staging)
    python: str = sys.executable
    home: Path = field(default_factory=home.home)
    shared_home: bool = True  # False: the nodes share only staging_dir with this host
    trials_per_task: int | None = None  # runs one array task carries (None: chosen by the array's size)


def _problem(message: str, hint: str) -> UsageError:
    return UsageError(f"slurm backend: {message}", hint=hint)


def check(config: dict[str, Any], request: RunRequest) -> SlurmOptions:
    """The config as options, and what can be checked before anything is created: sbatch is
    here, the partition exists, the runner's interpreter for the nodes exists."""
    unknown = sorted(set(config) - set(KNOWN_KEYS))
    if unknown:
        raise _problem(f"unknown config key(s): {', '.join(unknown)}", f"known keys: {', '.join(KNOWN_KEYS)}")
    sbatch_args: list[str] = []
    for key, option in _SBATCH_OPTIONS.items():
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value).strip() == "":
            raise _problem(f"{key} must be a string or a number, not {json.dumps(value)}", f'for example "{key}": "..."')
        sbatch_args.append(f"{option}={value}")
    if request.gpus and not {"gpus_per_node", "gres"} & set(config):
        sbatch_args.append(f"--gpus-per-node={request.gpus}")  # (--gpus-per-run/--gpus-per-trial: each task's own)
    exclusive = config.get("exclusive", False)
    if not isinstance(exclusive, bool):
        raise _problem(f"exclusive must be true or false, not {json.dumps(exclusive)}", '"exclusive": true')
    if exclusive:
        sbatch_args.append("--exclusive")
    shared_home = config.get("shared_home", True)
    if not isinstance(shared_home, bool):
        raise _problem(f"shared_home must be true or false, not {json.dumps(shared_home)}", '"shared_home": false')
    if not shared_home and not config.get("staging_dir"):
        raise _problem("with \"shared_home\": false the nodes need a staging_dir they share with this host",
                       'add "staging_dir": "/shared/mlproject-staging" (a directory this host and the nodes see)')
    per_task = config.get("trials_per_task")
    if per_task is not None and (not isinstance(per_task, int) or isinstance(per_task, bool) or per_task < 1):
        raise _problem(f"trials_per_task must be a whole number of at least 1, not {json.dumps(per_task)}",
                       '"trials_per_task": 10 (or leave it out: chosen by the sweep\'s size)')
    if per_task not in (None, 1) and not shared_home:
        raise _problem("an array task carries several trials only where the nodes share MLPROJECT_HOME",
                       'leave out "trials_per_task" with "shared_home": false (each trial is then a task of its own)')
    lists = {}
    for key in _LISTS:
        value = config.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise _problem(f"{key} must be a list of strings", f'for example "{key}": ["..."]')
        lists[key] = tuple(value)
    sbatch_args += lists["sbatch_args"]
    environment = _environment(config.get("environment", []))
    paths = {}
    for key in _PATHS:
        value = config.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise _problem(f"{key} must be a path", f'for example "{key}": "/shared/..."')
        paths[key] = value
    cwd = request.caller_cwd()
    python = paths["python"] or sys.executable
    if not (os.path.isabs(python) and os.access(python, os.X_OK)):
        raise _problem(f"the runner's Python for the nodes, {python!r}, is not an executable absolute path",
                       'set "python" to the interpreter that has mlproject-runner installed, as the nodes see it')
    options = SlurmOptions(
        sbatch_args=tuple(sbatch_args),
        modules=lists["modules"],
        environment=environment,
        exports=lists["exports"] if "exports" in config else None,
        script_file=(cwd / paths["sbatch-script-file"]) if paths["sbatch-script-file"] else None,
        staging_dir=home.staging(paths["staging_dir"]),
        python=python,
        home=Path(paths["mlproject_home"]).expanduser().absolute() if paths["mlproject_home"] else home.home(),
        shared_home=shared_home,
        trials_per_task=per_task,
    )
    _check_cluster(config.get("partition"))
    return options


def _environment(value: Any) -> tuple[tuple[str, str], ...]:
    """mlflow-slurm's `environment`: ["NAME=value", ...] (or, ours too, {"NAME": "value"})."""
    items = list(value.items()) if isinstance(value, dict) else None
    if items is None:
        if not isinstance(value, list) or not all(isinstance(item, str) and "=" in item for item in value):
            raise _problem("environment must be a list of NAME=value strings", '"environment": ["OMP_NUM_THREADS=4"]')
        items = [tuple(item.split("=", 1)) for item in value]
    for name, _ in items:
        if not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise _problem(f"environment: {name!r} is not a variable name", '"environment": ["OMP_NUM_THREADS=4"]')
    return tuple((name, str(val)) for name, val in items)


def _check_cluster(partition: str | None) -> None:
    """sbatch is here and the controller answers (with or without -c: one check, before anything
    is created), and the partition asked for exists. One `scontrol` call."""
    import shutil

    from runner.subprocesses import capture

    if shutil.which("sbatch") is None:
        raise _problem("sbatch is not on PATH", "run on a Slurm submit host, or add Slurm's bin directory to PATH")
    try:
        code, output, _ = capture(["scontrol", "show", "partition", "-o"])
    except OSError as exc:
        code, output = 1, exc.strerror or str(exc)
    if code != 0:
        said = output.strip().splitlines()[-1] if output.strip() else f"exit code {code}"
        raise _problem(f"cannot reach the Slurm controller: {said}",
                       "check `sinfo` on this host (SLURM_CONF, and that slurmctld is running)")
    known = sorted({word.partition("=")[2] for line in output.splitlines() for word in line.split()
                    if word.startswith("PartitionName=")})
    if partition is not None and str(partition) not in known:
        raise _problem(f"no partition {partition!r} on this cluster", f"partitions here: {', '.join(known) or 'none'}")


# -- submission -------------------------------------------------------------------------
def check_plan(state: PlannedRun) -> None:
    """The nodes build what the plan names, as this host would."""


def submit(state: PreparedRun, on_submitted: Callable[[ClusterRun], None] | None) -> ClusterRun:
    """Write the job, record the run (SCHEDULED), queue the job; then follow it unless detached."""
    options: SlurmOptions = state.backend_options
    run_dir = home.subdir("runs") / state.ledger_id()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        files = _job_files(options, run_dir.name) or run_dir  # (the request and the output, where the nodes see them)
        recorded = _record(state, run_dir, run_dir / "job.log", files / "job.log")
        script = options.script_file or run_dir / "job.sh"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(_script(options, recorded.job_file, recorded.record))
        job_id = _sbatch(options, script, files / "job.log", files, _job_environment(state, options))
    except BaseException as exc:
        abandon(state, exc, run_dir.name)
        raise
    return follow_submitted(state, recorded.record, job_id, "Slurm", on_submitted)


def submit_array(states: list[PreparedRun], throttle: int | None = None) -> list[ClusterRun]:
    """Many runs as job arrays (a sweep whose trials are known in advance): one sbatch per
    array, each task running the runner on its own runs' requests; at most `throttle` tasks at
    once. A task carries one run, or several one after another (`trials_per_task`; by default
    several when the runs are many: see `trials_per_task`). More tasks than the cluster's
    MaxArraySize go out as several arrays, each queued to start after the one before has ended
    (`afterany`), so the throttle holds across them."""
    options: SlurmOptions = states[0].backend_options
    recorded: list[_Recorded] = []
    arrays: list[str] = []
    per_task = trials_per_task(options, len(states), throttle)
    size = max_array_size() * per_task  # (runs per array)
    run_dirs = [home.subdir("runs") / state.ledger_id() for state in states]
    try:
        directories = []
        for index, (state, run_dir) in enumerate(zip(states, run_dirs)):
            if index % size == 0:
                name = f"array-{os.urandom(8).hex()}"
                directories.append(_job_files(options, name) or home.subdir("runs") / name)
                directories[-1].mkdir(parents=True, exist_ok=True)
            run_dir.mkdir(parents=True, exist_ok=True)
            # (Its log is the task's output file, sbatch --output=DIR/%a.log, or, carried, the file the
            # carrier writes its output to; where the nodes do not share MLPROJECT_HOME, that file is in
            # the staging directory, copied into the run's log here.)
            output = directories[-1] / f"{index % size}.log"
            recorded.append(_record(state, run_dir, output if options.shared_home else run_dir / "job.log", output,
                                    carried=per_task > 1))
        for number, array_dir in enumerate(directories):
            arrays.append(_sbatch_array(options, states[0], array_dir, recorded[number * size:(number + 1) * size],
                                        per_task, throttle, arrays[-1] if arrays else None))
    except BaseException as exc:
        for array_id in arrays:  # (queued, but none of its runs is followed: taken down with the rest)
            try:
                cancel(array_id)
            except LaunchError:
                pass
        for state, run_dir in zip(states, run_dirs):
            abandon(state, exc, run_dir.name)
        raise
    return queued_array([item.state for item in recorded], [item.record for item in recorded],
                        [f"{arrays[index // size]}_{index % size // per_task}" for index in range(len(recorded))],
                        "Slurm", arrays)


def _sbatch_array(options: SlurmOptions, state: PreparedRun, array_dir: Path, part: list[_Recorded],
                  per_task: int, throttle: int | None, after: str | None) -> str:
    """One job array of the recorded runs `part`, `per_task` to a task (task N: the requests on
    line N of its manifest), started after array `after` has ended; its job ID."""
    tasks = [part[start:start + per_task] for start in range(0, len(part), per_task)]
    manifest = array_dir / "jobs.manifest"
    manifest.write_text("".join("\t".join(str(item.job_file) for item in task) + "\n" for task in tasks))
    script = array_dir / "job.sh"
    script.write_text(_script(options, manifest, part[0].record, array=len(part), per_task=per_task))
    extra = [f"--array=0-{len(tasks) - 1}" + (f"%{throttle}" if throttle else "")]
    if after is not None:
        extra.append(f"--dependency=afterany:{after}")
    # (A carrier's own output, apart from its runs' logs: which run it is at, why it stopped.)
    output = array_dir / ("%a.log" if per_task == 1 else "task-%a.log")
    return _sbatch(options, script, output, array_dir, _job_environment(state, options), extra)


# A sweep's array carries several trials a task when each of its `throttle` slots would otherwise
# start more than this many tasks; fewer than that per slot and uneven trials would leave slots
# idle at the end (a task's trials run one after another).
_TASKS_PER_SLOT = 4
_MOST_PER_TASK = 50


def trials_per_task(options: SlurmOptions, runs: int, throttle: int | None) -> int:
    """How many of an array's `runs` one task carries: the config's `trials_per_task`, or one
    when the runs are few (each its own job, as Slurm accounts them), or when the nodes keep
    their own ledgers (the submit host learns a run's end from its job alone); else as many as
    leave each of the throttle's slots `_TASKS_PER_SLOT` tasks."""
    if options.trials_per_task is not None:
        return options.trials_per_task
    if not options.shared_home:
        return 1
    return max(1, min(_MOST_PER_TASK, runs // ((throttle or runs) * _TASKS_PER_SLOT)))


_config_cache: dict[str, str] = {}


def _config() -> dict[str, str]:
    """The controller's settings (`scontrol show config`), asked once per process."""
    if not _config_cache:
        from runner.subprocesses import capture

        code, output, _ = capture(["scontrol", "show", "config"])
        for line in output.splitlines() if code == 0 else []:
            key, sep, value = line.partition("=")
            if sep:
                _config_cache[key.strip()] = value.strip()
    return _config_cache


def max_array_size() -> int:
    """How many tasks one job array may have here: MaxArraySize (task IDs 0 to one less)."""
    value = _config().get("MaxArraySize", "")
    return max(1, int(value)) if value.isdigit() else 1001  # (Slurm's default)


@dataclass
class _Recorded:
    """A run in the ledger (SCHEDULED) and its request written for the node; not queued yet."""

    state: PreparedRun
    record: Any
    job_file: Path


def _job_files(options: SlurmOptions, name: str) -> Path | None:
    """Where the nodes find job `name`'s request and write its output when they do not share
    MLPROJECT_HOME: a directory of its own in the staging directory; else None (the run's own)."""
    if options.shared_home:
        return None
    files = options.staging_dir / JOBS / name
    files.mkdir(parents=True, exist_ok=True)
    return files


def _record(state: PreparedRun, run_dir: Path, log_path: Path, output: Path, carried: bool = False) -> _Recorded:
    """The run recorded SCHEDULED (its log here: `log_path`) and its request written where the
    job reads it; `output`: where the job writes its output (the log itself, on a shared home).
    `carried`: its task carries other runs too (runner.cli.carry)."""
    options: SlurmOptions = state.backend_options
    record = record_scheduled(state, run_dir, log_path, "slurm")
    # (Where the nodes do not share MLPROJECT_HOME: next to the output, named by the run, since
    # an array's runs share one directory.)
    recorded = _Recorded(state, record, run_dir / REQUEST_FILE if options.shared_home
                         else output.parent / f"{run_dir.name}.{REQUEST_FILE}")
    uri, version = _project_for_nodes(state.plan.source, options, state.progress)
    environment = None
    if not options.shared_home:  # built here once, packed; the node unpacks it into its own store
        from runner.backends.shipping import packed_environment

        archive = packed_environment(state, options.staging_dir)
        environment = str(archive) if archive is not None else None
    # (Parameters as given: the node resolves them from the caller's directory, as this host did.)
    job = JobRequest.of(state, "slurm", record.id, uri, version, cwd=str(state.request.caller_cwd()),
                        environment=environment, own_ledger=not options.shared_home)
    if carried:
        job = replace(job, output=str(output))
        (run_dir / CARRIED_FILE).touch()
    recorded.job_file.write_text(job.to_json())
    if recorded.job_file != run_dir / REQUEST_FILE:  # (kept here too: what the job was asked, for gc and reruns)
        (run_dir / REQUEST_FILE).write_text(job.to_json())
        (run_dir / STAGED_OUTPUT).write_text(str(output))
    return recorded


def _project_for_nodes(source, options: SlurmOptions, progress) -> tuple[str, str | None]:
    """(URI, version) the runner on the node fetches: a cached commit is found in the shared git
    cache by its (credential-free) URL and full hash; a local directory, or a commit with
    changes applied (a rerun of a dirty run), is staged."""
    if source.checkout is not None and not source.dirty and options.shared_home:
        return source.uri, source.commit  # (the git cache is this host's: nodes that do not share it get a snapshot)
    from runner.backends.staging import snapshot

    return str(snapshot(source.path, options.staging_dir, progress)), None


def _script(options: SlurmOptions, job_file: Path, record, array: int = 0, per_task: int = 1) -> str:
    each = "one per array task" if per_task == 1 else f"up to {per_task} per array task, one after another"
    what = (f"{array} runs of {record.project_uri} (entry point {record.entry_point}), {each}"
            if array else f"run {record.id} ({record.project_uri}, entry point {record.entry_point})")
    lines = [
        "#!/bin/sh",
        f"# mlproject-runner: {what}.",
        "# The request is in the file below; tracking settings come from the job's environment.",
    ]
    lines += [f"module load {shlex.quote(module)}" for module in options.modules]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in options.environment]
    lines.append(f"exec {shlex.quote(options.python)} -m runner job {shlex.quote(str(job_file))}")
    return "\n".join(lines) + "\n"


def _job_environment(state: PreparedRun, options: SlurmOptions) -> dict[str, str]:
    """sbatch's own environment, which it hands to the job: where the runs are tracked (with
    credentials) and where the runner keeps its state, as this host resolved them."""
    env = dict(os.environ)
    env.pop("MLFLOW_RUN_ID", None)  # the job continues its own run, named in the request
    env["MLPROJECT_HOME"] = str(options.home)
    if state.tracking.uri is None:
        env["MLPROJECT_NO_TRACKING"] = "1"
        env.pop("MLFLOW_TRACKING_URI", None)
    else:
        env["MLFLOW_TRACKING_URI"] = state.tracking.uri
    return env


def _sbatch(options: SlurmOptions, script: Path, log_path: Path, run_dir: Path, env: dict[str, str],
            extra: list[str] | None = None) -> str:
    from runner.subprocesses import capture

    # --no-requeue: a job whose node fails (or that is preempted) ends NODE_FAIL (PREEMPTED) and
    # its run FAILED, instead of Slurm's default of running the command again later under the
    # same run. `"sbatch_args": ["--requeue"]` comes after it and wins (sbatch takes the last).
    argv = ["sbatch", "--no-requeue", *options.sbatch_args, *(extra or [])]
    if "--requeue" in options.sbatch_args and not any(a.startswith("--open-mode") for a in options.sbatch_args):
        argv.append("--open-mode=append")  # (a requeued job's start would empty the run's log)
    if options.exports is not None:
        names = [*options.exports, *(name for name in _RUNNER_VARIABLES if name in env)]
        argv.append("--export=" + ",".join(dict.fromkeys(names)))
    # Last, so they win over sbatch_args: the runner follows this output file.
    argv += ["--parsable", f"--output={log_path}", f"--chdir={run_dir}", str(script)]
    try:
        code, output, errors = capture(argv, env=env, merge_stderr=False)
    except OSError as exc:
        raise LaunchError(f"cannot run sbatch: {exc.strerror}", hint="is Slurm installed on this host?") from None
    if code != 0:
        message = (errors.strip() or output.strip() or f"exit code {code}").splitlines()[-1]
        raise LaunchError(f"sbatch refused the job: {message.removeprefix('sbatch: error: ')}",
                          hint="check the backend config (-c) against `sinfo` and your cluster's limits")
    return output.strip().split(";")[0]


# -- the job, as Slurm sees it ----------------------------------------------------------
def job_states(job_ids: list[str]) -> dict[str, JobState | None]:
    """How each of many jobs is doing, in one request to the controller (`scontrol show job`
    of all it remembers: a sweep's array of 1,000 tasks is followed by one command a second,
    not 1,000); the jobs it has forgotten are asked one by one, as job_state does."""
    from runner.subprocesses import capture

    code, output, _ = capture(["scontrol", "show", "job", "-o"])
    own: dict[str, dict[str, str]] = {}  # by job ID, and by ARRAY_TASK for an array's task
    collapsed: dict[str, dict[str, str]] = {}  # an array's record of its tasks not yet split out
    for line in output.splitlines() if code == 0 else []:
        fields = _fields(line)
        array, task = fields.get("ArrayJobId"), fields.get("ArrayTaskId", "")
        if array and task.isdigit():
            own[f"{array}_{task}"] = fields
        elif array and task:
            collapsed[array] = fields
        else:
            own.setdefault(fields.get("JobId", ""), fields)
    states: dict[str, JobState | None] = {}
    for job_id in job_ids:
        fields = own.get(job_id)
        array_id, _, task = job_id.partition("_")
        if fields is None and task.isdigit() and array_id in collapsed and \
                _holds(collapsed[array_id].get("ArrayTaskId", ""), int(task)):
            fields = collapsed[array_id]
        states[job_id] = _state(fields) if fields is not None else job_state(job_id)
    return states


def _holds(tasks: str, task: int) -> bool:
    """Whether an array record's ArrayTaskId (`3-999%8`, `1,4-6`) names task `task`."""
    for part in tasks.split("%")[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and int(low) <= task <= int(high if high.isdigit() else low):
            return True
    return False


def job_state(job_id: str) -> JobState | None:
    """How job `job_id` is doing: the controller while it remembers the job (MinJobAge), then
    accounting (sacct, when the cluster has it), then the job completion log. None: no record."""
    from runner.subprocesses import capture

    code, output, _ = capture(["scontrol", "show", "job", "-o", job_id])
    if code == 0 and "JobState=" in output:
        return _state(_fields(output))
    array_id, _, task = job_id.partition("_")
    if task:
        # An array's tasks that never started live in the array's own record (JobId = the array's
        # ID) until they start; cancelled there, they are never split out under their own IDs.
        code, output, _ = capture(["scontrol", "show", "job", "-o", array_id])
        own = next((_fields(line) for line in output.splitlines() if line.startswith(f"JobId={array_id} ")), None)
        if code == 0 and own is not None and _never_started(own):
            return _state(own)
    code, output, _ = capture(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode,NodeList"])
    line = output.strip().splitlines()[0] if code == 0 and output.strip() else ""
    if line.count("|") == 2:
        state, exit_code, nodes = line.split("|")
        return _state({"JobState": state, "ExitCode": exit_code, "NodeList": nodes})
    completion_log = _completion_log()
    if completion_log is not None:
        found = array_found = None
        try:
            with open(completion_log, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if line.startswith(f"JobId={job_id} "):
                        found = line  # the last one: a requeued job is logged at each end
                    elif task and line.startswith(f"JobId={array_id} "):
                        array_found = line
        except OSError:
            return None
        if found:
            return _state(_fields(found))
        if task and array_found and _never_started(_fields(array_found)):
            return _state(_fields(array_found))
    return None


def chosen_job_id(ledger_id: str) -> str | None:
    """None: sbatch hands the job ID out."""
    return None


def _never_started(fields: dict[str, str]) -> bool:
    """An ended record that ran on no node: the tasks of an array still pending when it ended."""
    state = _state(fields)
    return state.ended and state.node is None


def _fields(line: str) -> dict[str, str]:
    fields = {}
    for word in line.split():
        key, sep, value = word.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def _state(fields: dict[str, str]) -> JobState:
    name = fields.get("JobState", "UNKNOWN").split()[0].rstrip("+")  # sacct: "CANCELLED by 0"
    status = _ENDS.get(name)
    exit_code = None
    code, _, signal_number = fields.get("ExitCode", "").partition(":")
    # "0:0" for a job that did not end by its own exit (a failed node, a preemption) says nothing
    # of the command: no exit code then, rather than a success's 0.
    if status is not None and code.isdigit() and (status == RunStatus.FINISHED or fields.get("ExitCode") != "0:0"):
        exit_code = 128 + int(signal_number) if signal_number.isdigit() and int(signal_number) else int(code)
    node = fields.get("NodeList")
    reason = fields.get("Reason")
    restarts = fields.get("Restarts", "0")
    return JobState(name, status, exit_code, node if node and node != "(null)" else None,
                    reason if reason and reason != "None" else None, lost=name in _LOST,
                    restarts=int(restarts) if restarts.isdigit() else 0)


def _completion_log() -> str | None:
    """The cluster's job completion log, when it keeps one as a text file (jobcomp/filetxt)."""
    settings = _config()
    path = settings.get("JobCompLoc")
    return path if settings.get("JobCompType") == "jobcomp/filetxt" and path else None


def cancel(job_id: str) -> None:
    from runner.subprocesses import capture

    code, output, _ = capture(["scancel", job_id])
    if code != 0 and "already completed" not in output and "Invalid job id" not in output:
        raise LaunchError(f"scancel {job_id} failed: {output.strip()}", hint="check `squeue -j " + job_id + "`")


def shares_ledger(run_id: str) -> bool:
    """Whether run `run_id`'s job writes this host's ledger: unless its nodes do not share
    MLPROJECT_HOME (its output is then in the staging directory)."""
    return not (home.subdir("runs") / run_id / STAGED_OUTPUT).exists()


def pull_output(job_id: str, log_path: Path) -> None:
    """Where the nodes share MLPROJECT_HOME the job writes the run's log itself: nothing to
    pull. Otherwise its output is in the staging directory: copied into the run's log here
    whenever it grew (several followers of one run may pull at once)."""
    import shutil

    try:
        staged = Path((log_path.parent / STAGED_OUTPUT).read_text())
        size = staged.stat().st_size
    except (OSError, ValueError):
        return

    def copy_staged(copy) -> None:
        with open(staged, "rb") as source:
            shutil.copyfileobj(source, copy)

    replace_log_if_grown(log_path, size, copy_staged)


def stopped_by_cluster() -> tuple[str, str] | None:
    """Inside a job that was signalled: (status, reason) when Slurm says why (its time limit, a
    cancel, a preemption), read from the controller; None when it does not say."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    if os.environ.get("SLURM_ARRAY_TASK_ID"):  # a sweep's trial: named as its submitter named it, ARRAY_TASK
        job_id = f"{os.environ.get('SLURM_ARRAY_JOB_ID')}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    state = job_state(job_id)
    if state is None:
        return None
    started_as = os.environ.get("SLURM_RESTART_COUNT", "0")
    if state.restarts > (int(started_as) if started_as.isdigit() else 0):
        # Requeued (`--requeue`: preempted, its node lost, `scontrol requeue`): the same run goes
        # on when the job starts again, instead of ending here.
        return RunStatus.SCHEDULED, f"slurm job {job_id} requeued (restart {state.restarts})"
    # While the job is being taken down its state reads COMPLETING, and only the reason says
    # why. This runner is the job's batch script, still alive: so the job did not complete on
    # its own, and with no reason given (as after `scancel`) it was cancelled.
    name = _STOP_REASONS.get(state.reason or "", "CANCELLED") if state.name == "COMPLETING" else state.name
    if name == "CANCELLED":
        return RunStatus.KILLED, f"slurm job {job_id} ended CANCELLED"
    if name in _ENDS and _ENDS[name] == RunStatus.FAILED and name != "FAILED":
        return RunStatus.FAILED, f"slurm job {job_id} ended {name}"
    return None


# The reason slurmctld gives a job it is stopping, as the state it will end in.
_STOP_REASONS = {"TimeLimit": "TIMEOUT", "Preempted": "PREEMPTED", "DeadLine": "DEADLINE", "NodeDown": "NODE_FAIL",
                 "OutOfMemory": "OUT_OF_MEMORY"}
