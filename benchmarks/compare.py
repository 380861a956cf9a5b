"""Before and after a change, taken in turns: the warm path of two checkouts on one machine.

    python benchmarks/compare.py BEFORE_CHECKOUT AFTER_CHECKOUT [--rounds N]

Each checkout needs its own `.venv` (`make setup` in it). Both are timed in turns
(untracked, an existing sqlite store, a REST server), so that the drift of a shared
machine moves both alike; the medians and their differences are printed.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import start_mlflow_server  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    for checkout in (args.before, args.after):
        subprocess.run([str(checkout / ".venv" / "bin" / "python"), "-m", "compileall", "-q", str(checkout / "runner")],
                       check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="mlproject-compare-") as tmp:
        work = Path(tmp)
        project = work / "project"
        project.mkdir()
        (project / "MLproject").write_text('name: t\nentry_points:\n  main:\n    command: "true"\n')
        started = start_mlflow_server(work)
        if started is None:
            raise SystemExit("needs the mlflow comparison environment (see benchmarks/harness.py)")
        server, url = started
        try:
            modes = {
                "untracked": {"MLPROJECT_NO_TRACKING": "1"},
                "sqlite": {"MLFLOW_TRACKING_URI": f"sqlite:///{work}/store.db"},
                "rest": {"MLFLOW_TRACKING_URI": url},
            }
            sides = {"before": args.before, "after": args.after}
            timings = {(side, mode): [] for side in sides for mode in modes}
            for side, checkout in sides.items():
                for mode in modes:  # warm-up: creates the stores and the parse cache
                    _run(checkout, project, work, side, modes[mode])
            for _ in range(args.rounds):
                for mode, env in modes.items():
                    for side, checkout in sides.items():
                        timings[(side, mode)].append(_run(checkout, project, work, side, env))
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait()
    median = {key: statistics.median(values) * 1000 for key, values in timings.items()}
    print("| run | before | after | change |\n|---|---:|---:|---:|")
    for mode in modes:
        before, after = median[("before", mode)], median[("after", mode)]
        print(f"| {mode} | {before:.1f} ms | {after:.1f} ms | {after - before:+.1f} ms |")
    return 0


def _run(checkout: Path, project: Path, work: Path, side: str, extra_env: dict[str, str]) -> float:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(extra_env, MLPROJECT_HOME=str(work / f"home-{side}"))
    started = time.perf_counter()
    done = subprocess.run([str(checkout / ".venv" / "bin" / "mlproject"), "run", str(project), "--env-manager", "local"],
                          env=env, cwd=work, capture_output=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{side} failed: {done.stderr.decode(errors='replace')[-1000:]}")
    return elapsed


if __name__ == "__main__":
    sys.exit(main())
