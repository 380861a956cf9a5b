"""What a cluster node's Python offers the runner: run there as `python -m runner.backends.nodecheck`
(with only the runner itself shipped), it prints one line, `mlproject-node-check: {json}`, with
the Python version and which of the runner's dependencies are missing. Nothing is imported:
finding a module's spec says it is installed, at no cost."""
from __future__ import annotations

import importlib.util
import json
import platform

MARKER = "mlproject-node-check: "
MINIMUM_PYTHON = (3, 9)  # requires-python
CORE = ("click", "yaml", "jsonschema")  # every run needs these (the CLI, project files)
# What each environment manager needs on the node that builds the environment.
FOR_MANAGER = {"uv": ("uv",), "virtualenv": ("virtualenv",), "conda": ("rattler",), "docker": ("docker",), "local": ()}
DISTRIBUTIONS = {"yaml": "PyYAML", "rattler": "py-rattler"}  # where a module's pip name differs


def needed(env_manager: str) -> tuple[str, ...]:
    return CORE + FOR_MANAGER.get(env_manager, ())


def report() -> dict:
    modules = sorted({m for names in FOR_MANAGER.values() for m in names} | set(CORE))
    return {"python": platform.python_version(), "missing": [m for m in modules if importlib.util.find_spec(m) is None]}


def read(log: str) -> dict | None:
    """The report in a job's log, or None."""
    for line in log.splitlines():
        if line.startswith(MARKER):
            try:
                return json.loads(line[len(MARKER):])
            except ValueError:
                return None
    return None


if __name__ == "__main__":
    print(MARKER + json.dumps(report()), flush=True)
