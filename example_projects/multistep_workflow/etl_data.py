"""Step 2: clean the raw data (drop incomplete rows, standardise the features) into an artifact."""
import os
import sys
import tempfile

import mlflow
import pandas as pd

raw = pd.read_csv(sys.argv[1])
clean = raw.dropna()
features = clean.columns.drop("quality")
clean.loc[:, features] = (clean[features] - clean[features].mean()) / clean[features].std()

with mlflow.start_run():
    mlflow.log_metric("rows_dropped", len(raw) - len(clean))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "clean.csv")
        clean.to_csv(path, index=False)
        mlflow.log_artifact(path, "clean")
    print(f"clean data: {len(clean)} rows")
