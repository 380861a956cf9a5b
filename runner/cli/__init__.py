"""The `mlproject` command: parse arguments (click), call the API, render. No logic here.

One module per command group (`run`, `sweep`, `project`: validate and lock, `env`, `runs`,
`cache`), what they share in `common`, the group with its error handling in `app` (`cli`,
`main`: the console script's entry point, reached through this package). Shell completion:
`eval "$(_MLPROJECT_COMPLETE=bash_source mlproject)"` (zsh_source, fish_source likewise).
"""
from __future__ import annotations

from runner import startup

startup.hold()  # (first thing, before the commands are imported: see runner.startup)


def __getattr__(name: str):
    # `from runner.cli import main` (the console script) imports the commands only then, and
    # the package does not import its own modules back (no circle).
    if name in ("cli", "main"):
        from runner.cli import app

        return getattr(app, name)
    raise AttributeError(f"module 'runner.cli' has no attribute {name!r}")
