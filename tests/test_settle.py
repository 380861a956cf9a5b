"""The settle decision table (runner.backends.settle): how the submit side records the end of a
cluster run whose runner never said how it went, for every answer a scheduler can give. A fake
cluster backend registered as the README shows answers; the ledger is a real one. Unit tier:
no mlflow, no cluster."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from runner import seams
from runner.backends import NEVER_STARTED, settle
from runner.backends.cluster import JobState
from runner.tracking.ledger import Ledger, RunRecord

pytestmark = pytest.mark.unit


class FakeCluster:
    """A cluster backend whose scheduler says whatever the test sets in `answer`."""

    QUICK_STATE = True
    JOB_ARRAYS = False
    ARRAY_NOUN = "job array"

    def __init__(self, shared_ledger: bool):
        self.shared_ledger = shared_ledger
        self.answer: JobState | None = None
        self.pulled: list[str] = []

    def check(self, config, request):
        return config

    def check_plan(self, state) -> None:
        pass

    def submit(self, state, on_submitted):
        raise AssertionError("not submitted in these tests")

    def submit_array(self, states, throttle=None):
        raise AssertionError("not submitted in these tests")

    def job_state(self, job_id: str) -> JobState | None:
        return self.answer

    def shares_ledger(self, run_id: str) -> bool:
        return self.shared_ledger

    def chosen_job_id(self, ledger_id: str) -> str | None:
        return None

    def cancel(self, job_id: str) -> None:
        pass

    def stopped_by_cluster(self):
        return None

    def pull_output(self, job_id: str, log_path: Path) -> None:
        self.pulled.append(job_id)


@pytest.fixture(params=[True, False], ids=["shared-ledger", "own-ledger"])
def fake(request, mlproject_home):
    backend = FakeCluster(shared_ledger=request.param)
    seams.register_cluster_backend("fake", lambda: backend)
    yield backend
    seams.unregister("fake")


def _row(ledger: Ledger, status: str = "SCHEDULED", job_id: str | None = "42", log: Path | None = None,
         runner_pid: int = 0) -> RunRecord:
    """A row as a submission writes it (its runner: this process, unless `runner_pid`)."""
    record = RunRecord(id=os.urandom(16).hex(), project_uri="p", project_dir="p", entry_point="main", command="c",
                       env_manager="local", log_path=str(log or "/nonexistent/job.log"), status=status, backend="fake",
                       job_id=job_id, start_time=time.time(), runner_pid=runner_pid)
    ledger.start(record)
    return ledger.get(record.id)[0]


@pytest.mark.parametrize("answer, status, exit_code, reason", [
    (JobState("COMPLETED", "FINISHED", 0, "n1"), "FINISHED", 0, None),
    (JobState("CANCELLED", "KILLED", None, "n1"), "KILLED", None, "fake job 42 ended CANCELLED"),
    (JobState("FAILED", "FAILED", 3, "n2"), "FAILED", 3, "fake job 42 ended FAILED"),
    (JobState("TIMEOUT", "FAILED", None, "n1", "TimeLimit"), "FAILED", None, "fake job 42 ended TIMEOUT: TimeLimit"),
    (None, "FAILED", None, "fake job 42 is gone and the cluster kept no record of its end"),
])
def test_an_ended_job_of_a_running_row_is_recorded_as_the_scheduler_says(fake, answer, status, exit_code, reason,
                                                                          tmp_path):
    ledger = Ledger()
    row = _row(ledger, "RUNNING", log=tmp_path / "job.log")
    fake.answer = answer
    settled = settle(ledger, row)
    assert (settled.status, settled.exit_code, settled.reason) == (status, exit_code, reason)
    assert fake.pulled == ["42"]  # the job's last output, where the cluster keeps it


def test_a_job_that_never_ran_its_runner_has_no_exit_code_and_says_so(fake, tmp_path):
    ledger = Ledger()
    (tmp_path / "job.log").write_text("")
    row = _row(ledger, "SCHEDULED", log=tmp_path / "job.log")
    fake.answer = JobState("NODE_FAIL", "FAILED", 1, "n1")
    settled = settle(ledger, row)
    assert settled.status == "FAILED"
    if fake.shared_ledger:  # the runner would have taken the row over: it never started
        assert settled.exit_code is None and settled.reason == f"fake job 42 ended NODE_FAIL; {NEVER_STARTED}"
    else:  # the runner keeps its own ledger: the scheduler's code stands
        assert settled.exit_code == 1 and settled.reason == "fake job 42 ended NODE_FAIL"


def test_a_job_whose_output_is_not_on_this_host_names_the_shared_home(fake):
    ledger = Ledger()
    row = _row(ledger, "SCHEDULED")  # its log path does not exist here
    fake.answer = JobState("FAILED", "FAILED", 1, None)
    settled = settle(ledger, row)
    if fake.shared_ledger:
        assert "the nodes must share MLPROJECT_HOME" in settled.reason
    else:
        assert "MLPROJECT_HOME" not in settled.reason


@pytest.mark.parametrize("name", ["PENDING", "RUNNING", "COMPLETING"])
def test_a_job_still_going_leaves_the_row_as_it_is_but_a_started_one_runs(fake, name):
    ledger = Ledger()
    row = _row(ledger, "SCHEDULED")
    fake.answer = JobState(name, None)
    settled = settle(ledger, row)
    assert settled.status == ("RUNNING" if name == "RUNNING" else "SCHEDULED")
    assert fake.pulled == []


def test_a_row_the_runner_inside_ended_first_keeps_its_end(fake, tmp_path):
    ledger = Ledger()
    row = _row(ledger, "RUNNING", log=tmp_path / "job.log")
    ledger.finish(row.id, "FINISHED", 0, None)  # the runner inside recorded it meanwhile
    fake.answer = JobState("CANCELLED", "KILLED")
    settled = settle(ledger, row)
    assert (settled.status, settled.exit_code) == ("FINISHED", 0)


def test_a_submission_cut_short_before_its_job_was_queued(fake):
    ledger = Ledger()
    alive = _row(ledger, "SCHEDULED", job_id=None)  # its submitter (this process) is still at it
    assert settle(ledger, alive).status == "SCHEDULED"
    dead = _row(ledger, "SCHEDULED", job_id=None, runner_pid=2**22 + 7)  # a PID no process has
    settled = settle(ledger, dead)
    assert (settled.status, settled.reason) == (
        "FAILED", f"the submission was interrupted before the job was queued; {NEVER_STARTED}")


def test_a_finished_or_local_row_is_never_touched(fake):
    ledger = Ledger()
    row = _row(ledger, "RUNNING")
    ledger.finish(row.id, "FAILED", 2, "its own end")
    fake.answer = JobState("COMPLETED", "FINISHED", 0)
    ended = ledger.get(row.id)[0]
    assert settle(ledger, ended) is ended
