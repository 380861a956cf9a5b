"""Side by side with `mlflow run` itself (MLflow 3.17.2, from the dev extra): the same project,
the same arguments, one tracking store. The two recorded runs must be the same (status,
parameters, metrics, every tag MLflow sets, the project's artifacts), but for the differences
the README lists ("Differences from mlflow run"): parameter values logged unquoted, our own
`mlproject.*` tags, and the run's log and source state kept as artifacts.

The project has the forms public projects use and MLflow accepts: type names `str`,
`integer`, `double`, `boolean`; a `path` parameter; a parameter given as `name: type`, with a
hyphen in its name; a top-level key of the file's own holding a YAML anchor; a conda.yaml
without python; a project in a subdirectory of a git work tree (the seed tutorial's
`mlflow run train`), run as a directory, as a directory outside git, and as a git URL (a git
daemon on loopback)."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gitservers import GitDaemon, free_port, git

MLPROJECT = """\
name: side-by-side
conda_env: conda.yaml
default_alpha: &alpha 0.5
entry_points:
  main:
    parameters:
      alpha: {type: double, default: *alpha}
      name: {type: str, default: "a b"}
      n: {type: integer, default: 3}
      verbose: {type: boolean, default: true}
      data: {type: path, default: data/train.csv}
      batch-size: integer
    command: "python train.py --alpha {alpha} --name {name} --n {n} --data {data} --batch {batch-size}"
"""
CONDA_YAML = """\
name: side-by-side
channels: [defaults]
dependencies:
  - pip
  - pip:
    - mlflow
"""
TRAIN_PY = """\
import argparse, os, mlflow
parser = argparse.ArgumentParser()
for name in ("--alpha", "--name", "--n", "--data", "--batch"):
    parser.add_argument(name)
args = parser.parse_args()
with mlflow.start_run():
    mlflow.log_metric("rmse", float(args.alpha) * int(args.n))
    mlflow.log_param("rows", len(open(args.data).read().splitlines()))
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/name.txt", "w") as handle:
        handle.write(args.name)
    mlflow.log_artifacts("outputs", "outputs")
print("trained on", os.path.basename(args.data))
"""
# Our own tags, and the run's log and source state kept as artifacts (README: "What a run does").
OUR_TAG_PREFIX = "mlproject."
OUR_ARTIFACTS = {"output.log", "source", "environment"}
_RUN_LINE = re.compile(r"=== Run \(ID '([0-9a-f]{32})'\) succeeded ===")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git repository whose `train/` subdirectory is the project, and a bare copy to serve."""
    root = tmp_path_factory.mktemp("side-by-side")
    work = root / "work"
    (work / "train" / "data").mkdir(parents=True)
    for name, text in (("MLproject", MLPROJECT), ("conda.yaml", CONDA_YAML), ("train.py", TRAIN_PY)):
        (work / "train" / name).write_text(text)
    (work / "train" / "data" / "train.csv").write_text("x,y\n1,2\n3,4\n")
    (work / ".gitignore").write_text("outputs/\nmlruns/\n")
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "the project", cwd=work)
    bare = root / "served" / "org" / "project.git"
    bare.parent.mkdir(parents=True)
    git("clone", "-q", "--bare", str(work), str(bare))
    return work


def _env(store: Path) -> dict[str, str]:
    """Both tools run the command with this Python (it has mlflow), tracking to one store."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    return env


def _run(tool: list[str], args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run([*tool, "run", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (tool, done.stdout[-2000:], done.stderr[-4000:])
    assert "trained on train.csv" in done.stdout
    found = _RUN_LINE.search(done.stderr)
    assert found, done.stderr[-2000:]
    return found.group(1)


def _recorded(client: MlflowClient, run_id: str) -> dict:
    run = client.get_run(run_id)
    tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.runName"}  # a random name each
    return {"status": run.info.status, "params": run.data.params, "metrics": run.data.metrics, "tags": tags,
            "artifacts": {entry.path for entry in client.list_artifacts(run_id)}}


def _assert_same_run(theirs: dict, ours: dict) -> None:
    assert ours["status"] == theirs["status"] == "FINISHED"
    assert ours["metrics"] == theirs["metrics"]
    assert set(ours["params"]) == set(theirs["params"])
    for name, value in ours["params"].items():  # MLflow logs the shell-quoted text of a value
        assert theirs["params"][name] in (value, shlex.quote(value)), (name, theirs["params"][name], value)
    ours_as_mlflow = {k: v for k, v in ours["tags"].items() if not k.startswith(OUR_TAG_PREFIX)}
    assert ours_as_mlflow == theirs["tags"]
    assert theirs["artifacts"] <= ours["artifacts"] and ours["artifacts"] - theirs["artifacts"] <= OUR_ARTIFACTS


@pytest.mark.slow
@pytest.mark.parametrize("form", ["subdirectory of a git work tree", "directory outside git", "git URL"])
def test_the_same_run_as_mlflow_run(form, repo, tmp_path):
    store = tmp_path / "mlflow.db"
    env = _env(store)
    args = ["--env-manager", "local", "-P", "alpha=0.7", "-P", "name=x y", "-P", "n=4", "-P", "batch-size=8"]
    if form == "subdirectory of a git work tree":  # `mlflow run train` from the repository's root
        cwd, uri = repo, "train"
        args += ["-P", "data=train/data/train.csv"]  # (a path is taken from where you are, as by MLflow)
    elif form == "directory outside git":
        cwd = tmp_path / "elsewhere"
        shutil.copytree(repo / "train", cwd)
        uri = "."
    else:
        cwd, uri = tmp_path, None
        (cwd / "data").mkdir()  # the default path, taken from where you are: here, not in the checkout
        shutil.copy(repo / "train" / "data" / "train.csv", cwd / "data")
    daemon = None
    try:
        if uri is None:
            daemon = GitDaemon(repo.parent / "served", free_port(), tmp_path / "daemon.log")
            daemon.start()
            uri = daemon.url("org/project.git") + "#train"
            args += ["-v", "main"]
        theirs = _run([sys.executable, "-m", "mlflow"], [uri, *args], cwd, env)
        ours = _run([sys.executable, "-m", "runner"], [uri, *args], cwd, env)
    finally:
        if daemon is not None:
            daemon.stop()
    client = MlflowClient(f"sqlite:///{store}")
    _assert_same_run(_recorded(client, theirs), _recorded(client, ours))
