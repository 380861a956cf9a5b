"""The workflow: load_raw_data -> etl_data -> train, each a child run of this one.

Each step's output is an artifact, passed to the next step as a `runs:/` URI
(a `path` parameter: mlproject-runner downloads it for the step). A step whose
entry point, parameters and source commit match an earlier FINISHED run is
reused instead of run again.
"""
import os
import sys

from mlflow.tracking import MlflowClient

import runner

PROJECT = os.path.dirname(os.path.abspath(__file__))
client = MlflowClient()
this_run = client.get_run(os.environ["MLFLOW_RUN_ID"])  # opened by mlproject for `main`
experiment_id = this_run.info.experiment_id
commit = this_run.data.tags.get("mlflow.source.git.commit")


def already_ran(entry_point: str, parameters: dict) -> object | None:
    wanted = {name: str(value) for name, value in parameters.items()}
    query = f"tags.`mlflow.project.entryPoint` = '{entry_point}' and attributes.status = 'FINISHED'"
    for run in client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], max_results=50):
        if run.data.tags.get("mlflow.source.git.commit") != commit:
            continue
        if run.data.params == wanted:
            return run
    return None


def step(entry_point: str, parameters: dict):
    found = already_ran(entry_point, parameters)
    if found is not None:
        print(f"step {entry_point}: reusing run {found.info.run_id} (same parameters and code)", flush=True)
        return found
    print(f"step {entry_point}: running", flush=True)
    submitted = runner.run(PROJECT, entry_point=entry_point, parameters=parameters, experiment_id=experiment_id)
    return client.get_run(submitted.run_id)


rows, alpha = int(sys.argv[1]), float(sys.argv[2])
raw = step("load_raw_data", {"rows": rows})
clean = step("etl_data", {"raw_data": f"runs:/{raw.info.run_id}/raw/raw.csv"})
trained = step("train", {"data": f"runs:/{clean.info.run_id}/clean/clean.csv", "alpha": alpha})
client.set_tag(this_run.info.run_id, "workflow.train_run_id", trained.info.run_id)
print(f"model: runs:/{trained.info.run_id}/model  rmse={trained.data.metrics['rmse']:.4f}")
