"""A sweep's results for people and tools: the table best first (`sweep show`, the end of a
sweep), trials.csv, and the plot of the metric over each swept parameter."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.sweeps.state import Trial


def shown(parameters: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in parameters.items())


def ranked(trials: list[Trial], goal: str | None) -> list[Trial]:
    """Trials with a metric first, best first (by `goal`); then the others in their order."""
    with_metric = [t for t in trials if t.metric is not None]
    others = [t for t in trials if t.metric is None]
    with_metric.sort(key=lambda t: t.metric, reverse=goal == "maximize")  # type: ignore[arg-type,return-value]
    return with_metric + others


def table(trials: list[Trial], metric: str | None, goal: str) -> list[str]:
    """The trials for a person, best first."""
    from runner.progress import human_duration

    rows = [("#", "STATUS", (metric or "METRIC").upper(), "DURATION", "PARAMETERS", "RUN ID")]
    for trial in ranked(trials, goal):
        rows.append((str(trial.number), trial.shown_status, "" if trial.metric is None else f"{trial.metric:g}",
                     "" if trial.duration is None else human_duration(trial.duration), shown(trial.parameters),
                     trial.run_id or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def write_csv(path: Path, trials: list[Trial], metric: str | None, goal: str) -> None:
    names = sorted({name for trial in trials for name in trial.parameters})
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", "status", metric or "metric", "duration_s", *names, "run_id"])
        for trial in ranked(trials, goal):
            writer.writerow([trial.number, trial.shown_status, "" if trial.metric is None else trial.metric,
                             "" if trial.duration is None else f"{trial.duration:.3f}",
                             *(trial.parameters.get(name, "") for name in names), trial.run_id or ""])


def plot(trials: list[Trial], metric: str | None, goal: str, parameters: list[str], title: str,
         directory: Path, path: Path | None = None) -> tuple[Path | None, str | None]:
    """The metric over the trials (by number) and against each swept parameter (of `parameters`,
    those whose trials differ), one panel each, as `path` or directory/METRIC.png (matplotlib,
    when installed): (the file, a note)."""
    points = [t for t in trials if t.metric is not None]
    swept = [name for name in parameters if len({t.parameters.get(name) for t in points}) > 1]
    if not metric or not points:
        return None, None
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: a file
        import matplotlib.pyplot as plt
    except ImportError:
        return None, "note: matplotlib is not installed: the sweep's plot was skipped"
    figure, axes = plt.subplots(1, 1 + len(swept), figsize=(4 * (1 + len(swept)), 3.2), squeeze=False)
    axes[0][0].scatter([t.number for t in points], [t.metric for t in points], s=8 if len(points) > 200 else 18)
    axes[0][0].set_xlabel("trial")
    axes[0][0].set_ylabel(metric)
    for axis, name in zip(axes[0][1:], swept):
        values = [t.parameters[name] for t in points]
        try:
            xs: list = [float(v) for v in values]
        except ValueError:
            xs = values  # categorical: one column per value
        axis.scatter(xs, [t.metric for t in points], s=18)
        axis.set_xlabel(name)
        axis.set_ylabel(metric)
    figure.suptitle(f"{title}: {metric} ({goal})")
    figure.tight_layout()
    path = path or directory / f"{_safe(metric)}.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path, None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "metric"
