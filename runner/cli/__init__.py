"""The `mlproject` command: parse arguments (click), call the API, render. No logic here.

One module per command group (`run`, `sweep`, `project`: validate and lock, `env`, `runs`,
`cache`), what they share in `common`, the group and its error handling in `app`. Shell
completion: `eval "$(_MLPROJECT_COMPLETE=bash_source mlproject)"` (zsh_source, fish_source likewise).
"""
from __future__ import annotations

from runner import startup

startup.hold()  # (first thing, before the commands are imported: see runner.startup)

from runner.cli.app import cli, main  # noqa: E402

__all__ = ["cli", "main"]
