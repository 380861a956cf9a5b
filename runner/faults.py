"""Named phases of a run where a test can strike deterministically.

`MLPROJECT_FAULT_AT=PHASE:ACTION[,PHASE:ACTION...]` makes the runner strike itself when it reaches PHASE:
`SIGINT`, `SIGINT*2` (twice, 50 ms apart), `SIGTERM`, `SIGHUP`, `SIGKILL`, `pause` (say so
on stderr and sleep, so that a test strikes from outside while the runner waits there), or `hold`
(say so and wait, handling signals as they come, until the file named by `MLPROJECT_FAULT_GO`
exists, then go on: a test changes the world, fills a disk or signals, and lets the runner meet
it at that instant). The fault
campaign (`python -m tests.chaos`) strikes at random instants; each violation it finds is replayed
by a regression test that strikes at the phase it named through this hook. Unset, as in any real
use, a checkpoint costs one lookup in the environment.
"""
from __future__ import annotations

import os

VARIABLE = "MLPROJECT_FAULT_AT"
GO_VARIABLE = "MLPROJECT_FAULT_GO"


def checkpoint(phase: str) -> None:
    wanted = os.environ.get(VARIABLE)
    if not wanted:
        return
    for item in wanted.split(","):  # (several phases: a strike, then another inside its handling)
        name, _, action = item.partition(":")
        if name == phase:
            strike(action or "pause", phase)


def strike(action: str, phase: str) -> None:
    import signal
    import time

    if action == "pause":
        os.write(2, f"fault: paused at {phase}\n".encode())
        time.sleep(3600)
        return
    if action == "hold":
        go = os.environ.get(GO_VARIABLE, "")
        os.write(2, f"fault: held at {phase}\n".encode())
        deadline = time.monotonic() + 600
        while go and not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)  # (a handler that records a signal and returns lets the wait go on)
        return
    name, _, times = action.partition("*")
    for number in range(int(times or 1)):
        if number:
            time.sleep(0.05)
        os.kill(os.getpid(), getattr(signal, name))
