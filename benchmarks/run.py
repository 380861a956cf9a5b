"""`make bench`: mlproject-runner side by side with `mlflow run` and the bare command.

    python benchmarks/run.py [--repeat N] [--mlflow-repeat N] [--no-mlflow]

Writes the tables to benchmarks/results/latest.md and prints them.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BENCH_DIR, Timing, measure, mlflow_python, mlproject_command, table  # noqa: E402

TRIVIAL_MLPROJECT = """
name: trivial
entry_points:
  main:
    command: "true"
  python:
    command: "python -c pass"
"""


def trivial_local(args: argparse.Namespace, work: Path) -> str:
    """Warm overhead of `mlproject run` on a trivial local project (target: <= 100 ms, <= 60 MB)."""
    project = work / "trivial"
    project.mkdir()
    (project / "MLproject").write_text(textwrap.dedent(TRIVIAL_MLPROJECT).lstrip())
    env = {**os.environ, "MLPROJECT_HOME": str(work / "home"), "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}
    mlflow_py = None if args.no_mlflow else mlflow_python()
    out = []
    for entry, bare in (("main", ["bash", "-c", "true"]), ("python", ["bash", "-c", "python -c pass"])):
        ours = mlproject_command() + ["run", str(project), "-e", entry, "--env-manager", "local"]
        measure("warm-up", ours, 2, work, env)
        rows: list[Timing] = []
        baseline = measure(f"bare command (`{'true' if entry == 'main' else 'python -c pass'}`)", bare, args.repeat, project, env)
        rows.append(baseline)
        rows.append(measure("mlproject run --env-manager local", ours, args.repeat, work, env))
        if mlflow_py is not None:
            theirs = [str(mlflow_py), "-m", "mlflow", "run", str(project), "-e", entry, "--env-manager", "local"]
            measure("warm-up", theirs, 1, work, env)
            rows.append(measure("mlflow run --env-manager local", theirs, args.mlflow_repeat, work, env))
        overhead = (rows[1].median - baseline.median) * 1000
        verdict = "meets" if overhead <= 100 and rows[1].peak_rss_mb <= 60 else "MISSES"
        note = f"Target: overhead <= 100 ms and peak RSS <= 60 MB. Measured {overhead:.1f} ms, {rows[1].peak_rss_mb:.1f} MB: {verdict}."
        out.append(table(f"Trivial local project, entry point `{entry}`", rows, baseline, note))
    return "\n".join(out)


SCENARIOS = {"trivial_local": trivial_local}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--mlflow-repeat", type=int, default=5)
    parser.add_argument("--no-mlflow", action="store_true", help="skip the mlflow comparison")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    args = parser.parse_args()
    sections = [f"# mlproject-runner benchmarks\n\nMachine: {os.cpu_count()} cores. Repeats: {args.repeat} (mlflow: {args.mlflow_repeat}).\n"]
    with tempfile.TemporaryDirectory(prefix="mlproject-bench-") as tmp:
        for name in args.only or SCENARIOS:
            work = Path(tmp) / name
            work.mkdir()
            print(f"== {name}", file=sys.stderr)
            sections.append(SCENARIOS[name](args, work))
    report = "\n".join(sections)
    results = BENCH_DIR / "results"
    results.mkdir(exist_ok=True)
    (results / "latest.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
