"""A hyperparameter search over the wine example with runner.sweep: alpha and l1_ratio of
the ElasticNet, ranked by the RMSE each trial logs. The sweep's parent run is a child of
this run (MLflow's hyperparam example, in a few lines)."""
import sys
from pathlib import Path

import runner

method, max_runs, max_parallel = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
wine = Path(__file__).resolve().parent.parent / "sklearn_elasticnet_wine"
space = {"alpha": "loguniform(0.001,1)", "l1_ratio": "uniform(0,1)"}
if method == "grid":
    space = {"alpha": "0.001,0.01,0.1,1", "l1_ratio": "range(0,1,0.5)"}
result = runner.sweep(str(wine), parameters=space, method=method, max_runs=max_runs, seed=0, metric="rmse",
                      goal="minimize", max_parallel=max_parallel, notify=print)
best = result.best
print(f"best of {len(result.trials)} trials: rmse={best.metric:.4f} with alpha={best.parameters['alpha']} "
      f"l1_ratio={best.parameters['l1_ratio']} (run {best.run_id}; sweep parent run {result.parent_run_id})")
sys.exit(0 if result.succeeded else 1)
