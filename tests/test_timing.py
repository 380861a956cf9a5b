"""Where a cold start goes: every run records its stages as `mlproject.timing.*` tags and
`runs show` prints them (runner.timing)."""
from __future__ import annotations

import json
import re

import pytest
from mlflow.tracking import MlflowClient

from conftest import BROKEN_PACKAGE

PROJECT = "name: timed\npython_env: python_env.yaml\nentry_points:\n  main:\n    command: 'echo ran'\n"


def _timing_tags(client: MlflowClient, run_id: str) -> dict[str, float]:
    tags = client.get_run(run_id).data.tags
    return {name.removeprefix("mlproject.timing."): float(value) for name, value in tags.items()
            if name.startswith("mlproject.timing.")}


def _run_id(stderr: str) -> str:
    return re.search(r"run with ID '([0-9a-f]{32})'", stderr).group(1)


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_a_cold_and_a_warm_run_record_where_their_start_went(make_project, cli, _work_in_tmp, request, store):
    """The first run builds its environment, the second finds it built: both record each stage,
    the whole start holds its parts, and the build is what the warm run no longer pays."""
    env, uri = {}, f"sqlite:///{_work_in_tmp / 'mlflow.db'}"
    if store == "server":  # (the end's tags go on the uploads' own client)
        uri = request.getfixturevalue("mlflow_server")
        env = {"MLFLOW_TRACKING_URI": uri}
    root = make_project(PROJECT, {"python_env.yaml": "python: '3.11'\ndependencies: [six==1.16.0]\n"})
    client = MlflowClient(uri)
    runs = []
    for _ in range(2):
        result = cli("run", str(root), env=env)
        assert result.returncode == 0, result.stderr
        runs.append(_run_id(result.stderr))
    cold, warm = (_timing_tags(client, run_id) for run_id in runs)
    for seconds in (cold, warm):
        assert {"fetch", "solve", "open", "build", "start"} <= set(seconds), seconds
        parts = seconds["fetch"] + seconds["solve"] + seconds["open"] + seconds["build"]
        assert parts <= seconds["start"] + 0.002, seconds  # (each tag is rounded to a millisecond)
    assert cold["build"] > 0.02 and warm["build"] < cold["build"] / 2, (cold, warm)
    shown = cli("runs", "show", runs[1])
    line = next(text for text in shown.stdout.splitlines() if text.startswith("cold start:"))
    assert "to the command's start (fetch " in line and "build " in line, shown.stdout
    described = json.loads(cli("runs", "show", runs[0], "--json").stdout)["timing"]
    assert described == pytest.approx(cold, abs=0.001)


def test_a_run_whose_build_failed_records_the_stages_it_went_through(make_project, cli, _work_in_tmp):
    """A build that fails: the run records how long it took to fail, and no start it never made."""
    root = make_project(PROJECT, {"python_env.yaml": "python: '3.11'\ndependencies: [./broken]\n", **BROKEN_PACKAGE})
    result = cli("run", str(root))
    assert result.returncode == 2, result.stderr
    row = json.loads(cli("runs", "list", "--json").stdout)[0]
    assert row["status"] == "FAILED"
    seconds = _timing_tags(MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}"), row["id"])
    assert {"fetch", "solve", "open", "build"} <= set(seconds) and "start" not in seconds, seconds
    shown = cli("runs", "show", row["id"]).stdout
    assert re.search(r"^cold start: +the command never started \(fetch ", shown, re.MULTILINE), shown
