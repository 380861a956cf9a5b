"""Step 1: produce the raw data (generated deterministically: nothing is downloaded) as an artifact."""
import os
import sys
import tempfile

import mlflow
import numpy as np
import pandas as pd

rows = int(sys.argv[1])
rng = np.random.default_rng(7)
alcohol = rng.normal(10.4, 1.1, rows)
acidity = rng.normal(0.53, 0.18, rows)
sulphates = rng.normal(0.66, 0.17, rows)
quality = np.clip(np.round(5.6 + 0.35 * (alcohol - 10.4) - 1.2 * (acidity - 0.53) + rng.normal(0, 0.5, rows)), 3, 8)
raw = pd.DataFrame({"alcohol": alcohol, "volatile acidity": acidity, "sulphates": sulphates, "quality": quality})
raw.loc[rng.choice(rows, rows // 20, replace=False), "sulphates"] = np.nan  # what the ETL step cleans

with mlflow.start_run():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "raw.csv")
        raw.to_csv(path, index=False)
        mlflow.log_artifact(path, "raw")
    print(f"raw data: {rows} rows, {int(raw.isna().sum().sum())} missing values")
