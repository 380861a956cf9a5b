"""Linear regression of salary on years of experience; logs the fit, its errors and the model."""
import argparse
import math

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_error, mean_squared_error
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser()
parser.add_argument("--data-file", required=True)
parser.add_argument("--test-size", type=float, default=0.25)
args = parser.parse_args()

data = pd.read_csv(args.data_file)
x, y = data[["YearsExperience"]], data["Salary"]
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=args.test_size, random_state=0)

with mlflow.start_run():  # the run mlproject opened (MLFLOW_RUN_ID)
    model = LinearRegression().fit(x_train, y_train)
    predicted = model.predict(x_test)
    mse = mean_squared_error(y_test, predicted)
    metrics = {"intercept": float(model.intercept_), "slope": float(model.coef_[0]),
               "mae": mean_absolute_error(y_test, predicted), "mse": mse, "rmse": math.sqrt(mse)}
    mlflow.log_metrics(metrics)
    mlflow.sklearn.log_model(model, name="model", signature=infer_signature(x_train, model.predict(x_train)))
    print(" ".join(f"{name}={value:.2f}" for name, value in metrics.items()))
