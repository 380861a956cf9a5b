"""The example behind `make run`, end to end: its uv environment, its run, its metrics."""
from __future__ import annotations

import re

from mlflow.tracking import MlflowClient

from conftest import REPO


def test_quickstart_logs_its_metrics(cli, _work_in_tmp):
    result = cli("run", str(REPO / "example_projects" / "quickstart"), "-P", "rows=5", "-P", "scale=2.5", cwd=_work_in_tmp)
    assert result.returncode == 0, result.stderr
    assert "demo run: 5 rows, mean 4.1912, max 5.5902" in result.stdout
    run_id = re.search(r"run with ID '([0-9a-f]{32})'", result.stderr).group(1)
    run = MlflowClient(f"sqlite:///{_work_in_tmp / 'mlflow.db'}").get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"rows": "5", "scale": "2.5", "label": "demo run"}
    assert run.data.metrics["max"] == 5.5902 and abs(run.data.metrics["mean"] - 4.1912) < 1e-4
    assert run.data.tags["mlflow.project.env"] == "uv"
