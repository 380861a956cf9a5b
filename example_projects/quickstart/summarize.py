"""A tiny project: make a deterministic table, print its summary.

Logs its metrics to the MLflow run that mlproject-runner opened for it
(MLFLOW_RUN_ID is set when the run is tracked).
"""
import argparse
import os
import statistics

parser = argparse.ArgumentParser()
parser.add_argument("--rows", type=int, required=True)
parser.add_argument("--scale", type=float, required=True)
parser.add_argument("--label", required=True)
args = parser.parse_args()

values = [round(args.scale * (i + 1) ** 0.5, 4) for i in range(args.rows)]
mean = statistics.fmean(values)
print(f"{args.label}: {args.rows} rows, mean {mean:.4f}, max {max(values):.4f}")

if os.environ.get("MLFLOW_RUN_ID"):  # set by mlproject-runner when the run is tracked
    import mlflow

    with mlflow.start_run() as run:
        mlflow.log_metric("mean", mean)
        mlflow.log_metric("max", max(values))
    print(f"logged mean and max to MLflow run {run.info.run_id}")
