"""GradientBoostingRegressor on Boston-housing style data; logs MAE, MSE, RMSE, R2 and the model."""
import argparse
import math
import os

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser()
parser.add_argument("--n-estimators", type=int, required=True)
parser.add_argument("--max-depth", type=int, required=True)
parser.add_argument("--min-samples-split", type=int, required=True)
parser.add_argument("--learning-rate", type=float, required=True)
args = parser.parse_args()

data = pd.read_csv(os.path.join(os.path.dirname(os.path.abspath(__file__)), "housing.csv"))
x, y = data.drop(columns=["MEDV"]), data["MEDV"]
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=7)

with mlflow.start_run():
    model = GradientBoostingRegressor(n_estimators=args.n_estimators, max_depth=args.max_depth,
                                      min_samples_split=args.min_samples_split, learning_rate=args.learning_rate,
                                      random_state=7).fit(x_train, y_train)
    predicted = model.predict(x_test)
    mse = mean_squared_error(y_test, predicted)
    metrics = {"mae": mean_absolute_error(y_test, predicted), "mse": mse, "rmse": math.sqrt(mse),
               "r2": r2_score(y_test, predicted)}
    mlflow.log_metrics(metrics)
    # Tree models are saved with skops, which loads tree node storage only when told it is trusted (ours is).
    mlflow.sklearn.log_model(model, name="model", signature=infer_signature(x_train, predicted),
                             skops_trusted_types=["sklearn.tree._tree.Tree"])
    print(", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
