"""`mlproject sweep`: start (or resume) a sweep, show one, list them."""
from __future__ import annotations

import signal
from pathlib import Path

import click

from runner import startup
from runner.cli.common import (
    ENV_MANAGERS, Group, Interrupted, complete_dirs, complete_entry_points, complete_managers, debug_option,
    interrupt_on_signals, interrupted_signal, out, retry_options, say, where_options,
)
from runner.seams import SEARCHES
from runner.status import RunStatus

class _SweepGroup(Group):
    """`mlproject sweep URI ...` starts a sweep; `sweep show ID` and `sweep list` look at sweeps."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["start", *args]
        return super().parse_args(ctx, args)

    def format_options(self, ctx, formatter) -> None:
        """`mlproject sweep --help` shows what `mlproject sweep URI` takes (sweep start's options)."""
        start = self.commands["start"]
        records = [record for param in start.get_params(ctx)
                   if isinstance(param, click.Option) and (record := param.get_help_record(ctx)) is not None]
        with formatter.section("Options of `mlproject sweep URI` (also `sweep start URI`)"):
            formatter.write_dl(records)
        self.format_commands(ctx, formatter)


@click.group(cls=_SweepGroup, help="many runs of a project over a parameter space (`mlproject sweep URI -P a=1,2,3`)",
           short_help="many runs of a project over a parameter space",
           options_metavar="[URI] [OPTIONS]", subcommand_metavar="| COMMAND [ARGS]...")
def sweep() -> None:
    pass


@sweep.command("start", help="run a sweep: every trial a child run of one parent run")
@click.argument("uri", required=False, shell_complete=complete_dirs)
@click.option("-e", "--entry-point", default=None, help="entry point to run (default main)",
              shell_complete=complete_entry_points)
@click.option("-P", "--param-list", multiple=True, metavar="NAME=VALUES",
              help="a,b,c | range(start,stop[,step]) | choice(a,b) | uniform(a,b) | loguniform(a,b) | int(...) | a fixed value")
@click.option("-v", "--version", default=None, help="git branch, tag or commit")
@click.option("--env-manager", default=None, metavar="|".join(ENV_MANAGERS), shell_complete=complete_managers)
@click.option("--method", type=click.Choice(list(SEARCHES)), default=None,
              help="grid (default), random, or optuna (TPE; needs mlproject-runner[optuna])")
@click.option("--max-runs", type=int, default=None, help="random: trials (default 10); grid: the first N points")
@click.option("--seed", type=int, default=None, help="random: the same seed draws the same trials")
@click.option("--max-parallel", type=int, default=None, help="trials at once (default: the number of cores)")
@click.option("--metric", default=None, help="ranks the trials (the last value each logged under this name)")
@click.option("--goal", type=click.Choice(["minimize", "maximize"]), default=None, help="default minimize")
@click.option("--max-failures", type=int, default=None, help="start no more trials once more than N failed")
@click.option("--prune", type=click.Choice(["median", "asha"]), default=None,
              help="stop trials whose --metric (logged with a step) falls behind; asha needs --method optuna")
@click.option("--gpus", "gpu_devices", default=None, metavar="LIST",
              help="the GPUs to share out, e.g. 0,1,2,3 (default: CUDA_VISIBLE_DEVICES's or nvidia-smi's)")
@click.option("--gpus-per-trial", type=int, default=None, metavar="K",
              help="each trial gets K GPUs no other trial holds (default: 1 with --gpus)")
@retry_options
@where_options
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False), help="a sweep.yaml")
@click.option("--resume", default=None, metavar="SWEEP_ID", help="run what an interrupted sweep still lacks")
@debug_option
def sweep_start(uri: str | None, entry_point: str | None, param_list: tuple[str, ...], version: str | None,
                env_manager: str | None, method: str | None, max_runs: int | None, seed: int | None,
                max_parallel: int | None, metric: str | None, goal: str | None, max_failures: int | None,
                backend: str, backend_config: str | None, experiment_name: str | None, experiment_id: str | None,
                config_file: str | None, resume: str | None, prune: str | None, gpu_devices: str | None,
                gpus_per_trial: int | None, retries: int | None, retry_failed: bool | None, tracking: str | None) -> int:
    from runner import api
    from runner.progress import Progress
    from runner.sweeps import run_sweep
    from runner.sweeps.report import table

    if (uri is None) == (resume is None):
        raise click.UsageError("give a project URI to start a sweep, or --resume SWEEP_ID (not both)")
    # Ctrl-C, SIGTERM and SIGHUP stop the sweep: its running trials are cancelled and recorded
    # KILLED, and so is the parent run.
    try:
        interrupt_on_signals()  # (inside the `try`: the first handler set may raise before the others are)
        result = run_sweep(uri or ".", api.cli_parameters(param_list), entry_point, version, method, max_runs, seed,
                           max_parallel, metric, goal, max_failures, backend, backend_config, env_manager,
                           experiment_name, experiment_id, config=config_file, resume=resume, cwd=None, notify=say,
                           progress=Progress(), gpus_per_trial=gpus_per_trial, gpu_devices=gpu_devices,
                           prune=prune, retries=retries, retry_failed=retry_failed, tracking=tracking)
    except (KeyboardInterrupt, Interrupted) as exc:
        startup.ignore()  # the sweep's runs are ended: nothing more to stop while it says so
        number = interrupted_signal(exc)
        sweep_id = getattr(exc, "sweep_id", None)
        resume_with = f"mlproject sweep --resume {sweep_id}" if sweep_id else "mlproject sweep --resume ID (see `mlproject sweep list`)"
        say(f"sweep interrupted by {signal.Signals(number).name}: its running trials and its parent run were "
             f"recorded as KILLED; run the rest with: {resume_with}")
        return 128 + number
    for line in table(result.trials, result.metric, result.goal):
        out(line)
    for note in result.notes:
        say(note)
    finished = sum(t.status == RunStatus.FINISHED for t in result.trials)
    pruned = sum(t.pruned_at is not None for t in result.trials)
    best = (f"; best: trial {result.best.number}, {result.metric}={result.best.metric:g} (run {result.best.run_id})"
            if result.best else "")
    say(f"=== Sweep {result.sweep_id} {result.status.lower()}: {finished}/{len(result.trials)} trials finished"
         f"{f', {pruned} pruned' if pruned else ''}{best}; "
         f"parent run {result.parent_run_id} ===")
    return 0 if result.succeeded else 1


@sweep.command("show", help="a sweep's trials, best first")
@click.argument("sweep_id")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PNG",
              help="also write a plot: the metric over the trials and against each swept parameter")
@debug_option
def sweep_show(sweep_id: str, plot_path: Path | None) -> int:
    from runner.sweeps.driver import find
    from runner.sweeps.report import table

    record = find(sweep_id)
    request = record.request
    out(f"sweep {record.id}: {request['method']} over {', '.join(f'{k}={v}' for k, v in request['parameters'].items())}")
    out(f"project {request['uri']} (entry point {request['entry_point']}); parent run {record.parent_run_id}")
    for line in table(record.trials, request.get("metric"), request.get("goal") or "minimize"):
        out(line)
    if plot_path is not None:
        _write_plot(record, plot_path)
    return 0


def _write_plot(record, path: Path) -> None:
    from runner.errors import UsageError
    from runner.sweeps.report import plot

    request = record.request
    metric = request.get("metric")
    if not metric or not any(trial.metric is not None for trial in record.trials):
        raise UsageError(f"sweep {record.id} has no {'values of its metric' if metric else 'metric'} to plot",
                         hint="a sweep with --metric NAME whose trials log NAME to MLflow has")
    written, note = plot(record.trials, metric, request.get("goal") or "minimize", list(request["parameters"]),
                         f"sweep {record.id}", path.parent, path)
    if written is None:
        raise UsageError(note.removeprefix("note: ") if note else "nothing to plot",
                         hint="pip install matplotlib")
    say(f"plot written to {written}")


@sweep.command("list", help="recent sweeps")
@click.option("--limit", type=int, default=20, show_default=True)
@debug_option
def sweep_list(limit: int) -> int:
    import time

    from runner.sweeps.state import SweepStore
    from runner.tracking.ledger import Ledger

    ledger = Ledger()
    try:
        sweeps = SweepStore(ledger).list(limit)
    finally:
        ledger.close()
    out(f"{'SWEEP ID':<14}{'CREATED':<21}{'METHOD':<8}{'TRIALS':>8}{'DONE':>6}  PROJECT")
    for record in sweeps:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        done = sum(t.done for t in record.trials)
        out(f"{record.id:<14}{created:<21}{record.request['method']:<8}{len(record.trials):>8}{done:>6}  "
             f"{record.request['uri']}")
    return 0
