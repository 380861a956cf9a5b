"""The fault campaign's short version (the whole one is `make chaos`): at least 100 real runs of
the local kinds, each struck once at a random instant of its life, with 0 violations allowed."""
from __future__ import annotations

import os

import pytest


@pytest.mark.chaos
def test_random_strikes_break_no_invariant(mlflow_server):
    import chaos

    seed = int(os.environ.get("MLPROJECT_CHAOS_SEED", "20261204"))
    runs = int(os.environ.get("MLPROJECT_CHAOS_RUNS", "104"))
    # The local kinds and the tracking server's stop and restart (on the suite's own server); the
    # cluster, Docker and conda kinds start their own components and are `make chaos`'s.
    report = chaos.campaign(runs, seed, workers=2, kinds=(*chaos.QUICK_KINDS, "server"), server=mlflow_server,
                            say=print)
    print("\n".join(report.table()))
    print(f"chaos: seed {seed}: {len(report.outcomes)} strikes in {report.seconds:.0f} s, "
          f"{sum(o.landed for o in report.outcomes)} on a live run")
    assert len(report.outcomes) == runs
    assert sum(o.landed for o in report.outcomes) >= runs * 0.75, "too few strikes landed on a live run"
    assert not report.violations, "\n".join(
        f"--replay {o.strike.replay}: {o.strike.kind} {o.strike.fault} at {o.at:.2f} s: " + " | ".join(o.violations)
        for o in report.violations)
