"""A sweep's Ray trials carried several to a job: no more Ray jobs than `--max-parallel`.

Ray has no job arrays, and each job costs its head a supervisor (~85 MB) and its node a runner
start; a sweep of 1,000 trials one job each paid both 1,000 times (+352 ms a trial over bare job
submissions, 2026-12-07). With more trials than `--max-parallel`, the trials go out as
`--max-parallel` carrier jobs instead, trial N to carrier N mod their number, each carrying its
trials out one after another through the runner's own `carry` (runner.cli.carry): each trial is
still its own run, with its own ledger row, tracked run, status, exit code and log.

Ray's nodes share no file with this host, so what a Slurm carrier leaves in the shared home
travels otherwise:
- the trials' requests go in the carrier's environment, compressed (job.REQUESTS_VARIABLE);
- each trial's output is framed in the carrier's one log by lines of a mark chosen here
  (`MARK start N`, `MARK end N STATUS CODE REASON`): this host follows the log as Ray streams
  it, writing each trial's part into the trial's log and learning each trial's start and end
  (runner.backends.ray_tail), and reads the carrier's state once a poll (`job_states`);
- a one-trial cancel is a tag on the trial's tracked run, which its carrier reads once a second
  (job.cancel_carried).

A trial's job ID here is its carrier's submission ID and its place in the carrier,
`mlproject-carrier-<hex>_<N>`, as a Slurm array task's is `<array>_<task>`: cancelling that
prefix cancels the carrier, with every trial it has not ended.
"""
from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass

from runner import home
from runner.backends.cluster import JobState, abandon, queued_array, record_scheduled
from runner.backends.job import CARRIED_FILE, MARK_VARIABLE, REQUESTS_VARIABLE, JobRequest, compress
from runner.errors import UsageError
from runner.status import RunStatus

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from pathlib import Path

    from runner.backends import ray_tail
    from runner.backends.cluster import ClusterRun
    from runner.backends.ray import RayOptions
    from runner.request import PreparedRun

CARRIER = "carrier-"  # after ray.JOB_PREFIX: a carrier's submission ID; its directory in runs/


def carriers_for(runs: int, throttle: int | None) -> int:
    """How many carrier jobs `runs` trials go out as: `throttle` of them when there are more
    trials than that; 0 when each trial is its own job (few trials, or no limit at once)."""
    return throttle if throttle and runs > throttle else 0


def is_carried_job(job_id: str) -> bool:
    from runner.backends.ray import JOB_PREFIX

    return job_id.startswith(JOB_PREFIX + CARRIER) and "_" in job_id


def carrier_of(job_id: str) -> str:
    return job_id.split("_")[0]


def carrier_dir(carrier_id: str) -> Path:
    from runner.backends.ray import JOB_PREFIX

    return home.subdir("runs") / carrier_id.removeprefix(JOB_PREFIX)


# -- submission -------------------------------------------------------------------------
@dataclass
class _Carrier:
    job_id: str
    mark: str
    trials: list[int]  # indexes into the array's states, in the order it carries them


def submit_array(states: list[PreparedRun], throttle: int) -> list[ClusterRun]:
    """The trials, recorded SCHEDULED, each with the job ID it gets (a submitter that dies on
    the way leaves no trial a carrier might run unfollowed: see ray.chosen_job_id), then
    `throttle` carrier jobs; on any failure the carriers sent are stopped and every trial ends."""
    from runner.backends.ray import JOB_PREFIX, _MAX_VARIABLE, _withdraw, job_for, send

    options: RayOptions = states[0].backend_options
    count = carriers_for(len(states), throttle)
    carriers = [_Carrier(f"{JOB_PREFIX}{CARRIER}{os.urandom(8).hex()}", os.urandom(12).hex(),
                         list(range(number, len(states), count))) for number in range(count)]
    run_dirs = [home.subdir("runs") / state.ledger_id() for state in states]
    records, sent_ids = [], []
    try:
        job_ids: dict[int, str] = {}
        for carrier in carriers:
            directory = carrier_dir(carrier.job_id)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "ray.json").write_text(json.dumps({
                "address": options.address, "mark": carrier.mark, "runs": [run_dirs[i].name for i in carrier.trials]}))
            for place, index in enumerate(carrier.trials):
                job_ids[index] = f"{carrier.job_id}_{place}"
        for index, (state, run_dir) in enumerate(zip(states, run_dirs)):
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / CARRIED_FILE).touch()
            record = record_scheduled(state, run_dir, trial_log(run_dir.name), "ray")
            # (Named in the ledger once its carrier is queued; until then, while this process
            # lives, the row is one being submitted, and if it dies, the ID it would have had is
            # here: ray.chosen_job_id.)
            (run_dir / "ray.json").write_text(json.dumps({"address": options.address, "job_id": job_ids[index]}))
            records.append(record)
        for carrier in carriers:
            first = states[carrier.trials[0]]
            job, shipped = job_for(first, options, carrier.job_id, {"mlproject_carrier": str(len(carrier.trials))})
            requests = [JobRequest.of(states[i], "ray", records[i].id, ".", environment=shipped, own_ledger=True)
                        for i in carrier.trials]
            packed = compress("[" + ",".join(request.to_json(indent=None) for request in requests) + "]")
            if len(packed) > _MAX_VARIABLE:
                raise UsageError(f"the requests of {len(requests)} trials ({len(packed) // 1024} KiB compressed) are too "
                                 "large for the environment Ray hands a job (at most 128 KiB a variable)",
                                 hint="raise --max-parallel (more jobs, fewer trials each), or sweep fewer trials at once")
            job["runtime_env"]["env_vars"].update({REQUESTS_VARIABLE: packed, MARK_VARIABLE: carrier.mark})
            sent: list[bool] = []
            try:
                send(options, job, first.progress, sent)
            finally:
                if sent:
                    sent_ids.append(carrier.job_id)
    except BaseException as exc:
        for job_id in sent_ids:  # (queued, but none of its trials is followed: taken down with the rest)
            _withdraw(options.address, job_id)
        for state, run_dir in zip(states, run_dirs):
            abandon(state, exc, run_dir.name)
        raise
    return queued_array(states, records, [job_ids[index] for index in range(len(states))], "Ray", sent_ids)


# -- the trials' states and output, from their carrier's log ----------------------------------
_LOG_END_WAIT = 60.0  # seconds a carrier's log may be read on after its job ended (then: it is lost)


def job_states(job_ids: list[str]) -> dict[str, JobState | None]:
    """Each trial's state, from its carrier's: one request for the carrier's state a poll, and
    what the carrier's log has said so far (runner.backends.ray_tail), whatever the number of
    its trials followed."""
    from runner.backends import ray_tail
    from runner.backends.ray import _address_of, _rest
    from runner.backends.ray_rest import ENDED

    by_carrier: dict[str, list[str]] = {}
    for job_id in job_ids:
        by_carrier.setdefault(carrier_of(job_id), []).append(job_id)
    # (The state first, then the log: a log read to its end after the job's end has every trial's end line.)
    infos = {carrier_id: _rest(_address_of(carrier_id)).job(carrier_id) for carrier_id in by_carrier}
    followed = [carrier_id for carrier_id, info in infos.items() if info is not None]
    ended = frozenset(carrier_id for carrier_id in followed if (infos[carrier_id] or {}).get("status") in ENDED)
    logs = dict(zip(followed, ray_tail.views([_tail(carrier_id) for carrier_id in followed], ended)))
    states: dict[str, JobState | None] = {}
    for carrier_id, ids in by_carrier.items():
        info = infos[carrier_id]
        for job_id in ids:
            states[job_id] = None if info is None else _state(carrier_id, info, logs[carrier_id], _place(job_id))
    return states


def _state(carrier_id: str, info: dict, log: ray_tail.CarrierLog, place: int) -> JobState:
    from runner.backends.ray import job_state_of

    node = info.get("driver_node_id")
    end = log.ends.get(place)
    if end is not None:
        ended = (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)
        status = RunStatus(end.status) if end.status in ended else RunStatus.FAILED
        return JobState(end.status, status, end.exit_code, node, end.reason, for_run=True)
    carrier = job_state_of(info)
    if carrier.ended and not log.complete:  # (its log not read to the end yet: the trial's end may be there)
        # (From the job's end as Ray recorded it, not from when this process first saw it: a
        # short-lived command that settles the trial, one after another, must not wait anew each time.)
        if time.time() - (info.get("end_time") or 0) / 1000 < _LOG_END_WAIT:
            carrier = JobState(carrier.name, None)
    if not carrier.ended:  # the carrier goes on: the trial runs, or waits its turn
        return JobState("RUNNING" if place in log.started else "PENDING", None, node=node, for_run=True)
    # Ended without ending the trial: the carrier's end is the trial's (backends.settle), unless
    # its tracked run ended (its end line was lost with the carrier's node).
    return _tracked_end(carrier_id, place) or carrier


def _place(job_id: str) -> int:
    return int(job_id.rsplit("_", 1)[1])


def _tracked_end(carrier_id: str, place: int) -> JobState | None:
    """A trial whose carrier ended before this host read the trial's end line (its node lost with
    the log: the last read came before the end): its end as its tracked run has it, which the
    node's runner wrote before that line. None when tracking has no end of it either (it was
    under way, or never started: the carrier's end is then the trial's)."""
    from runner.errors import RunnerError
    from runner.tracking import tracker_for
    from runner.tracking.ledger import Ledger

    try:
        ledger_id = _carrier_record(carrier_id)["runs"][place]
        ledger = Ledger()
        try:
            rows = ledger.get(ledger_id)
        finally:
            ledger.close()
        if not rows or rows[0].finished or not rows[0].tracking_uri or not rows[0].tracking_run_id:
            return None  # (ended here: its tracked end is this host's, from the carrier's state)
        status = tracker_for(rows[0].tracking_uri, quick=True).recorded_run(rows[0].tracking_run_id).status
    except (OSError, ValueError, LookupError, RunnerError):
        return None
    if status not in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED):
        return None
    return JobState(status, RunStatus(status), 0 if status == RunStatus.FINISHED else None, for_run=True,
                    reason="its carrier's log was lost before its end was read there; its tracked run's end")


def pull_output(job_id: str, log_path: Path) -> None:
    """The trial's part of its carrier's log is written into its log here as it comes, by the
    process that follows the carrier (runner.backends.ray_tail): followed from here when no
    process does."""
    from runner.backends import ray_tail

    ray_tail.views([_tail(carrier_of(job_id))])


def trial_log(ledger_id: str) -> Path:
    """Where a carried trial's output is kept here: its run's log."""
    return home.subdir("runs") / ledger_id / "output.log"


def _tail(carrier_id: str) -> ray_tail.CarrierTail:
    from runner.backends import ray_tail

    record = _carrier_record(carrier_id)
    return ray_tail.tail(record["address"], carrier_id, record["mark"], [trial_log(run) for run in record["runs"]],
                         carrier_dir(carrier_id))


@functools.lru_cache(maxsize=256)
def _carrier_record(carrier_id: str) -> dict:
    """What the submitter wrote of a carrier (its cluster, its mark, its trials' ledger IDs in
    order): written once before the carrier is sent, read once per process."""
    return json.loads((carrier_dir(carrier_id) / "ray.json").read_text())
