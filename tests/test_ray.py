"""The ray backend against a real two-node Ray cluster that the tests start (tests/raycluster.py).

The cluster's nodes have their own MLPROJECT_HOME: they share no ledger with the submitter,
as the nodes of a real cluster do not. Tracking is this test's sqlite store, which both sides
reach by its path."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from clusterruns import ledger_row, started, submitted, wait_for
from conftest import assert_clean_error, pid_alive
from procs import processes_with

PROJECT = """
    name: on-ray
    entry_points:
      main:
        parameters:
          alpha: {type: float, default: 0.5}
          secs: {type: float, default: 0}
          code: {type: int, default: 0}
        command: "echo alpha={alpha}; (sleep 300 &); sleep {secs}; exit {code}"
"""


@pytest.fixture(scope="module")
def ray_cluster():
    from raycluster import RayCluster

    yield from started(RayCluster())


@pytest.fixture
def ray(ray_cluster, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    return ray_cluster


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", *args], capture_output=True, text=True, timeout=timeout)


def _start_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runner", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _submitted(stderr: str) -> tuple[str, str]:
    return submitted(stderr, "Ray")


def _row(run_id: str) -> dict:
    return ledger_row(_cli, run_id)


_wait_for = wait_for


def _run_struck(project: Path, fault: str) -> subprocess.CompletedProcess:
    """`mlproject run -b ray` of `project`, struck by the runner itself at a named phase
    (`MLPROJECT_FAULT_AT`: PHASE:ACTION)."""
    return subprocess.run([sys.executable, "-m", "runner", "run", str(project), "-b", "ray", "--env-manager", "local"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "MLPROJECT_FAULT_AT": fault})


def _tracked(cwd: Path, run_id: str):
    return MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}").get_run(run_id)


def _left_behind(run_id: str) -> list[int]:
    """Processes of the run (the node's runner gives the command MLPROJECT_RUN_ID) still alive."""
    return processes_with(f"MLPROJECT_RUN_ID={run_id}".encode())


def test_run_streams_output_and_records_the_same_run(ray, make_project, _work_in_tmp):
    project = make_project(PROJECT)
    result = _cli("run", str(project), "-b", "ray", "-P", "alpha=0.7", "--env-manager", "local")
    assert result.returncode == 0, result.stderr
    assert "alpha=0.7" in result.stdout  # streamed from the job's output
    assert "Runtime env is setting up" not in result.stdout  # Ray's own lines are not the run's
    run_id, job_id = _submitted(result.stderr)
    assert f"=== Run (ID '{run_id}') succeeded ===" in result.stderr
    row = _row(run_id)
    assert (row["status"], row["exit_code"], row["backend"], row["job_id"]) == ("FINISHED", 0, "ray", job_id)
    run = _tracked(_work_in_tmp, run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"alpha": "0.7", "secs": "0", "code": "0"}
    assert run.data.tags["mlflow.project.backend"] == "ray" and run.data.tags["mlproject.ray.job_id"] == job_id
    assert run.data.tags["mlflow.source.name"] == str(project)
    # The node kept its own record of the run: the nodes share no ledger with this host.
    assert (ray.home_of(run_id) / "ledger.db").is_file()
    logs = _cli("runs", "logs", run_id)
    assert "alpha=0.7" in logs.stdout
    assert _left_behind(run_id) == []


def test_a_run_of_an_unchanged_project_submits_without_importing_rays_sdk(ray, make_project, _work_in_tmp):
    """The first run uploads the project through Ray's SDK, in a worker process of its own; the
    next run of the same project submits, follows and ends through the dashboard's REST API,
    with no upload. The runner itself never imports Ray."""
    project = make_project(PROJECT)

    def run(alpha: str) -> tuple[subprocess.CompletedProcess, set[str]]:
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", "run", str(project), "-b", "ray",
                                 "-P", f"alpha={alpha}", "--env-manager", "local"],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                    if line.startswith("import time:")}
        return result, imported

    def ray_modules(imported: set[str]) -> list[str]:
        return sorted(name for name in imported if name == "ray" or name.startswith("ray."))

    kept = Path(os.environ["MLPROJECT_HOME"]) / "ray-packages.json"
    first, imported = run("0.1")
    assert not ray_modules(imported), ray_modules(imported)[:20]
    uploaded = json.loads(kept.read_text())  # (what the SDK's upload became: the project, the runner)
    assert uploaded and all(entry["working_dir"].startswith("gcs://") for entry in uploaded.values()), uploaded
    second, imported = run("0.2")
    assert not ray_modules(imported), ray_modules(imported)[:20]
    assert json.loads(kept.read_text()) == uploaded  # (nothing uploaded again)
    assert "alpha=0.2" in second.stdout
    run_id, job_id = _submitted(second.stderr)
    assert (_row(run_id)["status"], _row(run_id)["job_id"]) == ("FINISHED", job_id)
    assert _tracked(_work_in_tmp, run_id).info.status == "FINISHED"
    # A package the cluster no longer holds is uploaded again (Ray removes unused ones):
    # an entry that names one it never held is not trusted.
    entries = json.loads(kept.read_text())
    for entry in entries.values():
        entry["working_dir"] = "gcs://_ray_pkg_0000000000000000.zip"
    kept.write_text(json.dumps(entries))
    third, imported = run("0.3")
    assert "alpha=0.3" in third.stdout and not ray_modules(imported)
    assert json.loads(kept.read_text()) == uploaded  # (uploaded again: the cluster's URI of the same content)


def test_failed_command_exits_with_its_code(ray, make_project, _work_in_tmp):
    project = make_project(PROJECT)
    result = _cli("run", str(project), "-b", "ray", "-P", "code=3", "--env-manager", "local")
    assert result.returncode == 3, result.stderr
    run_id, _ = _submitted(result.stderr)
    row = _row(run_id)
    assert (row["status"], row["exit_code"]) == ("FAILED", 3) and "exit code 3" in row["reason"]
    assert _tracked(_work_in_tmp, run_id).info.status == "FAILED"


def test_ctrl_c_stops_the_job_and_leaves_no_process_on_the_node(ray, make_project, _work_in_tmp):
    project = make_project(PROJECT)
    proc = _start_cli("run", str(project), "-b", "ray", "-P", "secs=300", "--env-manager", "local")
    lines = []
    _wait_for(lambda: lines.append(proc.stdout.readline()) or "alpha=" in lines[-1], 120, "the job's output")
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    run_id, _ = _submitted(stderr)
    assert _row(run_id)["status"] == "KILLED"
    assert _tracked(_work_in_tmp, run_id).info.status == "KILLED"
    # (sleep 300 &) forked away from the command: stopped with the run's process group
    _wait_for(lambda: _left_behind(run_id) == [], 15, "the run's processes to be gone")


def test_detached_run_is_cancelled_from_another_process(ray, make_project, _work_in_tmp):
    project = make_project(PROJECT)
    result = _cli("run", str(project), "-b", "ray", "-P", "secs=300", "--env-manager", "local", "--detach")
    assert result.returncode == 0, result.stderr
    run_id, job_id = result.stdout.split()[0], result.stdout.split()[3]
    assert job_id.startswith("mlproject-")
    _wait_for(lambda: _row(run_id)["status"] == "RUNNING", 120, "the job to start")  # (settled by runs show)
    listed = _cli("runs", "list")
    assert f"ray:{job_id}" in listed.stdout
    cancelled = _cli("runs", "cancel", run_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert _row(run_id)["status"] == "KILLED"
    assert _tracked(_work_in_tmp, run_id).info.status == "KILLED"
    _wait_for(lambda: _left_behind(run_id) == [], 15, "the run's processes to be gone")


def test_two_runs_at_once_on_the_two_nodes(ray, make_project, _work_in_tmp):
    from ray.job_submission import JobSubmissionClient

    project = make_project(PROJECT)
    config = json.dumps({"entrypoint_num_cpus": 2})  # each node has 2: one such job per node
    ids = []
    for alpha in ("0.1", "0.2"):
        result = _cli("run", str(project), "-b", "ray", "-c", config, "-P", f"alpha={alpha}", "-P", "secs=4",
                      "--env-manager", "local", "--detach")
        assert result.returncode == 0, result.stderr
        ids.append(result.stdout.split())
    client = JobSubmissionClient(ray.address)

    def nodes_of_both() -> list | None:
        nodes = [client.get_job_info(job).driver_node_id for _, _, _, job in ids]
        return nodes if all(nodes) else None

    nodes = _wait_for(nodes_of_both, 120, "both jobs to start")
    assert len(set(nodes)) == 2  # on the two nodes, at once
    for run_id, *_ in ids:
        waited = _cli("runs", "logs", run_id, "-f")
        assert waited.returncode == 0 and "alpha=" in waited.stdout, waited.stderr
        assert _row(run_id)["status"] == "FINISHED"


def test_an_environment_is_built_once_for_the_cluster_and_unpacked_on_each_node(ray, make_project, _work_in_tmp,
                                                                                  mlproject_home):
    """The submit host builds the project's environment once and packs it; the package goes to
    the cluster once, and each node that runs the project unpacks it into its own store instead
    of building it (the nodes share no files: each has its own MLPROJECT_HOME)."""
    from raycluster import HEAD_RESOURCE, NODE_RESOURCE

    project = make_project("""
        name: shipped
        python_env: python_env.yaml
        entry_points:
          main:
            command: "python -c 'import six, sys; print(\\"six\\", six.__version__, sys.prefix)'"
    """, {"python_env.yaml": 'python: "3.11"\ndependencies:\n  - six==1.16.0\n'})

    def builds(home: Path) -> list[list[str]]:
        log = home / "envs" / ".builds.log"
        return [line.split()[1:3] for line in log.read_text().splitlines()] if log.exists() else []

    # (Placed before the tests that lose the second node: run after them, in the module's cluster,
    # the first job on the returned node ended SUCCEEDED with no output reaching this host, twice
    # on 2026-12-06; this test reads each node's output. Why the returned node's log is not
    # served is not known yet.)
    runs = []
    for node, resource in (("second", NODE_RESOURCE), ("head", HEAD_RESOURCE), ("head", HEAD_RESOURCE)):
        config = json.dumps({"entrypoint_resources": {resource: 1}})
        result = _cli("run", str(project), "-b", "ray", "--env-manager", "uv", "-c", config)
        assert result.returncode == 0, result.stderr
        run_id, _ = _submitted(result.stderr)
        assert ray.home_of(run_id) == ray.homes[node]
        runs.append((node, run_id, result))
    # Built once, here; packed once.
    [(event, name)] = builds(mlproject_home)
    assert event == "built" and name.startswith("uv-")
    assert "building environment" in runs[0][2].stderr and "packing " in runs[0][2].stderr
    assert not any("building environment" in result.stderr or "packing " in result.stderr for _, _, result in runs[1:])
    # Each node unpacked it once, into its own store, and built nothing; the command ran in it.
    # (The cluster is the module's: other tests' environments may be in the nodes' stores too.)
    for node in ("second", "head"):
        assert [event for event, built in builds(ray.homes[node]) if built == name] == ["unpacked"], node
        assert "built" not in [event for event, _ in builds(ray.homes[node])], node
    for _, run_id, result in runs:
        prefix = ray.home / "envs" / name  # (as the node sees its own store)
        assert f"six 1.16.0 {prefix}\n" in result.stdout, (run_id, result.stderr, _cli("runs", "logs", run_id).stdout)
        tags = _tracked(_work_in_tmp, run_id).data.tags
        assert _row(run_id)["status"] == "FINISHED"
        # The unpack is where the first run on a node went; the next run there finds it unpacked.
        assert ("mlproject.timing.unpack" in tags) == (run_id != runs[2][1]), tags

def test_sweep_on_ray(ray, make_project, _work_in_tmp):
    project = make_project(PROJECT)
    result = _cli("sweep", str(project), "-P", "alpha=0.1,0.2,0.3", "-b", "ray", "--env-manager", "local",
                  "--max-parallel", "3")
    assert result.returncode == 0, result.stderr
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    runs = client.search_runs(["0"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert sorted(r.data.params["alpha"] for r in children) == ["0.1", "0.2", "0.3"]
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.project.backend"] for r in children} == {"ray"}


def test_a_sweep_asks_ray_for_each_trials_gpu(ray, make_project, _work_in_tmp):
    """`--gpus-per-trial 1` on Ray: each trial's job asks for one GPU (entrypoint_num_gpus); the
    test cluster's two nodes declare one each, so two trials run at once, one per node."""
    project = make_project("""
        name: gpus
        entry_points:
          main:
            parameters:
              alpha: {type: float, default: 0}
            command: "echo devices=[$CUDA_VISIBLE_DEVICES]; sleep 1"
    """)
    result = _cli("sweep", str(project), "-P", "alpha=0.1,0.2", "-b", "ray", "--env-manager", "local",
                  "--max-parallel", "2", "--gpus-per-trial", "1")
    assert result.returncode == 0, result.stderr
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    children = [r for r in client.search_runs(["0"]) if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    for child in children:
        logs = _cli("runs", "logs", child.info.run_id)
        assert "devices=[0]" in logs.stdout, logs.stdout


def _trials() -> list[dict]:
    return [row for row in json.loads(_cli("runs", "list", "--json").stdout) if row["backend"] == "ray"]


def _ray_jobs(ray, job_ids) -> dict[str, str | None]:
    """Each job's status, as the cluster's dashboard says (None: it does not know the job)."""
    from runner.backends.ray_rest import RayRest

    rest = RayRest(ray.address)
    return {job_id: (rest.job(job_id) or {}).get("status") for job_id in job_ids}


def test_a_sweep_of_more_trials_than_max_parallel_goes_out_as_that_many_carrier_jobs(ray, make_project, _work_in_tmp):
    """Fourteen trials at --max-parallel 3: three Ray jobs, each carrying its trials one after
    another; each trial still its own run, with its own status, exit code, log and tracked run."""
    project = make_project(PROJECT)
    result = _cli("sweep", str(project), "-P", "alpha=0.1,0.2,0.3,0.4,0.5,0.6,0.7", "-P", "code=0,3", "-b", "ray",
                  "--env-manager", "local", "--max-parallel", "3")
    assert result.returncode == 1, result.stderr  # (the trials of code=3 failed)
    assert "14 trials queued as ray carrier jobs mlproject-carrier-" in result.stderr, result.stderr
    assert "(each carrying up to 5 trials), at most 3 at once" in result.stderr, result.stderr
    trials = _trials()
    assert len(trials) == 14
    carriers = {row["job_id"].split("_")[0] for row in trials}
    assert len(carriers) == 3 and all(job.startswith("mlproject-carrier-") for job in carriers)
    # (A carrier ends FAILED when one of its trials did, as an array task does: exit 1.)
    failing = {row["job_id"].split("_")[0] for row in trials if row["status"] != "FINISHED"}
    assert _ray_jobs(ray, carriers) == {job: "FAILED" if job in failing else "SUCCEEDED" for job in carriers}
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    for row in trials:
        code = int(row["parameters"]["code"])
        assert (row["status"], row["exit_code"]) == (("FINISHED", 0) if code == 0 else ("FAILED", 3)), row
        said = [line for line in _cli("runs", "logs", row["id"]).stdout.splitlines() if line.startswith("alpha=")]
        assert said == [f"alpha={row['parameters']['alpha']}"], (row["id"], said)  # its own output, and only its own
        assert client.get_run(row["tracking_run_id"]).info.status == row["status"]


def test_one_carried_ray_trial_is_cancelled_alone_waiting_or_running(ray, make_project, _work_in_tmp):
    """Six trials of 12 s carried by two jobs: a trial waiting its turn is cancelled (`runs cancel`)
    and never starts; a running one is cancelled and its command stops; the carriers go on with
    the other four, which finish."""
    project = make_project(PROJECT)
    sweep = _start_cli("sweep", str(project), "-P", "alpha=0.1,0.2,0.3,0.4,0.5,0.6", "-P", "secs=12", "-b", "ray",
                       "--env-manager", "local", "--max-parallel", "2")
    try:
        running = _wait_for(lambda: [r for r in _trials() if r["status"] == "RUNNING"], 120, "a trial to run")[0]
        waiting = [r for r in _trials() if r["status"] == "SCHEDULED" and r["job_id"].endswith("_2")][0]  # (last of its carrier)
        for row in (running, waiting):  # (the running one first: it has the least time left)
            cancelled = _cli("runs", "cancel", row["id"])
            assert cancelled.returncode == 0 and "KILLED" in cancelled.stdout + cancelled.stderr, cancelled.stderr
        _, stderr = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 1, stderr
    rows = {row["id"]: row for row in _trials()}
    assert rows[waiting["id"]]["status"] == "KILLED" and "cancelled while waiting" in rows[waiting["id"]]["reason"]
    assert not [line for line in _cli("runs", "logs", waiting["id"]).stdout.splitlines() if line.startswith("alpha=")]
    assert rows[running["id"]]["status"] == "KILLED"
    assert _left_behind(running["id"]) == []
    assert sorted(row["status"] for row in rows.values()) == ["FINISHED"] * 4 + ["KILLED"] * 2
    client = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}")
    assert {client.get_run(r["tracking_run_id"]).info.status for r in rows.values() if r["status"] == "KILLED"} == {"KILLED"}


def test_ctrl_c_on_a_sweep_of_carried_ray_trials_stops_their_jobs(ray, make_project, _work_in_tmp):
    """Ctrl-C on a sweep whose trials are carried: their carriers are stopped whole, every trial
    ends (none left SCHEDULED or RUNNING), and nothing of them keeps running on the nodes."""
    project = make_project(PROJECT)
    sweep = _start_cli("sweep", str(project), "-P", "alpha=0.1,0.2,0.3,0.4,0.5,0.6", "-P", "secs=60", "-b", "ray",
                       "--env-manager", "local", "--max-parallel", "2")
    try:
        seen: list = []
        try:
            _wait_for(lambda: len([r for r in seen.append(_trials()) or seen[-1] if r["status"] == "RUNNING"]) == 2, 120,
                      "two trials to run")
        except AssertionError:
            raise AssertionError(f"{[(r['status'], r['reason']) for r in seen[-1]]}\n{sweep.stderr.read1()}") from None
        os.killpg(sweep.pid, signal.SIGINT)
        _, stderr = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 130, stderr
    trials = _trials()
    assert len(trials) == 6 and {row["status"] for row in trials} == {"KILLED"}, [(r["status"], r["reason"]) for r in trials]
    carriers = {row["job_id"].split("_")[0] for row in trials}
    _wait_for(lambda: set(_ray_jobs(ray, carriers).values()) == {"STOPPED"}, 60,
              "the carriers to stop")
    _wait_for(lambda: all(_left_behind(row["id"]) == [] for row in trials), 60, "the trials' processes to be gone")


CHATTY = """
    name: chatty
    entry_points:
      main:
        parameters:
          x: {type: int}
        command: "yes {x}-0123456789abcdefghijklmnopqrstuvwxyz | head -n 40000; sleep 4"
"""


def test_carried_trials_output_reaches_their_logs_whole_across_a_killed_driver(ray, make_project, _work_in_tmp):
    """Six trials printing 40,000 lines (1.5 MB) each, carried by two jobs; the driver SIGKILLed
    once one has finished, and the sweep resumed: each trial FINISHED once, and its log holds
    its own lines, every one of them once, though the resumed driver took the carriers' logs over
    mid-way (runner.backends.ray_tail: the stream from the start, what was written skipped)."""
    project = make_project(CHATTY)
    sweep = _start_cli("sweep", str(project), "-P", "x=range(0,6)", "-b", "ray", "--env-manager", "local",
                       "--max-parallel", "2")
    try:
        _wait_for(lambda: [r for r in _trials() if r["status"] == "FINISHED"], 180, "a trial to finish")
        os.killpg(sweep.pid, signal.SIGKILL)
        _, stderr = sweep.communicate(timeout=30)
    finally:
        sweep.kill()
    sweep_id = next(line.split()[1].rstrip(":") for line in stderr.splitlines() if "trial(s) to run" in line)
    assert [r for r in _trials() if r["status"] in ("SCHEDULED", "RUNNING")], "the sweep ended before its kill"
    resumed = _cli("sweep", "--resume", sweep_id, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    trials = _trials()
    assert sorted(row["status"] for row in trials) == ["FINISHED"] * 6, [(r["status"], r["reason"]) for r in trials]
    for row in trials:
        x = row["parameters"]["x"]
        lines = Path(row["log_path"]).read_text().splitlines()
        assert lines[0].startswith(f"=== Running command 'yes {x}-"), (row["id"], lines[:2])  # (the runner's, as mlflow's)
        assert lines[1:] == [f"{x}-0123456789abcdefghijklmnopqrstuvwxyz"] * 40000, (row["id"], len(lines), lines[:2],
                                                                                   lines[-2:])


ARRAY_STRUCK = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # (a shell's background job starts with SIGINT ignored)
from runner import api
from runner.request import RunRequest
requests = [RunRequest(uri=sys.argv[1], parameters={"alpha": alpha, "secs": 60}, backend="ray", env_manager="local",
                       synchronous=False) for alpha in (0.1, 0.2, 0.3, 0.4, 0.5)]
try:
    api.submit_array(requests, throttle=2)
except KeyboardInterrupt:
    sys.exit(130)
sys.exit("the caller was handed the runs")
"""


def test_ctrl_c_after_the_carriers_are_queued_before_the_caller_holds_the_trials_stops_them(ray, make_project,
                                                                                        _work_in_tmp):
    """Ctrl-C once the carriers are sent and two of the five trials are named, before the caller
    holds any (`cluster.array_queued`): the carriers are stopped, every trial ends KILLED (none
    left SCHEDULED or RUNNING), and nothing of them keeps running on the nodes."""
    project = make_project(PROJECT)
    script = _work_in_tmp / "array_struck.py"
    script.write_text(ARRAY_STRUCK)
    result = subprocess.run([sys.executable, str(script), str(project)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "MLPROJECT_FAULT_AT": "cluster.array_queued:SIGINT"})
    assert result.returncode == 130, result.stderr
    trials = _trials()
    assert len(trials) == 5 and {row["status"] for row in trials} == {"KILLED"}, [(r["status"], r["reason"]) for r in trials]
    carriers = {row["job_id"].split("_")[0] for row in trials if row["job_id"]}
    assert carriers, trials
    _wait_for(lambda: set(_ray_jobs(ray, carriers).values()) == {"STOPPED"}, 60, "the carriers to stop")
    _wait_for(lambda: all(_left_behind(row["id"]) == [] for row in trials), 60, "the trials' processes to be gone")


@pytest.mark.stress  # (~5 min, most of it Ray declaring the node dead and the node's return: `make stress`)
def test_a_lost_node_fails_its_carriers_unended_trials_and_retries_run_each_again(ray, make_project, _work_in_tmp,
                                                                                  tmp_path):
    """A carrier on the second node, which stops answering while it carries trial 2 of 3 (trial 1
    has finished, trial 3 waits): Ray fails the carrier, and its two unended trials are recorded
    FAILED for the lost node, not for their commands; `--retries 1` runs each again as a job of
    its own once the node is back. Every trial FINISHED once; trial 1 never ran again, though the
    carrier's log was lost before this host read trial 1's end there (its tracked run's end is
    taken: ray_carriers._tracked_end)."""
    from raycluster import NODE_RESOURCE

    project = make_project("""
        name: lost
        entry_points:
          main:
            parameters:
              n: {type: int}
              dir: {type: str}
            command: "echo n={n} >> {dir}/ran; if [ {n} = 2 ] && mkdir {dir}/first 2>/dev/null; then sleep 300; fi"
    """)
    config = json.dumps({"entrypoint_resources": {NODE_RESOURCE: 1}})  # on the second node
    sweep = _start_cli("sweep", str(project), "-P", "n=1,2,3", "-P", f"dir={tmp_path}", "-b", "ray", "-c", config,
                       "--env-manager", "local", "--max-parallel", "1", "--retries", "1")
    raylet = None
    try:
        _wait_for(lambda: (tmp_path / "first").exists(), 120, "trial 2 to start")
        raylet = ray.second_node_raylet()
        os.kill(raylet, signal.SIGSTOP)
        _wait_for(lambda: len([r for r in _trials() if r["status"] == "FAILED"]) >= 2, 180,
                  "the lost carrier's two trials to fail")
        os.kill(raylet, signal.SIGCONT)  # the node returns; its raylet learns it was declared dead and exits
        lost, raylet = raylet, None
        _wait_for(lambda: not pid_alive(lost), 120, "the lost node's raylet to exit")
        ray.start_second_node()
        _, stderr = sweep.communicate(timeout=300)
    finally:
        if raylet is not None:
            os.kill(raylet, signal.SIGCONT)
        sweep.kill()
    assert sweep.returncode == 0, stderr
    trials = _trials()
    failed = [r for r in trials if r["status"] == "FAILED"]
    assert len(failed) == 2 and all(r["exit_code"] is None and "ended FAILED" in r["reason"] for r in failed), failed
    finished = sorted(int(r["parameters"]["n"]) for r in trials if r["status"] == "FINISHED")
    assert finished == [1, 2, 3], [(r["parameters"], r["status"], r["reason"]) for r in trials]
    assert (tmp_path / "ran").read_text().split().count("n=1") == 1  # (ended before the node was lost: not run again)


def test_submitter_killed_while_its_job_runs_is_reconciled(ray, make_project, _work_in_tmp):
    project = make_project(PROJECT)
    proc = _start_cli("run", str(project), "-b", "ray", "-P", "secs=6", "--env-manager", "local")
    lines = []
    _wait_for(lambda: lines.append(proc.stderr.readline()) or lines[-1].startswith("=== Submitted run"), 120,
              "the submission")
    run_id, _ = _submitted(lines[-1])
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # the job goes on without its submitter; the next invocation records how it ended
    _wait_for(lambda: _row(run_id)["status"] == "FINISHED", 120, "the job's end to be recorded")
    assert _tracked(_work_in_tmp, run_id).info.status == "FINISHED"


def test_node_lost_during_a_job_ends_the_run_and_leaves_nothing_running_when_it_returns(ray, make_project,
                                                                                         _work_in_tmp):
    """The second node stops answering (its raylet stopped, as a node cut off from the network):
    Ray gives up on it and fails the job while the command still runs there. When the node
    comes back, its raylet learns it was declared dead and exits, taking the job's supervisor and
    the runner with it; nothing of the run may keep running there."""
    from raycluster import NODE_RESOURCE

    project = make_project(PROJECT)
    config = json.dumps({"entrypoint_resources": {NODE_RESOURCE: 1}})  # on the second node
    proc = _start_cli("run", str(project), "-b", "ray", "-c", config, "-P", "secs=300", "--env-manager", "local")
    lines = []
    _wait_for(lambda: lines.append(proc.stdout.readline()) or "alpha=" in lines[-1], 120, "the job's output")
    raylet = ray.second_node_raylet()
    os.kill(raylet, signal.SIGSTOP)
    try:
        _, stderr = proc.communicate(timeout=180)  # Ray gives up on the node after its health checks fail
        assert proc.returncode == 1, stderr
        run_id, job_id = _submitted(stderr)
        assert f"=== Run (ID '{run_id}') failed (ray job {job_id} ended FAILED: " in stderr
        assert "exit code None" not in stderr
        # The cluster lost the job (its supervisor died with the node): what --retries runs again.
        lost = subprocess.run([sys.executable, "-c", "import sys; from runner.retries import lost_job; "
                               "print(lost_job('ray', sys.argv[1]))", job_id], capture_output=True, text=True)
        assert lost.stdout.strip() == f"ray job {job_id} ended FAILED", lost.stdout + lost.stderr
        assert _left_behind(run_id)  # the command goes on, on a node the cluster no longer has
    finally:
        proc.kill()
        os.kill(raylet, signal.SIGCONT)  # the node returns
    row = _row(run_id)
    assert row["status"] == "FAILED" and "ended FAILED" in row["reason"]
    assert _tracked(_work_in_tmp, run_id).info.status == "FAILED"
    _wait_for(lambda: _left_behind(run_id) == [], 120, "the run's processes on the returned node to be gone")
    ray.start_second_node()  # (the node's raylet exited: the cluster gets its second node again)
    assert _left_behind(run_id) == [] and _row(run_id)["status"] == "FAILED"


def test_a_submission_interrupted_once_ray_has_the_job_stops_the_job(ray, make_project, _work_in_tmp):
    """SIGHUP just after Ray accepted the job, before this host named it: the run is recorded
    KILLED, and the job is stopped so that it never runs it (seed 20261210: the job ran and its
    runner ended the MLflow run FINISHED behind a ledger that said KILLED)."""
    from ray.job_submission import JobSubmissionClient

    project = make_project(PROJECT)
    result = _run_struck(project, "ray.submitted:SIGHUP")
    assert result.returncode == 128 + signal.SIGHUP, result.stderr
    (row,) = json.loads(_cli("runs", "list", "--json").stdout)
    assert row["status"] == "KILLED", row
    client = JobSubmissionClient(ray.address)
    job_id = f"mlproject-{row['id']}"
    status = _wait_for(lambda: str(client.get_job_status(job_id)) if client.get_job_status(job_id).is_terminal()
                       else None, 60, "the job's end")
    assert status.endswith("STOPPED"), status
    time.sleep(3)  # (what a job that ran would have recorded by now)
    assert _tracked(_work_in_tmp, row["id"]).info.status == "KILLED"
    assert "alpha=" not in client.get_job_logs(job_id)


def test_a_job_ray_took_from_a_submitter_killed_before_naming_it_is_the_runs(ray, make_project, _work_in_tmp):
    """SIGKILL just after Ray accepted the job, before the ledger named it: the job runs, and the
    next command finds it by the submission ID this host chose and records its real end (seed
    20261210: the run was ended FAILED, "the submission was interrupted", while its job ran and
    ended the MLflow run FINISHED)."""
    project = make_project(PROJECT)
    result = _run_struck(project, "ray.submitted:SIGKILL")
    assert result.returncode == -signal.SIGKILL, result.stderr
    row = _wait_for(lambda: (rows := json.loads(_cli("runs", "list", "--json").stdout)) and rows[0]["status"]
                    not in ("SCHEDULED", "RUNNING") and rows[0], 120, "the run's end")
    assert (row["status"], row["job_id"]) == ("FINISHED", f"mlproject-{row['id']}"), row
    assert _tracked(_work_in_tmp, row["id"]).info.status == "FINISHED"


def test_a_signal_between_the_ledger_and_tracking_of_a_submission_ends_its_run(ray, make_project, _work_in_tmp):
    """SIGHUP after the run's ledger row was written, before tracking heard of it: the row ends
    KILLED with the tracked run (seed 20261210:88: the row was left for the next command, which
    ended it FAILED, "the submission was interrupted")."""
    project = make_project(PROJECT)
    result = _run_struck(project, "cluster.recorded:SIGHUP")
    assert result.returncode == 128 + signal.SIGHUP, result.stderr
    (row,) = json.loads(_cli("runs", "list", "--json").stdout)
    assert row["status"] == "KILLED" and row["reason"].startswith("submission: "), row
    assert _tracked(_work_in_tmp, row["id"]).info.status == "KILLED"


def test_a_signal_after_the_job_is_queued_before_the_caller_holds_it_stops_the_job(ray, make_project, _work_in_tmp):
    """SIGHUP after "Submitted run", before the CLI held the run's handle: the job is stopped and
    the run recorded KILLED (seed 777:59: exit 129, and the job ran on and ended the run FINISHED)."""
    from ray.job_submission import JobSubmissionClient

    project = make_project(PROJECT)
    result = _run_struck(project, "cluster.queued:SIGHUP")
    assert result.returncode == 128 + signal.SIGHUP, result.stderr
    (row,) = json.loads(_cli("runs", "list", "--json").stdout)
    assert row["status"] == "KILLED", row
    status = JobSubmissionClient(ray.address).get_job_status(f"mlproject-{row['id']}")
    assert str(status).endswith("STOPPED"), status
    time.sleep(3)  # (what a job that ran would have recorded by now)
    assert _tracked(_work_in_tmp, row["id"]).info.status == "KILLED"


def test_a_stop_that_reaches_a_job_after_its_end_keeps_its_success(ray, make_project, _work_in_tmp):
    """SIGTERM once Ray said the job SUCCEEDED and before this host recorded it: the stop reaches
    an ended job, and the run is what it was, FINISHED; the CLI says so and exits 0 (seed 9:6 and
    9:9: the run FINISHED, the CLI said "killed" and exited 143)."""
    project = make_project(PROJECT)
    result = _run_struck(project, "cluster.ended:SIGTERM")
    assert result.returncode == 0, result.stderr
    assert "succeeded: the stop asked by SIGTERM came after its end" in result.stderr, result.stderr
    (row,) = json.loads(_cli("runs", "list", "--json").stdout)
    assert (row["status"], row["exit_code"]) == ("FINISHED", 0), row
    assert _tracked(_work_in_tmp, row["id"]).info.status == "FINISHED"


def test_project_over_rays_working_dir_limit_is_one_clear_error(ray, make_project, _work_in_tmp):
    project = make_project(PROJECT)
    (project / "weights.bin").write_bytes(os.urandom(101 * 1024 * 1024))
    result = _cli("run", str(project), "-b", "ray", "--env-manager", "local")
    assert_clean_error(result, 2, "Ray refused the project")
    assert "100 MiB" in result.stderr and ".gitignore" in result.stderr
    rows = json.loads(_cli("runs", "list", "--json").stdout)
    assert rows and rows[0]["status"] == "FAILED"  # ended, never left SCHEDULED or RUNNING
    assert _tracked(_work_in_tmp, rows[0]["id"]).info.status == "FAILED"
    # what .gitignore leaves out does not travel
    (project / ".gitignore").write_text("weights.bin\n")
    ignored = _cli("run", str(project), "-b", "ray", "--env-manager", "local")
    assert ignored.returncode == 0, ignored.stderr


def test_bad_config_and_unreachable_cluster_are_refused_before_anything(ray, make_project, _work_in_tmp):
    project = make_project(PROJECT)
    assert_clean_error(_cli("run", str(project), "-b", "ray", "-c", '{"adress": "x"}'), 2, "unknown config key")
    closed = _cli("run", str(project), "-b", "ray", "-c", '{"address": "http://127.0.0.2:9"}')
    assert_clean_error(closed, 2, "cannot reach the Ray cluster")
    assert json.loads(_cli("runs", "list", "--json").stdout) == []
    assert MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").search_runs(["0"]) == []


def test_nodes_python_is_checked_before_anything_and_the_answer_kept(ray, make_project, _work_in_tmp, tmp_path):
    project = make_project(PROJECT)
    bare = tmp_path / "bare"  # a Python on the nodes without the runner's dependencies
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    lacking = _cli("run", str(project), "-b", "ray", "-c", json.dumps({"python": str(bare / "bin" / "python")}),
                   "--env-manager", "local")
    assert_clean_error(lacking, 2, "lacks click, PyYAML, jsonschema, which the runner needs there")
    assert "pip install mlproject-runner" in lacking.stderr
    absent = _cli("run", str(project), "-b", "ray", "-c", '{"python": "no-such-python"}', "--env-manager", "local")
    assert_clean_error(absent, 2, "the nodes could not run the runner with 'no-such-python'")
    assert json.loads(_cli("runs", "list", "--json").stdout) == []  # nothing was recorded
    assert MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").search_runs(["0"]) == []
    checked = "checking the Ray nodes' Python"
    first = _cli("run", str(project), "-b", "ray", "--env-manager", "local")
    assert first.returncode == 0 and checked in first.stderr, first.stderr
    second = _cli("run", str(project), "-b", "ray", "--env-manager", "local")
    assert second.returncode == 0 and checked not in second.stderr, second.stderr  # the kept answer


def test_api_run_on_ray(ray, make_project, _work_in_tmp):
    import runner

    project = make_project(PROJECT)
    submitted = runner.run(str(project), parameters={"code": 4}, backend="ray", env_manager="local",
                           backend_config={}, synchronous=False)
    assert submitted.wait() is False
    assert submitted.get_status() == "FAILED" and submitted.exit_code == 4
    again = runner.attach(submitted.run_id)
    assert again.done and again.get_status() == "FAILED"


PLUGIN_RUN = """
import sys
import mlflow
r = mlflow.projects.run(sys.argv[1], backend="mlproject", backend_config={"backend": "ray"},
                        parameters={"alpha": 0.7, "secs": 300}, env_manager="local", synchronous=False)
print("started", r.run_id, r.get_status(), flush=True)
r.cancel()
print("cancelled", r.get_status(), flush=True)
"""


def test_mlflow_projects_run_with_the_plugin_runs_and_cancels_on_ray(ray, make_project, _work_in_tmp):
    """MLflow's own API, with mlproject-runner as its backend plugin: an asynchronous run on
    Ray, cancelled through the SubmittedRun MLflow hands back."""
    project = make_project(PROJECT)
    done = subprocess.run([sys.executable, "-c", PLUGIN_RUN, str(project)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    _, run_id, status = next(line for line in lines if line.startswith("started ")).split()
    assert status in ("SCHEDULED", "RUNNING")
    assert "cancelled KILLED" in lines
    row = _row(run_id)
    assert (row["status"], row["backend"]) == ("KILLED", "ray")
    assert _tracked(_work_in_tmp, run_id).info.status == "KILLED"
    _wait_for(lambda: _left_behind(run_id) == [], 30, "the run's processes on the nodes to be gone")


def test_mlflow_run_with_the_plugin_runs_on_ray(ray, make_project, _work_in_tmp):
    """The `mlflow run` command with `-b mlproject -c '{"backend": "ray"}'`: it returns once the
    job is submitted (MLflow runs plugin backends asynchronously); the job runs to its end."""
    project = make_project(PROJECT)
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    done = subprocess.run([mlflow, "run", str(project), "-b", "mlproject", "-c", json.dumps({"backend": "ray"}),
                           "-P", "alpha=0.3", "--env-manager", "local"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [run] = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").search_runs(["0"])
    run_id = run.info.run_id
    _wait_for(lambda: _row(run_id)["status"] not in ("SCHEDULED", "RUNNING"), 120, "the job's end")
    row = _row(run_id)
    assert (row["status"], row["backend"]) == ("FINISHED", "ray")
    assert _tracked(_work_in_tmp, run_id).info.status == "FINISHED"
    assert "alpha=0.3" in _cli("runs", "logs", run_id).stdout


def test_rerun_on_ray_installs_the_recorded_lock(ray, make_project, _work_in_tmp, mlproject_home):
    """A uv run on Ray keeps its environment's lock on the node (which shares no files with this
    host); its rerun on Ray takes the lock from tracking and carries it in the job's request, and
    the node installs exactly it (or finds an environment holding exactly it) instead of
    resolving the env file again."""
    project = make_project("""
        name: locked-on-ray
        python_env: python_env.yaml
        entry_points:
          main:
            command: "python -c 'import six; print(\\"six\\", six.__version__)'"
    """, {"python_env.yaml": 'python: "3.11"\ndependencies:\n  - six\n'})
    first = _cli("run", str(project), "-b", "ray", "--env-manager", "uv")
    assert first.returncode == 0, first.stderr
    assert "installing dependencies" in first.stdout + first.stderr  # (resolved from the env file)
    original, _ = _submitted(first.stderr)
    recorded = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").download_artifacts(
        original, "environment/pylock.toml", str(_work_in_tmp))
    assert not (mlproject_home / "runs" / original / "environment").exists()  # (the node kept the lock, not this host)

    again = _cli("rerun", original, "-b", "ray")
    assert again.returncode == 0, again.stderr
    rerun, _ = _submitted(again.stderr)
    said = again.stdout + again.stderr
    # Exactly the lock: built from it, or, on the node that ran the first, the environment that
    # already holds exactly its packages (runner.envs.python.sameset); never resolved again.
    assert "from pylock.toml" in said or "building environment" not in said, said
    assert "installing dependencies" not in said, said
    shipped = ray.home_of(rerun) / "runs" / rerun / "requested-lock" / "pylock.toml"
    assert shipped.read_text() == Path(recorded).read_text()
    assert [line for line in again.stdout.splitlines() if line.startswith("six ")] == \
        [line for line in first.stdout.splitlines() if line.startswith("six ")]
    assert _row(rerun)["status"] == "FINISHED"

