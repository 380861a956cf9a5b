"""How the Slurm backend reads its scheduler's words: `scontrol show job -o` lines and the job
completion log (jobcomp/filetxt), over outputs captured from the test cluster (Slurm 22.05; its
path and host names replaced). Unit tier: no cluster, no mlflow."""
from __future__ import annotations

from pathlib import Path

import pytest

from runner.backends.cluster import JobState
from runner.backends.slurm import _fields, _never_started, _state

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data" / "slurm"


def _lines(name: str) -> dict[str, str]:
    """Each line by its JobId, and an array's own record also as ARRAY-<id>."""
    found: dict[str, str] = {}
    for line in (DATA / name).read_text().splitlines():
        fields = _fields(line)
        key = fields["JobId"]
        if fields.get("ArrayTaskId", "").count("-"):  # the array's own record: its tasks not split out
            key = f"ARRAY-{key}"
        found.setdefault(key, line)
    return found


SCONTROL = _lines("scontrol-ended.txt")
JOBCOMP = _lines("jobcomp.log")


@pytest.mark.parametrize("source", [SCONTROL, JOBCOMP], ids=["scontrol", "jobcomp"])
@pytest.mark.parametrize("job, expected", [
    ("1", JobState("COMPLETED", "FINISHED", 0, "n1")),  # echo ok
    ("2", JobState("FAILED", "FAILED", 3, "n1")),  # exit 3
    ("3", JobState("CANCELLED", "KILLED", 128 + 15, "n2")),  # scancel while it ran
    ("4", JobState("FAILED", "FAILED", 128 + 9, "n2")),  # the batch script killed itself with SIGKILL
    ("7", JobState("TIMEOUT", "FAILED", 128 + 15, "n1")),  # past its 1-minute limit
])
def test_an_ended_job_reads_as_its_run_ends(source, job, expected):
    state = _state(_fields(source[job]))
    if source is JOBCOMP:
        # The completion log gives no reason, and 0:0 for a job the scheduler stopped (a cancel,
        # its time limit): no exit code then, rather than a success's 0.
        stopped = expected.name in ("CANCELLED", "TIMEOUT")
        assert state == JobState(expected.name, expected.status, None if stopped else expected.exit_code, expected.node)
    else:
        assert state == JobState(expected.name, expected.status, expected.exit_code, expected.node, state.reason)
    assert state.ended


def test_scontrol_gives_the_schedulers_reason():
    assert _state(_fields(SCONTROL["2"])).reason == "NonZeroExitCode"
    assert _state(_fields(SCONTROL["4"])).reason == "JobLaunchFailure"
    assert _state(_fields(SCONTROL["7"])).reason == "TimeLimit"
    assert _state(_fields(SCONTROL["1"])).reason is None  # (Reason=None)


def test_a_running_job_has_not_ended():
    state = _state(_fields((DATA / "scontrol-running.txt").read_text()))
    assert (state.name, state.status, state.exit_code, state.ended) == ("RUNNING", None, None, False)


@pytest.mark.parametrize("source", [SCONTROL, JOBCOMP], ids=["scontrol", "jobcomp"])
def test_an_array_cancelled_while_tasks_waited_never_started_them(source):
    """`sbatch --array=0-5%1`, cancelled while task 0 ran: tasks 1-5 were never split out of the
    array's own record, which ran on no node; task 0 (JobId 6) did run."""
    array = source["ARRAY-5"] if source is SCONTROL else source["5"]
    assert _state(_fields(array)).status == "KILLED" and _never_started(_fields(array))
    assert not _never_started(_fields(source["6"]))


def test_a_task_asked_for_by_its_own_id_is_found_in_the_arrays_record():
    """`scontrol show job -o 5_3` answers with the array's record, as the task lives there."""
    fields = _fields(SCONTROL["5"] if "ArrayTaskId=3 " in SCONTROL["5"] else next(
        line for line in (DATA / "scontrol-ended.txt").read_text().splitlines() if "ArrayTaskId=3 " in line))
    assert fields["ArrayJobId"] == "5" and _never_started(fields)


@pytest.mark.parametrize("runs, throttle, config, expected", [
    (1000, 8, None, 31),  # each of the 8 slots gets ~4 tasks: 33 tasks of up to 31 trials
    (200, 8, None, 6),
    (40, 8, None, 1),  # few: each trial its own task, as Slurm accounts them
    (100000, 8, None, 50),  # never more than 50 a task
    (1000, None, None, 1),  # no throttle: every task may run at once
    (1000, 8, 3, 3),  # the config's word
])
def test_an_array_task_carries_several_trials_only_when_they_are_many(runs, throttle, config, expected):
    from runner.backends.slurm import SlurmOptions, trials_per_task

    assert trials_per_task(SlurmOptions(sbatch_args=(), trials_per_task=config), runs, throttle) == expected


def test_trials_are_not_carried_where_the_nodes_keep_their_own_ledgers():
    from runner.backends.slurm import SlurmOptions, trials_per_task

    assert trials_per_task(SlurmOptions(sbatch_args=(), shared_home=False), 1000, 8) == 1


@pytest.mark.parametrize("config, said", [
    ({"trials_per_task": 0}, "trials_per_task must be a whole number of at least 1, not 0"),
    ({"trials_per_task": "5"}, "trials_per_task must be a whole number of at least 1, not \"5\""),
    ({"trials_per_task": 5, "shared_home": False, "staging_dir": "/tmp"},
     "an array task carries several trials only where the nodes share MLPROJECT_HOME"),
])
def test_a_bad_trials_per_task_is_refused(config, said, tmp_path):
    from runner.backends.slurm import check
    from runner.errors import UsageError
    from runner.request import RunRequest

    with pytest.raises(UsageError) as raised:
        check(config, RunRequest(str(tmp_path)))
    assert raised.value.message == f"slurm backend: {said}"
    assert raised.value.hint
