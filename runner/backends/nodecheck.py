"""What a cluster node's Python offers the runner: run there as
`python -m runner.backends.nodecheck MODULE...` (with only the runner itself shipped), it prints
one line, `mlproject-node-check: {json}`, with the Python version and which of the modules are
missing. Nothing is imported: finding a module's spec says it is installed, at no cost. The
submit side asks for the runner's own needs and every environment manager's (`NODE_NEEDS`)."""
from __future__ import annotations

import importlib.util
import json
import platform
import sys

MARKER = "mlproject-node-check: "
MINIMUM_PYTHON = (3, 9)  # requires-python
CORE = ("click", "yaml", "jsonschema")  # every run needs these (the CLI, project files)
DISTRIBUTIONS = {"yaml": "PyYAML", "rattler": "py-rattler"}  # where a module's pip name differs


def needed(env_manager: str) -> tuple[str, ...]:
    """(The submit side.) What a node building `env_manager`'s environments needs."""
    from runner.envs import manager_module

    return CORE + manager_module(env_manager).NODE_NEEDS


def probed() -> tuple[str, ...]:
    """(The submit side.) What a probe asks of the nodes: the runner's needs under every manager."""
    from runner.envs import all_managers

    return tuple(sorted({*CORE, *(m for manager in all_managers() for m in manager.NODE_NEEDS)}))


def report(modules: list[str]) -> dict:
    return {"python": platform.python_version(), "checked": sorted(modules),
            "missing": [m for m in sorted(modules) if importlib.util.find_spec(m) is None]}


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
    print(MARKER + json.dumps(report(sys.argv[1:] or list(CORE))), flush=True)
