"""Validate project files against the JSON Schemas in `schemas/`.

Validation is exact (jsonschema) but paid once per distinct file content: the
parsed, validated document is cached as JSON under `$MLPROJECT_HOME/specs`. A
cache entry is found by a cheap checksum and used only if it holds the very
same file text and schema text, so it can never answer for a different file.
A warm run therefore imports neither PyYAML's loader chain nor jsonschema
(~60 ms: attrs, referencing, rpds), nor hashlib's OpenSSL, only `json` and `zlib`.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from runner import home
from runner.errors import SpecValidationError

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, Callable, Sequence

SCHEMA_FILES = {
    "mlproject": "mlproject.schema.json",
    "python_env": "python_env.schema.json",
    "conda_env": "conda_env.schema.json",
    "sweep": "sweep.schema.json",
}


@dataclass
class Document:
    data: Any
    text: str
    warnings: list[str] = field(default_factory=list)


def schema_dir() -> Path:
    packaged = Path(__file__).resolve().parent.parent / "schemas"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "schemas"


def _schema_bytes(kind: str) -> bytes:
    return (schema_dir() / SCHEMA_FILES[kind]).read_bytes()


def load_document(
    path: Path,
    kind: str,
    display_name: str,
    fixup: Callable[[Any, str], Any] | None = None,
    lint: Callable[[Any, str, str], list[str]] | None = None,
) -> Document:
    """Parse and validate one YAML file; raise SpecValidationError with file:line.

    `lint(data, text, display_name)` adds warnings the schema cannot express; they are
    cached with the document, so a warm run neither parses nor lints again."""
    text = read_text(path, display_name)
    schema = _schema_bytes(kind).decode()
    checksum = zlib.crc32(schema.encode(), zlib.crc32(text.encode()))
    cache_file = home.home() / "specs" / f"{kind}-{checksum:08x}-{len(text)}.json"
    try:
        cached = json.loads(cache_file.read_bytes())
        if cached["text"] == text and cached["schema"] == schema:
            return Document(cached["data"], text, cached["warnings"])
    except (OSError, ValueError, KeyError):
        pass

    from runner.project.yamlfile import parse

    data = parse(text, display_name)
    if fixup is not None:
        data = fixup(data, text)
    errors, warnings = _validate(json.loads(schema), data, text, display_name)
    if errors:
        more = f" (and {len(errors) - 1} more problem(s); run `mlproject validate` to see all)" if len(errors) > 1 else ""
        raise SpecValidationError(errors[0] + more, hint=_hint_for(kind), problems=errors)
    if lint is not None:
        warnings = warnings + lint(data, text, display_name)
    home.save_json(cache_file, {"text": text, "schema": schema, "data": data, "warnings": warnings})
    return Document(data, text, warnings)


def read_text(path: Path, display_name: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecValidationError(f"{display_name}: not UTF-8 text", hint="save the file as UTF-8") from None
    except OSError as exc:
        raise SpecValidationError(f"{display_name}: cannot read: {exc.strerror}") from None


def _hint_for(kind: str) -> str:
    return f"the format is described in {SCHEMA_FILES[kind]} (schemas/ in the mlproject-runner distribution)"


def _validate(schema: dict, data: Any, text: str, display_name: str) -> tuple[list[str], list[str]]:
    from jsonschema import Draft202012Validator

    from runner.project.yamlfile import line_of

    if data is None:
        data = {}
    validator = Draft202012Validator(schema)
    placed_errors: list[tuple[int, str]] = []
    placed_warnings: list[tuple[int, str]] = []
    for error in validator.iter_errors(data):
        for leaf in _leaves(error):
            path = list(leaf.absolute_path)
            if leaf.validator == "additionalProperties":
                allowed = set(leaf.schema.get("properties", {}))
                for extra in sorted(k for k in leaf.instance if k not in allowed):
                    line = line_of(text, path + [extra], key=True)
                    placed_warnings.append((line, f"{display_name}:{line}: {_dotted(path + [extra])}: unknown key, ignored"))
                continue
            if "propertyNames" in leaf.absolute_schema_path:
                # jsonschema reports a bad key at its parent; point at the key itself.
                line = line_of(text, path + [leaf.instance], key=True)
                message = f"{_short(leaf.instance)} is not a valid name"
            else:
                line = line_of(text, path)
                message = _describe(leaf)
            where = _dotted(path)
            prefix = f"{display_name}:{line}: " + (f"{where}: " if where else "")
            placed_errors.append((line, prefix + message))
    placed_errors.sort(key=lambda item: item[0])
    placed_warnings.sort(key=lambda item: item[0])
    return _unique(m for _, m in placed_errors), _unique(m for _, m in placed_warnings)


def _unique(messages: Any) -> list[str]:
    return list(dict.fromkeys(messages))


def _leaves(error: Any) -> list[Any]:
    """The most specific errors: for anyOf/oneOf, the alternatives' own errors
    when exactly one alternative had the right JSON type."""
    if error.validator in ("anyOf", "oneOf") and error.context:
        by_branch: dict[int, list[Any]] = {}
        for sub in error.context:
            by_branch.setdefault(sub.relative_schema_path[0], []).append(sub)
        # A branch whose own top-level type did not match is the wrong alternative.
        typed = [
            subs for subs in by_branch.values() if not any(s.validator == "type" and not s.relative_path for s in subs)
        ]
        if len(typed) == 1:
            return [leaf for sub in typed[0] for leaf in _leaves(sub)]
    return [error]


def _dotted(path: Sequence[Any]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


_JSON_TYPES = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "nothing (null)",
}


def _type_name(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _describe(error: Any) -> str:
    kind = error.validator
    value = error.instance
    if kind == "enum":
        return f"{_short(value)} is not one of {', '.join(map(str, error.validator_value))}"
    if kind == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        names = " or ".join(str(_SCHEMA_TYPE_NAMES.get(w, w)) for w in wanted if w != "null")
        return f"expected {names}, got {_type_name(value)} {_short(value)}".rstrip()
    if kind == "required":
        missing = [k for k in error.validator_value if isinstance(value, dict) and k not in value]
        said = f"missing required key {', '.join(repr(m) for m in missing)}"
        if list(error.absolute_path) == ["docker_env"] and "image" in missing:  # (MLflow's words first)
            return f"Docker environment specified but no image attribute found ({said})"
        return said
    if kind == "minLength":
        return "must not be empty"
    if kind == "pattern":
        return f"{_short(value)} is not in the expected form"
    if kind in ("anyOf", "oneOf"):
        return f"{_short(value)} is not in any accepted form".lstrip()
    if kind in ("minItems", "maxItems"):
        return f"expected a list of {error.validator_value} items"
    return error.message


_SCHEMA_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "a boolean",
}


def _short(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return ""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
