"""`make try-slurm` / `make try-ray`: the two-node clusters the tests start, kept up for a user
to try the slurm and ray backends on, with the settings to pass printed; Ctrl-C stops them.

    python tests/trycluster.py slurm|ray
"""
from __future__ import annotations

import json
import signal
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("slurm", "ray"):
        print("usage: python tests/trycluster.py slurm|ray", file=sys.stderr)
        return 2
    kind = argv[0]
    if kind == "slurm":
        from slurmcluster import SlurmCluster

        cluster = SlurmCluster()
    else:
        from raycluster import RayCluster

        cluster = RayCluster()
    started = time.monotonic()
    print(f"== starting a two-node {kind} cluster on this machine ...", flush=True)
    try:
        cluster.start()
    except (AssertionError, RuntimeError) as exc:
        print(f"error: the {kind} cluster did not start: {exc}", file=sys.stderr)
        return 1
    stop = []
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda number, _frame: stop.append(number))
    try:
        print(f"== started in {time.monotonic() - started:.1f} s; in another shell:\n", flush=True)
        if kind == "slurm":
            print(f"    export SLURM_CONF={cluster.conf}")
            config = {"partition": "debug", "time": "10"}
            print(f"    mlproject run ./project -b slurm -c '{json.dumps(config)}'")
            print("    sinfo; squeue                      # the nodes n1 and n2, and the queue")
        else:
            config = {"address": cluster.address}
            print(f"    mlproject run ./project -b ray -c '{json.dumps(config)}'")
            print(f"    (or export RAY_ADDRESS={cluster.address} and leave out -c)")
            print(f"    the dashboard: {cluster.address}")
        print("\nCtrl-C here stops the cluster and removes its files.", flush=True)
        while not stop:
            time.sleep(0.5)
    finally:
        print(f"\n== stopping the {kind} cluster ...", flush=True)
        cluster.stop()
        print("== stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
