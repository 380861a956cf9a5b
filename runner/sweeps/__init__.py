"""Sweeps: many runs of one project over a parameter space, as child runs of one parent run.

    space.py   what `-P alpha=loguniform(1e-4,1)` means; the trials grid and random draw
    state.py   the sweep and its trials, in the ledger's database (what `--resume` reads)
    driver.py  the parent run, the trials N at a time on any backend, the best one

Every trial is an ordinary run through `runner.api.submit`, exactly as `mlproject run`
would make it (tags, parameters, environment, ledger row), with `mlflow.parentRunId`.
(The package is `sweeps`, not `sweep`: `runner.sweep` is the public function, and a
subpackage of that name would replace it as an attribute of `runner` once imported.)
"""
from __future__ import annotations

from pathlib import Path

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping, Sequence

    from runner.sweeps.driver import SweepResult


def load_config(path: str | Path) -> dict[str, Any]:
    """A sweep.yaml (schemas/sweep.schema.json), as SweepRequest fields; a list becomes `a,b,c`."""
    from runner.project.schema import load_document

    document = load_document(Path(path), "sweep", Path(path).name)
    data = dict(document.data or {})
    parameters = {}
    for name, value in (data.pop("parameters", None) or {}).items():
        if isinstance(value, list):
            value = ",".join(_text(item).replace(",", "\\,") for item in value)
        parameters[name] = _text(value)
    data["parameters"] = parameters
    if "gpus" in data:  # (the command line's name)
        data["gpu_devices"] = data.pop("gpus")
    return data


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def sweep(
    uri: str = ".",
    parameters: Mapping[str, Any] | None = None,
    entry_point: str | None = None,
    version: str | None = None,
    method: str | None = None,
    max_runs: int | None = None,
    seed: int | None = None,
    max_parallel: int | None = None,
    metric: str | None = None,
    goal: str | None = None,
    max_failures: int | None = None,
    backend: str = "local",
    backend_config: str | Mapping[str, Any] | None = None,
    env_manager: str | None = None,
    experiment_name: str | None = None,
    experiment_id: str | None = None,
    *,
    config: str | Path | None = None,
    resume: str | None = None,
    cwd: str | Path | None = None,
    notify: Callable[[str], None] | None = None,
    progress=None,
    gpus_per_trial: int | None = None,
    gpu_devices: Sequence[str] | str | None = None,
    prune: str | None = None,
    retries: int | None = None,
    retry_failed: bool | None = None,
    tracking: str | None = None,
) -> SweepResult:
    """Run a sweep (or, with `resume=SWEEP_ID`, what an earlier one still lacks) and wait for it.

    `parameters` maps each name to a fixed value or a space: "0.1,0.5,1.0", "range(0,1,0.25)",
    "choice(a,b)", "uniform(0,1)", "loguniform(1e-4,1)", "int(uniform(10,200))". `config` is a
    sweep.yaml; arguments given here win over it. Returns the SweepResult: `sweep_id`,
    `parent_run_id`, `trials`, `best`, `status` (FINISHED when every trial finished).
    `gpus_per_trial`: each trial gets that many GPUs no other trial holds, out of `gpu_devices`
    (default: those CUDA_VISIBLE_DEVICES or `nvidia-smi -L` name), as runner.gpus hands them out.
    `prune`: "median" or "asha" stops trials whose `metric`, logged with a step, falls behind
    (runner.sweeps.prune); they end KILLED, counted as pruned. `retries`: a trial whose cluster job
    the infrastructure ended (a lost node, a preemption), or with `retry_failed` one that failed,
    runs again as a new run, up to that many times (runner.retries). `tracking`: "offline" records the
    sweep on this machine for `mlproject runs sync`; "auto" (default) so too when its server cannot
    be reached; "online" never (runner.tracking.offline)."""
    from runner.errors import RunnerError

    try:
        return run_sweep(uri, parameters, entry_point, version, method, max_runs, seed, max_parallel, metric, goal,
                         max_failures, backend, backend_config, env_manager, experiment_name, experiment_id,
                         config=config, resume=resume, cwd=cwd, notify=notify, progress=progress,
                         gpus_per_trial=gpus_per_trial, gpu_devices=gpu_devices, prune=prune, retries=retries,
                         retry_failed=retry_failed, tracking=tracking)
    except RunnerError as exc:
        raise exc.for_python() from None


def run_sweep(uri, parameters, entry_point, version, method, max_runs, seed, max_parallel, metric, goal, max_failures,
              backend, backend_config, env_manager, experiment_name, experiment_id, *, config, resume, cwd, notify,
              progress, gpus_per_trial=None, gpu_devices=None, prune=None, retries=None,
              retry_failed=None, tracking=None) -> SweepResult:
    """`sweep()` for the CLI too: its errors keep the command line's hints."""
    from runner.sweeps import driver

    notify = notify or _log
    if resume is not None:
        return driver.resume(resume, notify=notify, progress=progress)
    fields: dict[str, Any] = load_config(config) if config is not None else {}
    given = {"entry_point": entry_point, "version": version, "method": method, "max_runs": max_runs, "seed": seed,
             "max_parallel": max_parallel, "metric": metric, "goal": goal, "max_failures": max_failures,
             "backend": backend, "backend_config": backend_config, "env_manager": env_manager,
             "experiment_name": experiment_name, "experiment_id": experiment_id, "gpus_per_trial": gpus_per_trial,
             "gpu_devices": gpu_devices, "prune": prune, "retries": retries, "retry_failed": retry_failed,
             "tracking": tracking}
    fields.update({k: v for k, v in given.items() if v is not None})
    from runner.gpus import count_given, parse_devices

    fields["gpu_devices"] = parse_devices(fields.get("gpu_devices"))
    fields["gpus_per_trial"] = count_given(fields.get("gpus_per_trial"), fields["gpu_devices"], "--gpus-per-trial")
    fields["parameters"] = {**fields.get("parameters", {}), **dict(parameters or {})}
    fields["uri"] = uri
    fields["cwd"] = str(Path(cwd).absolute() if cwd is not None else Path.cwd())
    return driver.start(driver.SweepRequest(**fields), notify=notify, progress=progress)


def _log(message: str) -> None:
    import logging

    logging.getLogger("runner").info(message)
