"""Every example project, end to end, as its README runs it: the logged parameters,
finite metrics, and a model that loads back with mlflow.pyfunc and predicts.

The uv examples share one environment (one build per test module). The conda
example resolves `conda-forge` to the local test channel through a .condarc; the
docker example runs against the private test daemon, its image stood in for by
the local base image with the host's MLflow mounted (nothing can be pulled or
pip-installed inside a container here).
"""
from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from condachannel import condarc
from conftest import REPO

EXAMPLES = REPO / "example_projects"


@pytest.fixture(scope="module")
def examples_home(tmp_path_factory):
    return tmp_path_factory.mktemp("examples-home")


@pytest.fixture(autouse=True)
def mlproject_home(mlproject_home, examples_home, monkeypatch):
    # One store for the module: the examples share their environment, built once.
    monkeypatch.setenv("MLPROJECT_HOME", str(examples_home))
    return examples_home


def finished_run(result, db):
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = re.search(r"run with ID '([0-9a-f]{32})'", result.stderr).group(1)
    run = MlflowClient(f"sqlite:///{db}").get_run(run_id)
    assert run.info.status == "FINISHED"
    return run


def assert_metrics(run, names):
    for name in names:
        assert name in run.data.metrics, (name, run.data.metrics)
        assert math.isfinite(run.data.metrics[name]), (name, run.data.metrics[name])


def assert_model_predicts(run, db, rows: pd.DataFrame):
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
        predictions = model.predict(rows)
    finally:
        mlflow.set_tracking_uri(None)
    assert len(predictions) == len(rows)
    assert all(math.isfinite(float(value)) for value in predictions)
    return model


def test_sklearn_elasticnet_wine(cli, _work_in_tmp):
    db = _work_in_tmp / "mlflow.db"
    run = finished_run(cli("run", str(EXAMPLES / "sklearn_elasticnet_wine"), "-P", "alpha=0.4"), db)
    assert run.data.params == {"alpha": "0.4", "l1_ratio": "0.1"}
    assert_metrics(run, ["rmse", "mae", "r2"])
    assert run.data.tags["mlflow.project.env"] == "uv"
    wine = pd.read_csv(EXAMPLES / "sklearn_elasticnet_wine" / "wine-quality.csv")
    assert_model_predicts(run, db, wine.drop(columns=["quality"]).head(5))


def test_boston_housing_typed_defaults(cli, _work_in_tmp):
    db = _work_in_tmp / "mlflow.db"
    run = finished_run(cli("run", str(EXAMPLES / "boston_housing"), "-P", "n_estimators=50"), db)
    assert run.data.params == {"n_estimators": "50", "max_depth": "3", "min_samples_split": "4", "learning_rate": "0.05"}
    assert_metrics(run, ["mae", "mse", "rmse", "r2"])
    housing = pd.read_csv(EXAMPLES / "boston_housing" / "housing.csv")
    assert_model_predicts(run, db, housing.drop(columns=["MEDV"]).head(5))
    bad = cli("run", str(EXAMPLES / "boston_housing"), "-P", "max_depth=deep")
    assert bad.returncode == 2 and "max_depth" in bad.stderr  # typed: refused before anything runs


def test_airbnb_price_autolog_and_signature(cli, _work_in_tmp):
    db = _work_in_tmp / "mlflow.db"
    run = finished_run(cli("run", str(EXAMPLES / "airbnb_price"), "-P", "n_estimators=40", "-P", "max_depth=5"), db)
    assert run.data.params["n_estimators"] == "40" and run.data.params["max_depth"] == "5"
    assert "min_samples_leaf" in run.data.params  # logged by autologging, not by the runner
    assert_metrics(run, ["training_r2_score", "test_r2"])
    listings = pd.read_csv(EXAMPLES / "airbnb_price" / "listings.csv")
    model = assert_model_predicts(run, db, listings[["bedrooms", "beds", "bathrooms"]].astype("float64").head(4))
    inputs = [spec.name for spec in model.metadata.get_input_schema().inputs]
    assert inputs == ["bedrooms", "beds", "bathrooms"]


def test_salary_conda_from_the_repository_root(cli, channel_root, tmp_path, monkeypatch, _work_in_tmp):
    monkeypatch.setenv("CONDARC", str(condarc(tmp_path / "condarc", channel_alias=f"file://{channel_root}")))
    db = _work_in_tmp / "mlflow.db"
    result = cli("run", "example_projects/salary", "-P", "data_file=example_projects/salary/data/sal_data.csv",
                 cwd=REPO, env={"MLFLOW_TRACKING_URI": f"sqlite:///{db}"})
    run = finished_run(result, db)
    assert run.data.params["data_file"] == "example_projects/salary/data/sal_data.csv"  # as given, as MLflow logs it
    assert run.data.tags["mlflow.project.env"] == "conda"
    assert_metrics(run, ["intercept", "slope", "mae", "mse", "rmse"])
    assert 7000 < run.data.metrics["slope"] < 10500  # the data's slope is 8700 a year
    assert_model_predicts(run, db, pd.DataFrame({"YearsExperience": [1.0, 5.0, 10.0]}))


def test_multistep_workflow_children_and_reuse(cli, _work_in_tmp):
    db = _work_in_tmp / "mlflow.db"
    project = str(EXAMPLES / "multistep_workflow")
    first = finished_run(cli("run", project, "--env-manager", "local"), db)
    assert first.data.params == {"rows": "400", "alpha": "0.3"}
    client = MlflowClient(f"sqlite:///{db}")
    children = client.search_runs([first.info.experiment_id], f"tags.`mlflow.parentRunId` = '{first.info.run_id}'")
    steps = {run.data.tags["mlflow.project.entryPoint"]: run for run in children}
    assert sorted(steps) == ["etl_data", "load_raw_data", "train"]
    assert all(run.info.status == "FINISHED" for run in children)
    assert steps["etl_data"].data.params["raw_data"].startswith(f"runs:/{steps['load_raw_data'].info.run_id}/")
    assert_metrics(steps["train"], ["rmse", "mae", "r2"])
    clean = pd.DataFrame({"alcohol": [0.1, -0.5], "volatile acidity": [0.0, 1.0], "sulphates": [0.3, -0.2]})
    assert_model_predicts(steps["train"], db, clean)
    # Again with a new alpha: the data steps are reused and say so; only train runs.
    second = cli("run", project, "--env-manager", "local", "-P", "alpha=0.1")
    finished_run(second, db)
    assert "step load_raw_data: reusing run" in second.stdout and "step etl_data: reusing run" in second.stdout
    assert "step train: running" in second.stdout


def test_hyperparam_sweeps_the_wine_example(cli, _work_in_tmp):
    db = _work_in_tmp / "mlflow.db"
    result = cli("run", str(EXAMPLES / "hyperparam"), "--env-manager", "local", "-P", "method=grid", "-P", "max_runs=4")
    search = finished_run(result, db)
    assert "best of 4 trials: rmse=" in result.stdout
    client = MlflowClient(f"sqlite:///{db}")
    sweep = client.search_runs([search.info.experiment_id], f"tags.`mlflow.parentRunId` = '{search.info.run_id}'")
    assert len(sweep) == 1 and sweep[0].data.tags["mlproject.sweep.method"] == "grid"  # the sweep, a child of the search
    trials = client.search_runs([search.info.experiment_id], f"tags.`mlflow.parentRunId` = '{sweep[0].info.run_id}'")
    assert len(trials) == 4 and all(t.info.status == "FINISHED" for t in trials)
    best = min(trials, key=lambda t: t.data.metrics["rmse"])
    assert sweep[0].data.tags["mlproject.sweep.best_run_id"] == best.info.run_id


def test_docker_example(cli, daemon, _work_in_tmp, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", daemon.host)
    daemon.docker("tag", daemon.load_base_image(), "mlproject-examples/elasticnet:1")
    site = str(Path(mlflow.__file__).resolve().parents[1])
    db = _work_in_tmp / "mlflow.db"
    result = cli("run", str(EXAMPLES / "docker"), "-P", "alpha=0.3",
                 "-A", f"volume={site}:/opt/site:ro", "-A", "env=PYTHONPATH=/opt/site")
    run = finished_run(result, db)
    assert "in a container:" in result.stdout
    assert run.data.params == {"alpha": "0.3", "l1_ratio": "0.1"}
    assert run.data.tags["mlflow.docker.image.uri"] == "mlproject-examples/elasticnet:1"
    assert_metrics(run, ["rmse", "mae", "r2"])
    wine = pd.read_csv(EXAMPLES / "docker" / "wine-quality.csv")
    assert_model_predicts(run, db, wine.drop(columns=["quality"]).head(3))


def test_make_run_target(tmp_path):
    """`make run`: the wine example on the embedded defaults, its run ID, metrics and how to look at them."""
    env = {**os.environ, "BIN": str(REPO / ".venv" / "bin")}
    result = subprocess.run(["make", "-s", "-C", str(REPO), "run-example", f"RUN_DIR={tmp_path}"], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"run [0-9a-f]{32}", result.stdout) and "rmse=" in result.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in result.stdout
    assert (tmp_path / "mlflow.db").exists()


def test_every_example_has_a_readme_with_its_command():
    for project in sorted(p for p in EXAMPLES.iterdir() if (p / "MLproject").exists()):
        readme = (project / "README.md").read_text()
        assert f"example_projects/{project.name}" in readme and "mlproject run" in readme, project.name
