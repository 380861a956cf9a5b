"""Running a sweep: every trial an ordinary run (api.submit) under one parent run, in parallel.

    SweepRequest --space--> trials --plan once--> every trial's parameters checked
        --environment built once--> parent run opened (tracking + ledger) --trials, N at a
        time, on the sweep's backend--> metric read from each trial's run --> best trial
        tagged on the parent, the trials' table as its artifact, the parent ended

The state (what was asked, each trial's run and outcome) is in the ledger from the
start, so `resume()` runs only what is missing after a kill, a crash or a reboot.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runner import home
from runner.errors import RunnerError, UsageError
from runner.sweeps import report
from runner.sweeps.space import parse_space
from runner.sweeps.state import SweepRecord, SweepStore, Trial
from runner.status import RunStatus

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping

    from runner.retries import RetryPolicy
    from runner.sweeps.search import Search

GOALS = ("minimize", "maximize")
SWEEP_TAG = "mlproject.sweep.id"
PRUNED_TAG = "mlproject.sweep.pruned_at"  # the step a trial was stopped at by --prune


@dataclass(frozen=True)
class SweepRequest:
    """What `mlproject sweep` and `runner.sweep()` take; stored as JSON with the sweep."""

    uri: str = "."
    entry_point: str = "main"
    version: str | None = None
    parameters: Mapping[str, Any] | None = None  # name -> a value or a space (see runner.sweeps.space)
    method: str = "grid"
    max_runs: int | None = None
    seed: int | None = None
    max_parallel: int | None = None  # default: the number of cores
    metric: str | None = None  # ranks the trials: the last value each trial logged under this name
    goal: str = "minimize"
    max_failures: int | None = None  # stop starting trials once more than this many failed
    backend: str = "local"
    backend_config: Any = None
    env_manager: str | None = None
    experiment_name: str | None = None
    experiment_id: str | None = None
    cwd: str | None = None
    prune: str | None = None  # median | asha: stop trials that fall behind (runner.sweeps.prune)
    gpus_per_trial: int = 0  # each trial's own GPUs (runner.gpus)
    gpu_devices: tuple[str, ...] | None = None  # the GPUs to share out here (None: the machine's)
    retries: int = 0  # a trial whose job the infrastructure ended runs again, as a new attempt (runner.retries)
    retry_failed: bool = False  # and one whose command failed
    tracking: str | None = None  # auto | offline | online (runner.tracking.offline)

    def retry_policy(self) -> RetryPolicy:
        from runner.retries import RetryPolicy

        return RetryPolicy(self.retries, self.retry_failed)

    def check(self) -> None:
        self.retry_policy().check()
        if self.tracking is not None:
            from runner.tracking.offline import check_mode

            check_mode(self.tracking, self.backend or "local")
        from runner.gpus import check_count
        from runner.seams import SEARCHES

        check_count(self.gpus_per_trial, "--gpus-per-trial")
        if self.gpus_per_trial and (self.backend or "local") == "local":
            from runner.gpus import GpuRequest

            GpuRequest(self.gpus_per_trial, self.gpu_devices).pool()  # (enough devices, before any run exists)
        from runner.sweeps.prune import check_prune

        check_prune(self.prune, self.method, self.metric)

        if self.method not in SEARCHES:
            raise UsageError(f"unknown sweep method {self.method!r}", hint=f"choose one of: {', '.join(SEARCHES)}")
        if self.goal not in GOALS:
            raise UsageError(f"unknown goal {self.goal!r}", hint="minimize or maximize")
        for name in ("max_runs", "max_parallel", "max_failures"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < (0 if name == "max_failures" else 1)):
                raise UsageError(f"{name.replace('_', '-')} must be a positive whole number, not {value!r}",
                                 hint=f"for example --{name.replace('_', '-')} 4")


@dataclass
class SweepResult:
    sweep_id: str
    parent_run_id: str
    trials: list[Trial]
    metric: str | None
    goal: str
    status: str = RunStatus.RUNNING  # the parent run's: FINISHED (every trial finished), FAILED or KILLED
    best: Trial | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.status == RunStatus.FINISHED


def start(request: SweepRequest, *, notify: Callable[[str], None], progress=None) -> SweepResult:
    request.check()
    space = parse_space(dict(request.parameters or {}))
    search = _search_of(request, space)
    if search.ADAPTIVE:
        # Every trial is proposed as the search goes; what can be checked now is every value a
        # trial can take at the ends of the space (each listed value, each range's bounds).
        return _drive(request, os.urandom(6).hex(), [], None, notify, progress, space.as_json(), search,
                      checks=space.corners())
    trials = [Trial(number, parameters) for number, parameters in enumerate(search.planned(), start=1)]
    if not trials:
        raise UsageError("the sweep has no trials", hint="give at least one -P NAME=VALUES")
    if not space.dimensions:
        notify("note: no parameter is swept (every -P has one value): the sweep is one trial")
    return _drive(request, os.urandom(6).hex(), trials, None, notify, progress, space.as_json(), search)


def _search_of(request: SweepRequest, space) -> Search:
    from runner.sweeps.search import SearchSettings, make_search

    return make_search(request.method, SearchSettings(space, request.max_runs, request.seed, request.metric,
                                                      request.goal, request.prune))


def resume(sweep_id: str, *, notify: Callable[[str], None], progress=None) -> SweepResult:
    """Run what a sweep still lacks: trials that never ran, whose run was cut short with its
    driver, or whose cluster job was lost before its runner started. Trials that finished or
    failed on their own, and pruned ones, are kept."""
    record = find(sweep_id)
    request = SweepRequest(**record.request)
    from runner import backends
    from runner.tracking.ledger import Ledger
    from runner.retries import lost_job
    from runner.tracking.runs import find as find_run

    ledger = Ledger()
    following: set[int] = set()
    try:
        backends.reconcile(ledger)  # runs a dead driver left are ended first
        for trial in record.trials:
            if trial.pruned_at is not None:
                continue  # pruned: a decision made, kept (its run stopped, or stops with its dead runner)
            if trial.status in (RunStatus.RUNNING, RunStatus.KILLED, RunStatus.FAILED) and trial.run_id:
                try:
                    run = find_run(ledger, trial.run_id)
                except UsageError:
                    run = None
                if run is not None and not run.finished and run.backend in backends.CLUSTER_BACKENDS:
                    following.add(trial.number)  # its job went on without the driver: follow it, not again
                elif (run is not None and run.status == RunStatus.FAILED and trial.attempt <= request.retries
                      and lost_job(run.backend, run.job_id, run.id, run.exit_code)):
                    trial.status, trial.attempt = "PENDING", trial.attempt + 1  # its retry, never made
                elif (run is not None and run.status in (RunStatus.FINISHED, RunStatus.FAILED) and run.reason != _runner_died()
                      and not _never_started(run)):
                    trial.status, trial.duration = run.status, (run.end_time or run.start_time) - run.start_time
                else:
                    trial.status, trial.run_id = "PENDING", None  # cut short with its driver: run again
        parent_row = find_run(ledger, record.parent_run_id)
    finally:
        ledger.close()
    missing = [t for t in record.trials if not t.done and t.number not in following]
    notify(f"resuming sweep {record.id}: {len(record.trials) - len(missing) - len(following)} trial(s) kept, "
           f"{len(following)} still running on the cluster, {len(missing)} to run")
    parent = _Parent(record.parent_run_id, parent_row.tracking_run_id, parent_row.tracking_uri)
    space = parse_space(dict(request.parameters or {}))
    search = _search_of(request, space)
    return _drive(request, record.id, record.trials, parent, notify, progress, space.as_json(), search,
                  checks=space.corners() if search.ADAPTIVE else None, following=following)


@dataclass(frozen=True)
class _Parent:
    """A resumed sweep's parent run: its ledger row, and its MLflow run when it was tracked."""

    ledger_id: str
    tracking_run_id: str | None
    tracking_uri: str | None = None


def find(sweep_id: str) -> SweepRecord:
    from runner.tracking.ledger import Ledger

    if not sweep_id.strip():
        raise UsageError("no sweep ID given", hint="see `mlproject sweep list`")
    ledger = Ledger()
    try:
        matches = SweepStore(ledger).get(sweep_id)
    finally:
        ledger.close()
    from runner.tracking.runs import one_of

    return one_of(matches, [m for m in matches if m.id == sweep_id], "sweep", sweep_id, "`mlproject sweep list`")


def _never_started(run) -> bool:
    """A cluster job whose runner never took its run over (the job was lost before it ran: a
    controller that died before saving it): its trial has not run, whatever the row says."""
    from runner import backends

    return run.status == RunStatus.FAILED and backends.NEVER_STARTED in (run.reason or "")


def _runner_died() -> str:
    from runner.tracking.runs import RUNNER_DIED

    return RUNNER_DIED


# -- the driver ---------------------------------------------------------------------------
def _drive(request: SweepRequest, sweep_id: str, trials: list[Trial], parent: _Parent | None,
           notify: Callable[[str], None], progress, space: dict, search: Search, checks: list[dict] | None = None,
           following: set[int] | None = None) -> SweepResult:
    from runner import api
    from runner.project.params import resolve

    cwd = Path(request.cwd).absolute() if request.cwd else Path.cwd()
    checks = [*(checks or []), *(t.parameters for t in trials)]
    # One fetch: a git project's trials all run the commit it resolved to now.
    plan = api.plan(request.uri, request.entry_point, request.version, checks[0], request.env_manager, cwd,
                    notify=notify, progress=progress)
    try:
        for number, parameters in enumerate(checks, start=1):  # every value of every trial, before the first starts
            try:
                resolve(plan.project, request.entry_point, parameters, cwd)
            except RunnerError as exc:
                exc.message = f"trial {number} ({report.shown(parameters)}): {exc.message}"
                raise
        cached = plan.source.checkout is not None
        version = plan.source.commit if cached else request.version
        # (a local directory by its absolute path: the environment is prepared from here, not the caller's cwd)
        env_uri = request.uri if cached or plan.source.lease is not None else str(plan.source.path)
        manager = plan.env_manager
    finally:
        plan.source.release()
    if (request.backend or "local") == "local" and (search.ADAPTIVE or any(not t.done for t in trials)):
        # Built once, before the first trial (the trials would otherwise queue on its lock).
        api.prepare_environment(env_uri, version, manager, notify=notify, progress=progress).release()
    sweep = _Sweep(request, sweep_id, trials, version, manager, notify, cwd, search)
    sweep.following = following or set()
    # Signals are raised only where the driver looks for them (and while the parent's MLflow run
    # is created); while the trials are being stopped and the parent ended, another one
    # escalates (the trials are killed) instead. The parent is opened inside: a signal that
    # lands just after its rows are written still ends it.
    with _DeferredSignals() as signals:
        try:
            sweep.open_parent(parent, space, plan, signals)
            signals.raise_received()
            sweep.run_trials(signals)
        except BaseException as exc:
            sweep.interrupted = True
            if sweep.created:
                exc.sweep_id = sweep_id  # type: ignore[attr-defined]  # for the caller's "resume with" line
            raise
        finally:
            sweep.close()
    return sweep.result


class _Sweep:
    """One sweep being driven: its parent run, its ledger rows, its trials in flight."""

    def __init__(self, request: SweepRequest, sweep_id: str, trials: list[Trial], version: str | None, manager: str,
                 notify: Callable[[str], None], cwd: Path, search: Search):
        self.request, self.id, self.trials, self.version, self.manager = request, sweep_id, trials, version, manager
        self.notify, self.cwd = notify, cwd
        self.interrupted = False
        self.directory = home.subdir("sweeps") / sweep_id
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log = open(self.directory / "sweep.log", "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._lock = threading.Lock()  # the ledger's connection and the tracker are shared by the trial threads
        self._active: dict[int, Any] = {}
        self._stop = threading.Event()
        self._warned: set[str] = set()
        self.following: set[int] = set()  # resumed: trials whose cluster jobs outlived the last driver
        self.search = search
        self.pruner = search.pruner()
        # The devices the trials share out here, resolved once (_gpu_bound); None: a cluster's
        # scheduler hands them out, or no trial asks for any.
        self.gpu_pool: tuple[str, ...] | None = None
        self.result = SweepResult(sweep_id, "", trials, request.metric, request.goal)
        # Until open_parent has made them: no parent run in tracking, no ledger row.
        from runner.tracking.ledger import Ledger
        from runner.tracking.session import TrackedRun

        self.tracked = TrackedRun(None, None)
        self.note: Path | None = None  # the parent's pending note, until the ledger has its row
        self.parent_id = ""
        self.created = False  # the sweep is in the ledger: it can be resumed
        self.ledger = Ledger()
        self.store = SweepStore(self.ledger)

    # -- the parent run ------------------------------------------------------------------
    def open_parent(self, parent: _Parent | None, space: dict, plan, signals: _DeferredSignals) -> None:
        from runner import faults
        from runner.tracking import pending, redact
        from runner.tracking.ledger import RunRecord
        from runner.tracking import offline
        from runner.tracking.offline import check_mode
        from runner.tracking.session import begin_tracking, plan_tracking, project_tags

        request = self.request
        continued = parent.tracking_run_id if parent else None
        if parent is not None and continued is None:  # the sweep was not tracked: nor is its rest
            from runner.tracking.session import TrackingTarget

            self.tracking = TrackingTarget(None, False)
        elif parent is not None and parent.tracking_uri and offline.is_store(parent.tracking_uri):  # offline: its rest too
            self.tracking = offline.resumed(parent.tracking_uri, parent.tracking_run_id)
        else:
            mode = check_mode(request.tracking or os.environ.get("MLPROJECT_TRACKING") or "auto",
                              request.backend or "local")
            self.tracking = plan_tracking(self.cwd, request.experiment_name, request.experiment_id, continued,
                                          mode=mode, local=(request.backend or "local") == "local", notify=self.say)
        tags = project_tags(plan.source.source_name, request.entry_point, self.manager, None, plan.source.commit,
                            plan.source.repo_url, plan.source.branch, plan.source.dirty, plan.source.branch_named,
                            request.backend or "local")
        tags.update({SWEEP_TAG: self.id, "mlproject.sweep.method": request.method,
                     "mlproject.sweep.space": json.dumps(space, sort_keys=True),
                     "mlproject.sweep.trials": str(len(self.trials))})
        if request.metric:
            tags["mlproject.sweep.metric"] = f"{request.metric} ({request.goal})"
        if self.tracking.uri is not None:
            # As for a run (see runner.tracking.pending): a driver killed while the parent is
            # created leaves a run that the next invocation finds by its tag and ends.
            self.note = pending.before_creation(tags, self.tracking.uri, request.experiment_name,
                                                request.experiment_id, continued)
        try:
            with signals.raising():  # (a wait on the server, with no lock of ours held)
                self.tracked = begin_tracking(self.tracking, experiment_name=request.experiment_name,
                                              experiment_id=request.experiment_id, run_id=continued,
                                              run_name=None if parent else f"sweep-{self.id}", tags=tags,
                                              params={}, notify=self.say)()
        except BaseException as exc:
            pending.settle(self.note, exc)
            self.note = None
            raise
        self.parent_id = parent.ledger_id if parent else self.tracked.run_id or os.urandom(16).hex()
        self.result.parent_run_id = self.parent_id
        if parent is None:
            self.ledger.start(RunRecord(
                id=self.parent_id, project_uri=plan.source.uri, project_dir=str(plan.project.directory),
                entry_point=request.entry_point, command=f"sweep {self.id}: {request.method}, {len(self.trials)} trials",
                env_manager=self.manager, log_path=str(self.directory / "sweep.log"), parameters=space,
                git_commit=plan.source.commit, tracking_run_id=self.tracked.run_id,
                tracking_uri=redact(self.tracking.uri) if self.tracked.run_id and self.tracking.uri else None,
                backend="sweep"))
            faults.checkpoint("sweep.parent")  # (the parent's rows are written; no trial has started)
            pending.clear(self.note)  # the ledger has the parent now
            self.note = None
            self.store.create(self.id, self.parent_id, _as_json(request, self.cwd), self.trials)
        else:
            self.ledger.reopen(self.parent_id)
            pending.clear(self.note)
            self.note = None
            for trial in self.trials:
                self.store.update(self.id, trial)
        self.created = True
        self.experiment_id = self.tracked.context.experiment_id if self.tracked.context else None

    def close(self) -> None:
        """Rank the trials, record the best on the parent with the table, and end the parent."""
        from runner import faults

        faults.checkpoint("sweep.closing")  # (the trials are over; the parent's table and end to come)
        result = self.result
        ended = [t for t in self.trials if t.status == RunStatus.FINISHED]
        ranked = [t for t in ended if t.metric is not None]
        if ranked:
            result.best = (min if self.request.goal == "minimize" else max)(ranked, key=lambda t: float(t.metric or 0.0))  # (ranked: all have one)
        elif self.request.metric and ended:
            result.notes.append(f"note: no trial logged a metric named {self.request.metric!r}")
        if self.interrupted:
            result.status = RunStatus.KILLED
        else:
            result.status = RunStatus.FINISHED if all(t.ended_well for t in self.trials) else RunStatus.FAILED
        try:
            with self._lock:
                self._record_best(result)
        finally:
            try:  # (its files are worth a warning, never the parent's end: a full disk refuses them)
                table = self.directory / "trials.csv"
                report.write_csv(table, self.trials, self.request.metric, self.request.goal)
                self.tracked.artifacts.append((table, None))
                plot, note = report.plot(self.trials, self.request.metric, self.request.goal,
                                         list(parse_space(dict(self.request.parameters or {})).as_json()),
                                         f"sweep {self.id}", self.directory)
                if note:
                    result.notes.append(note)
                if plot is not None:
                    self.tracked.artifacts.append((plot, None))
            except OSError as exc:
                # (Said now: a disk that refuses them may refuse the parent's end in the ledger too,
                # and the command then ends on that error before any note is said.)
                self.notify(f"warning: the sweep's table and plot were not written: {exc}")
            # (An interrupted sweep ran no command of its own to give an exit code.)
            from runner.tracking.ending import end_everywhere

            end_everywhere(self.ledger, self.parent_id, self.tracked, result.status,
                           None if result.succeeded or self.interrupted else 1,
                           None if result.succeeded else _why(self.trials, self.interrupted), self.notify, note=self.note)
            self.ledger.close()
            self.log.close()

    def _record_best(self, result: SweepResult) -> None:
        best = result.best
        if best is None or not self.request.metric:
            return
        try:
            self.tracked.set_tags({"mlproject.sweep.best_run_id": best.run_id or "",
                                   "mlproject.sweep.best_trial": str(best.number),
                                   "mlproject.sweep.best_metric": f"{self.request.metric}={best.metric:g}"})
            self.tracked.log_metrics({self.request.metric: float(best.metric)})  # type: ignore[arg-type]
        except RunnerError as exc:
            self.notify(f"warning: tracking: the best trial was not recorded on the parent run: {exc.message}")

    # -- the trials ----------------------------------------------------------------------
    def run_trials(self, signals: _DeferredSignals) -> None:
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        todo = [t for t in self.trials if not t.done]
        workers = self._gpu_bound(self.request.max_parallel or os.cpu_count() or 1)
        if self.search.ADAPTIVE:
            self.search.open(self.directory, f"sweep-{self.id}")
        if self.pruner is not None:  # (resumed: the trials that finished before are what others are held to)
            for trial in self.trials:
                if trial.status == RunStatus.FINISHED:
                    self.pruner.finished(trial, self._history(trial))
        count = self.search.budget() - sum(t.done for t in self.trials) if self.search.ADAPTIVE else len(todo)
        self.say(f"sweep {self.id}: {count} trial(s) to run, {workers} at a time "
                 f"(parent run {self.parent_id}); see it with: mlproject sweep show {self.id}")

        queued = self._followed()  # trials whose cluster jobs went on while no driver watched
        fresh = [t for t in todo if t.number not in queued]
        if not self.search.ADAPTIVE and len(fresh) > 1 and self._arrays():
            # Known in advance: one job array queues them all, at most `workers` running at once.
            queued.update(self._queue_array(fresh, workers))
        # A queued trial takes a thread once its job has started (or ended): those running are
        # at most the throttle, so a 1,000-task array is not 1,000 threads waiting in its queue.
        workers += min(len(queued), workers + 8)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlproject-trial")
        futures: set = set()
        try:
            while True:
                while len(futures) < workers:
                    # (Stopped: no new trial starts, but a queued one is still followed to the end
                    # its cancel gives it, and recorded.)
                    stopped = self._stop.is_set()
                    trial = _next_ready(todo, queued, not stopped) if todo else None if stopped else self._proposed()
                    if trial is None:
                        break
                    futures.add(pool.submit(self._one, trial, queued.get(trial.number)))
                if not futures and not any(t.number in queued or not self._stop.is_set() for t in todo):
                    break
                if futures:
                    done, futures = wait(futures, timeout=0.25, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()  # a bug in the driver surfaces here, not silently
                else:
                    time.sleep(0.25)  # (every trial left is a job still waiting in its queue)
                signals.raise_received()
        except BaseException:
            self._stop.set()
            asked = len(signals.received)
            self._cancel_running()
            # The queued trials no thread took yet are recorded too, as their cancelled jobs end.
            futures |= {pool.submit(self._one, trial, queued[trial.number]) for trial in todo if trial.number in queued}
            while futures:
                _, futures = wait(futures, timeout=0.25)
                if len(signals.received) > asked:  # asked again: a second request kills at once
                    asked = len(signals.received)
                    self._cancel_running()
            raise
        finally:
            pool.shutdown(wait=True)

    def _cancel_running(self) -> None:
        with self._lock:
            active = list(self._active.values())
        for submitted in self._cancel_carriers(active):
            submitted.request_cancel()

    def _cancel_carriers(self, active: list) -> list:
        """The sweep stops: job arrays whose tasks carry several trials are cancelled whole (a
        trial's own cancel stops only it, and its task would go on to the next); the handles
        left to cancel one by one."""
        from runner import backends
        from runner.backends.job import is_carried

        carried = [h for h in active if h.job_id and h.backend in backends.CLUSTER_BACKENDS and is_carried(h.ledger_id)]
        for backend, array in {(h.backend, h.job_id.split("_")[0]) for h in carried}:
            try:
                backends.cluster_backend(backend).cancel(array)
            except RunnerError as exc:
                self.say(f"warning: {backend} job array {array} was not cancelled: {exc.message}")
        return [h for h in active if h not in carried]

    def _proposed(self) -> Trial | None:
        """The search's next trial (an adaptive search's), recorded; None when it has no more."""
        if not self.search.ADAPTIVE:
            return None
        with self._lock:  # (the count and the ask at once: two trial threads ask at the same time)
            trial = self.search.ask(len(self.trials))
            if trial is not None:
                self.trials.append(trial)
                self.store.add(self.id, trial)
        return trial

    def _gpu_bound(self, workers: int) -> int:
        """Trials at once on this machine: no more than the GPUs give each its own (the others wait
        for a free device before they start)."""
        request = self.request
        if not request.gpus_per_trial or (request.backend or "local") != "local":
            return workers
        from runner.gpus import GpuRequest

        pool = self.gpu_pool = GpuRequest(request.gpus_per_trial, request.gpu_devices).pool()
        fitting = len(pool) // request.gpus_per_trial
        if fitting < workers:
            self.say(f"sweep {self.id}: {fitting} trial(s) at once, {request.gpus_per_trial} of the GPUs "
                     f"{', '.join(pool)} each")
        return min(workers, fitting)

    def _run_request(self, trial: Trial):
        from runner.request import RunRequest

        request = self.request
        experiment_name, experiment_id, tracking = None, self.experiment_id, request.tracking
        if self.tracking.offline_for is not None:  # recorded offline, as the parent: where the user chose
            experiment_name, experiment_id, tracking = request.experiment_name, request.experiment_id, "offline"
        return RunRequest(
            request.uri, request.entry_point, self.version, trial.parameters, experiment_name=experiment_name,
            experiment_id=experiment_id, tracking=tracking,
            backend=request.backend or "local", backend_config=request.backend_config, synchronous=False,
            env_manager=self.manager, run_name=f"sweep-{self.id}-{trial.number}", cwd=self.cwd, stream_output=False,
            parent_run_id=self.tracked.run_id, gpus=request.gpus_per_trial, gpu_devices=self.gpu_pool,
        )

    def _arrays(self) -> bool:
        from runner import backends

        name = self.request.backend
        return name in backends.CLUSTER_BACKENDS and backends.cluster_backend(name).JOB_ARRAYS

    def _followed(self) -> dict[int, Any]:
        from runner.backends.cluster import ClusterRun
        from runner.tracking.runs import find

        handles = {}
        for trial in self.trials:
            if trial.number in self.following and trial.run_id:
                handles[trial.number] = ClusterRun(find(self.ledger, trial.run_id))
                with self._lock:
                    self._active[trial.number] = handles[trial.number]
        return handles

    def _queue_array(self, todo: list[Trial], throttle: int) -> dict[int, Any]:
        from runner import api, backends

        handles = api.submit_array([self._run_request(trial) for trial in todo], notify=self._quiet, throttle=throttle)
        with self._lock:
            for trial, handle in zip(todo, handles):
                trial.run_id, trial.status = handle.run_id, RunStatus.RUNNING
                self._active[trial.number] = handle
                self.store.update(self.id, trial)
        arrays = list(dict.fromkeys(handle.job_id.split("_")[0] for handle in handles))
        tasks = len({handle.job_id for handle in handles})
        noun = backends.cluster_backend(self.request.backend).ARRAY_NOUN
        if "_" not in handles[0].job_id:  # (few trials: a job each)
            queued_as = f"{len(todo)} {self.request.backend} jobs"
        else:
            queued_as = f"{self.request.backend} {noun}{'s' if len(arrays) > 1 else ''} {', '.join(arrays)}"
            if tasks < len(todo):  # (tasks carrying several trials)
                queued_as += f" ({tasks} tasks, each carrying up to {-(-len(todo) // tasks)} trials)"
            elif len(arrays) < len(todo) and noun == "carrier job":
                queued_as += f" (each carrying up to {-(-len(todo) // len(arrays))} trials)"
        self.say(f"sweep {self.id}: {len(todo)} trials queued as {queued_as}, at most {throttle} at once")
        return {trial.number: handle for trial, handle in zip(todo, handles)}

    def _one(self, trial: Trial, queued=None) -> None:
        """A trial to its end: its run (or its array task, `queued`) followed, and run again as a
        new attempt while the retry policy says so."""
        from runner.retries import next_attempt

        started = time.monotonic()
        policy = self.request.retry_policy()
        run_request = self._run_request(trial)
        if trial.attempt > 1 and trial.run_id:  # resumed with an attempt to make
            run_request = next_attempt(run_request, trial.run_id, trial.attempt)
        while True:
            if queued is not None:  # a task of the sweep's job array: follow it
                handle = queued
                try:
                    self._follow(trial, queued)
                    trial.status = queued.get_status()
                except RunnerError as exc:
                    trial.status = RunStatus.FAILED
                    self.say(f"trial {trial.number}: {exc.message}")
            else:
                if self._stop.is_set():
                    return
                handle = self._submit(trial, run_request)
            if handle is None or self._stop.is_set() or trial.pruned_at is not None:
                break
            why = policy.why_again(handle, trial.attempt)
            if why is None:
                break
            trial.attempt += 1
            run_request = next_attempt(run_request, handle.run_id, trial.attempt)
            with self._lock:
                trial.status = "PENDING"  # (the failed attempt's run stays recorded as it ended)
                self.store.update(self.id, trial)
            self.say(f"trial {trial.number}: run {handle.run_id} failed ({why}): attempt {trial.attempt} "
                     f"of {policy.retries + 1}")
            queued = None
        self._finish(trial, started)

    def _submit(self, trial: Trial, run_request):
        """One attempt of a trial, submitted and followed to its end: its handle (None when it
        could not be submitted)."""
        from runner import api

        def submitted_now(submitted) -> None:
            with self._lock:
                self._active[trial.number] = submitted
                trial.run_id, trial.status = submitted.run_id, RunStatus.RUNNING
                self.store.update(self.id, trial)
            if self._stop.is_set():
                submitted.request_cancel()

        try:
            submitted = api.submit(run_request, notify=self._quiet, on_submitted=submitted_now)
            self._follow(trial, submitted)
            trial.status = submitted.get_status()
            return submitted
        except RunnerError as exc:  # e.g. its environment did not build: the sweep goes on
            trial.status = RunStatus.KILLED if self._stop.is_set() else RunStatus.FAILED
            self.say(f"trial {trial.number}: {exc.message}")
            return None

    def _follow(self, trial: Trial, handle) -> None:
        """Wait for a trial's run to end. With --prune, its values are read as it runs, and it
        is stopped once it falls behind; the decision is kept before the stop is asked for."""
        from runner.sweeps.prune import POLL_SECONDS

        if self.pruner is None or self.tracked.tracker is None or not trial.run_id:
            handle.wait()
            return
        while not handle.done:
            handle.wait(POLL_SECONDS)
            if handle.done or self._stop.is_set() or handle.get_status() == RunStatus.SCHEDULED:
                continue  # (a queued trial has logged nothing: its metrics are not asked for)
            history = self._history(trial)
            if history and self.pruner.should_prune(trial, history):
                trial.pruned_at = history[-1][0]
                with self._lock:
                    self.store.update(self.id, trial)
                self.say(f"trial {trial.number}: pruned at step {trial.pruned_at} ({self.request.metric} "
                         f"{history[-1][1]:g}, behind the trials before it)")
                handle.request_cancel()
                handle.wait()
                return

    def _history(self, trial: Trial) -> list[tuple[int, float]]:
        """The trial's values of the sweep's metric so far, by step; none when they cannot be read."""
        tracker, metric = self.tracked.tracker, self.request.metric
        if tracker is None or metric is None or not trial.run_id:
            return []
        try:
            with self._lock:
                return tracker.metric_history(trial.run_id, metric)
        except RunnerError as exc:
            self._quiet(f"warning: the values of trial {trial.number} were not read, so it is not pruned: {exc.message}")
            return []

    def _finish(self, trial: Trial, started: float) -> None:
        """A trial's end: its metric, its state, its line; the search told; --max-failures."""
        request = self.request
        trial.duration = time.monotonic() - started
        if trial.pruned_at is not None and trial.status == RunStatus.FINISHED:
            trial.pruned_at = None  # (it ended on its own before the stop reached it)
        if self.pruner is not None and trial.status == RunStatus.FINISHED:
            self.pruner.finished(trial, self._history(trial))
        with self._lock:
            self._active.pop(trial.number, None)
            if trial.status == RunStatus.FINISHED and request.metric and trial.run_id:
                trial.metric = self._metric(trial.run_id)
            if trial.pruned_at is not None:
                self.ledger.set_reason(trial.run_id or "", f"pruned at step {trial.pruned_at}")  # (its ledger ID: a trial is never a continued run)
                self._tag_pruned(trial)
            self.store.update(self.id, trial)
            failures = sum(t.status == RunStatus.FAILED for t in self.trials)
        self._report(trial)
        self.search.tell(trial)
        if request.max_failures is not None and failures > request.max_failures and not self._stop.is_set():
            self._stop.set()
            self.say(f"sweep {self.id}: {failures} trials failed (--max-failures {request.max_failures}); "
                     "no more trials are started")
            with self._lock:  # an array's tasks still in the queue are not started either
                waiting = [h for h in self._active.values() if h.get_status() == RunStatus.SCHEDULED]
            for handle in waiting:
                handle.request_cancel()

    def _tag_pruned(self, trial: Trial) -> None:
        """MLflow has the run KILLED; the tag says why, where the ledger's reason does not reach."""
        if self.tracked.tracker is None or not trial.run_id:
            return
        try:
            self.tracked.tracker.set_tags(trial.run_id, {PRUNED_TAG: str(trial.pruned_at)})
        except RunnerError as exc:
            self.say(f"warning: trial {trial.number} was pruned, but its run could not be tagged so: {exc.message}")

    def _metric(self, run_id: str) -> float | None:
        if self.tracked.tracker is None or self.request.metric is None:
            return None
        try:
            _, metrics = self.tracked.tracker.results(run_id)
        except RunnerError as exc:
            self.say(f"warning: the metric of run {run_id} was not read: {exc.message}")
            return None
        value = metrics.get(self.request.metric)
        return float(value) if value is not None else None

    def _report(self, trial: Trial) -> None:
        from runner.progress import human_duration

        done = sum(t.status not in ("PENDING", RunStatus.RUNNING) for t in self.trials)
        # An adaptive search's trials are asked for one by one: out of the runs it will make, not those asked so far.
        total = max(self.search.budget(), len(self.trials)) if self.search.ADAPTIVE else len(self.trials)
        metric = f"  {self.request.metric}={trial.metric:g}" if trial.metric is not None else ""
        self.say(f"trial {trial.number} ({done}/{total}) {trial.shown_status} in "
                 f"{human_duration(trial.duration or 0)}: {report.shown(trial.parameters)}{metric}  (run {trial.run_id})")

    def say(self, line: str) -> None:
        self.notify(line)
        try:
            self.log.write(line + "\n")
            self.log.flush()
        except (ValueError, OSError):  # (closed; or a full disk: the line was said all the same)
            pass

    def _quiet(self, message: str) -> None:
        """What each trial's run would say: warnings once, the rest in the trials' own logs."""
        if message.startswith("warning:") and message not in self._warned:
            self._warned.add(message)
            self.say(message)


class _DeferredSignals:
    """While trials run, Ctrl-C, SIGTERM and SIGHUP are recorded by their handler and raised by
    the driver's loop (`raise_received`) where it holds no lock. Raised wherever they land, they
    can leave a lock held (one taken just before the exception, in the driver or inside
    concurrent.futures), and the trial threads, then the driver, wait on it forever. Only
    signals that raise in Python are deferred, as what they raise; the main thread only."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._raising: dict[int, Callable] = {}

    def __enter__(self) -> _DeferredSignals:
        import signal

        from runner.startup import INTERRUPT_SIGNALS

        if threading.current_thread() is threading.main_thread():
            for signum in INTERRUPT_SIGNALS:
                handler = signal.getsignal(signum)
                if callable(handler):
                    self._raising[signum] = handler
                    signal.signal(signum, self._record)
        return self

    def _record(self, signum: int, _frame) -> None:
        self.received.append(signum)

    def raise_received(self) -> None:
        if self.received:
            signum = self.received[0]
            self._raising[signum](signum, None)  # (KeyboardInterrupt, or what the CLI's handler raises)

    @contextlib.contextmanager
    def raising(self):
        """Signals raise where they land again, for a stretch that holds no lock and is
        abandoned as a whole when one does (a wait on the tracking server)."""
        import signal

        self.raise_received()
        for signum, handler in self._raising.items():
            signal.signal(signum, handler)
        try:
            yield
        finally:
            for signum in self._raising:
                signal.signal(signum, self._record)

    def __exit__(self, exc_type, *_exc) -> None:
        import signal

        from runner import startup

        # (One that came after the loop's last look is not raised: every trial had ended, and
        # the parent run was ended with the sweep's own outcome.) The mlproject command is
        # done once the parent is ended: a signal now could only cut its last words short.
        if self._raising and startup.started_as_command():
            startup.ignore()
            return
        for signum, handler in self._raising.items():
            signal.signal(signum, handler)


def _why(trials: list[Trial], interrupted: bool) -> str:
    if interrupted:
        return "the sweep was interrupted"
    failed = sum(not t.ended_well for t in trials)
    return f"{failed} of {len(trials)} trial(s) did not finish"


def _as_json(request: SweepRequest, cwd: Path) -> dict:
    data = asdict(request)
    data["cwd"] = str(cwd)
    data["parameters"] = {k: str(v) for k, v in (request.parameters or {}).items()}
    return data


def _next_ready(todo: list[Trial], queued: dict[int, Any], fresh: bool) -> Trial | None:
    """The first trial to take a thread now (taken out of `todo`): one to submit (when `fresh`),
    or a queued one whose job has left its queue; None while every one left waits."""
    for index, trial in enumerate(todo):
        handle = queued.get(trial.number)
        if (handle is None and fresh) or (handle is not None and (handle.done or handle.get_status() != RunStatus.SCHEDULED)):
            return todo.pop(index)
    return None
