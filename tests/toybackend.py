"""A toy backend, added as the README's "Adding a backend" shows: it notes that it took the run,
then runs it here through the local backend."""
from __future__ import annotations

from runner.backends import local

TAKEN = "toy backend: taking run"


def check(config, request):
    return dict(config)


def check_plan(state) -> None:
    pass


def submit(state, on_submitted):
    state.notify(f"{TAKEN} of {state.plan.invocation.entry_point}")
    return local.submit(state, on_submitted)
