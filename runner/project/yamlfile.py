"""YAML reading that reports problems as `file:line`, never as a traceback.

Values are loaded with the C loader when available. Timestamps stay strings
(MLflow passes `default: 2020-01-01` through as text, and the parsed document
must survive a JSON round trip for the spec cache).
"""
from __future__ import annotations


import yaml

from runner.errors import SpecValidationError

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, Sequence

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc, valid-type]
    pass


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _Base.yaml_implicit_resolvers.items()
}


def parse(text: str, display_name: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        # The context mark says where the broken construct began (an unclosed
        # quote, a bracket); the problem mark is where the parser gave up.
        start = exc.context_mark or exc.problem_mark
        line = start.line + 1 if start else 1
        problem = exc.problem or "invalid YAML"
        if exc.context and exc.problem_mark:
            problem = f"{exc.context}: {problem} (line {exc.problem_mark.line + 1})"
        raise SpecValidationError(
            f"{display_name}:{line}: invalid YAML: {problem}",
            hint="check the indentation and quoting around that line",
        ) from None
    except yaml.YAMLError as exc:
        # A reader error (a control character, bad encoding) has no mark, only a position.
        position = getattr(exc, "position", None)
        line = f":{text.count(chr(10), 0, position) + 1}" if isinstance(position, int) else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise SpecValidationError(f"{display_name}{line}: invalid YAML: {first}",
                                  hint="the file must be UTF-8 text without control characters") from None


def _node_at(text: str, path: Sequence[Any]) -> tuple[yaml.Node | None, yaml.Node | None]:
    """The node at `path` and the mapping key node that names it (if any)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None, None
    key_node = None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(part):
                    key_node, node = k, v
                    break
            else:
                return node, key_node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            key_node, node = None, node.value[part]
        else:
            return node, key_node
    return node, key_node


def line_of(text: str, path: Sequence[Any], *, key: bool = False) -> int:
    """1-based line of the value at `path` (or of its key when `key`)."""
    node, key_node = _node_at(text, path)
    chosen = key_node if key and key_node is not None else node
    if chosen is None:
        return 1
    return chosen.start_mark.line + 1


def scalar_text(text: str, path: Sequence[Any]) -> str | None:
    """The literal text of a scalar, e.g. `3.10` where YAML would load 3.1."""
    node, _ = _node_at(text, path)
    if isinstance(node, yaml.ScalarNode):
        return node.value
    return None
