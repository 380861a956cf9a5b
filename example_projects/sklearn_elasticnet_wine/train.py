"""ElasticNet on wine-quality style data; logs RMSE, MAE, R2 and the model."""
import math
import os
import sys

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import ElasticNet
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split

alpha, l1_ratio = float(sys.argv[1]), float(sys.argv[2])
data = pd.read_csv(os.path.join(os.path.dirname(os.path.abspath(__file__)), "wine-quality.csv"))
train, test = train_test_split(data, random_state=42)
x_train, y_train = train.drop(columns=["quality"]), train["quality"]
x_test, y_test = test.drop(columns=["quality"]), test["quality"]

with mlflow.start_run() as run:
    model = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, random_state=42).fit(x_train, y_train)
    predicted = model.predict(x_test)
    metrics = {"rmse": math.sqrt(mean_squared_error(y_test, predicted)), "mae": mean_absolute_error(y_test, predicted),
               "r2": r2_score(y_test, predicted)}
    mlflow.log_metrics(metrics)
    mlflow.sklearn.log_model(model, name="model", signature=infer_signature(x_train, predicted))
    print(f"ElasticNet(alpha={alpha}, l1_ratio={l1_ratio}): " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    print(f"run {run.info.run_id}")
