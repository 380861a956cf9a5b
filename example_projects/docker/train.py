"""ElasticNet on wine-quality style data, inside a container; logs RMSE, MAE, R2 and the model."""
import argparse
import math

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import ElasticNet
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser()
parser.add_argument("--alpha", type=float, required=True)
parser.add_argument("--l1-ratio", type=float, required=True)
args = parser.parse_args()

# The working directory is the project (mounted, or copied into the image with --build-image).
wine = pd.read_csv("wine-quality.csv")
train, test = train_test_split(wine, random_state=42)
features = wine.columns.drop("quality")

with mlflow.start_run():
    model = ElasticNet(alpha=args.alpha, l1_ratio=args.l1_ratio, random_state=42)
    model.fit(train[features], train["quality"])
    predicted = model.predict(test[features])
    metrics = {"rmse": math.sqrt(mean_squared_error(test["quality"], predicted)),
               "mae": mean_absolute_error(test["quality"], predicted), "r2": r2_score(test["quality"], predicted)}
    mlflow.log_metrics(metrics)
    mlflow.sklearn.log_model(model, name="model", signature=infer_signature(train[features], predicted))
    print("in a container:", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
