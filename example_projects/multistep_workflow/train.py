"""Step 3: ElasticNet on the cleaned data; logs RMSE, MAE, R2 and the model."""
import math
import sys

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import ElasticNet
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split

data, alpha = pd.read_csv(sys.argv[1]), float(sys.argv[2])
x, y = data.drop(columns=["quality"]), data["quality"]
x_train, x_test, y_train, y_test = train_test_split(x, y, random_state=1)

with mlflow.start_run():
    model = ElasticNet(alpha=alpha, random_state=1).fit(x_train, y_train)
    predicted = model.predict(x_test)
    metrics = {"rmse": math.sqrt(mean_squared_error(y_test, predicted)), "mae": mean_absolute_error(y_test, predicted),
               "r2": r2_score(y_test, predicted)}
    mlflow.log_metrics(metrics)
    mlflow.sklearn.log_model(model, name="model", signature=infer_signature(x_train, predicted))
    print(", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
