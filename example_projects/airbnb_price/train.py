"""RandomForest price model on bedrooms, beds and bathrooms, with MLflow autologging."""
import os
import sys

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from sklearn.ensemble import RandomForestRegressor
from sklearn.model_selection import train_test_split

n_estimators, max_depth = int(sys.argv[1]), int(sys.argv[2])
data = pd.read_csv(os.path.join(os.path.dirname(os.path.abspath(__file__)), "listings.csv"))
x, y = data[["bedrooms", "beds", "bathrooms"]].astype("float64"), data["price"]
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=3)

# Autologging records the estimator's parameters, its training metrics and the model;
# the model is logged once more here with an explicit input signature.
mlflow.sklearn.autolog(log_models=False)
with mlflow.start_run():
    model = RandomForestRegressor(n_estimators=n_estimators, max_depth=max_depth, random_state=3).fit(x_train, y_train)
    score = model.score(x_test, y_test)
    mlflow.log_metric("test_r2", score)
    mlflow.sklearn.log_model(model, name="model", signature=infer_signature(x_train, model.predict(x_train)),
                             input_example=x_train.head(3), skops_trusted_types=["sklearn.tree._tree.Tree"])
    print(f"test R2 {score:.3f}")
