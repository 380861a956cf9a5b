"""The house's shape, read from the source: no import circles between runner's modules, and no
import running back up the layers (a lower layer never imports a higher one, even inside a
function). Unit tier."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

RUNNER = Path(__file__).resolve().parents[1] / "runner"
# Higher imports lower (or its own layer), never the reverse. Unlisted modules (errors, home,
# status, store, filelock, progress, ...) are the ground floor, 0.
LAYERS = {
    "runner.cli": 7, "runner.mlflow_plugin": 7, "runner.keeper_process": 7,
    "runner.sweeps": 6,
    "runner.api": 5, "runner.keeper": 5, "runner.validate": 5,
    "runner.reproduce": 4, "runner.retries": 4,
    "runner.backends": 3,
    "runner.request": 2,
    "runner.launch": 1, "runner.envs": 1, "runner.sources": 1, "runner.tracking": 1, "runner.project": 1,
}
# The package's facade (runner.run, ...), `python -m runner`, and the registry whose loaders
# import each implementation when it is used: above every layer by design.
ROOTS = {"runner", "runner.__main__", "runner.seams"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in RUNNER.rglob("*.py"):
        parts = list(path.relative_to(RUNNER.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 1, -1):
        if ".".join(parts[:end]) in LAYERS:
            return LAYERS[".".join(parts[:end])]
    return 0


def _imports(path: Path, everywhere: bool) -> list[tuple[str, int]]:
    """(module, line) of every `runner` import; `everywhere`: also inside functions; never the
    annotations-only ones under `if TYPE_CHECKING:`."""
    found: list[tuple[str, int]] = []

    def visit(nodes) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.extend((alias.name, node.lineno) for alias in node.names if alias.name.startswith("runner"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("runner"):
                found.append((node.module, node.lineno))
                found.extend((f"{node.module}.{alias.name}", node.lineno) for alias in node.names)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not everywhere:
                continue
            visit(list(ast.iter_child_nodes(node)))

    visit(ast.parse(path.read_text()).body)
    return found


def test_no_import_runs_back_up_the_layers():
    wrong = []
    for module, path in _modules().items():
        if module in ROOTS:
            continue
        for imported, line in _imports(path, everywhere=True):
            if _layer(imported) > _layer(module):
                wrong.append(f"{path.relative_to(RUNNER.parent)}:{line}: {module} imports {imported}")
    assert wrong == []


def test_no_circle_among_module_level_imports():
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {name for name, _ in _imports(path, everywhere=False) if name in modules and name != module}
        for name in list(targets):  # importing a submodule imports its packages first
            parts = name.split(".")
            targets.update(".".join(parts[:end]) for end in range(2, len(parts))
                           if not module.startswith(".".join(parts[:end]) + "."))
        graph[module] = targets - {module}
    circles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                walk(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert circles == []
