"""A small JSON Schema (2020-12) validator for the keywords our schemas use.

Why not the jsonschema package at run time: importing it costs ~60 ms (attrs,
referencing, rpds, format checkers), paid on every first run of a new or
changed MLproject/env file, which is a tenth of a cold environment build. The
schemas in `schemas/` stay the single source of truth; this module refuses a
schema that uses a keyword it does not implement, and the test suite checks
it against the jsonschema package on generated documents.

Errors mirror jsonschema's ValidationError where the formatting code reads
them: `validator`, `validator_value`, `instance`, `schema`, `absolute_path`,
`relative_path`, `absolute_schema_path`, `relative_schema_path`, `context`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterator


SUPPORTED = frozenset(
    {
        "$schema", "$id", "$defs", "$ref", "title", "description", "type", "enum", "const", "properties",
        "additionalProperties", "required", "items", "prefixItems", "minItems", "maxItems", "minLength",
        "pattern", "propertyNames", "anyOf", "oneOf", "if", "then", "else",
    }
)


class SchemaError(Exception):
    """The schema itself uses something this validator does not implement."""


@dataclass
class Issue:
    validator: str
    validator_value: Any
    instance: Any
    schema: dict
    relative_path: tuple = ()
    absolute_path: tuple = ()
    relative_schema_path: tuple = ()
    absolute_schema_path: tuple = ()
    context: list[Issue] = field(default_factory=list)
    message: str = ""


def _place(issue: Issue, path: tuple, schema_path: tuple) -> None:
    """Absolute paths, for the issue and the alternatives' issues inside it."""
    issue.absolute_path = path + issue.relative_path
    issue.absolute_schema_path = schema_path + issue.relative_schema_path
    for inner in issue.context:
        _place(inner, issue.absolute_path, issue.absolute_schema_path)


def _is_type(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and value.is_integer()
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    raise SchemaError(f"unknown type {name!r}")


def _equal(a: Any, b: Any) -> bool:
    # JSON equality: True is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


class Validator:
    def __init__(self, schema: dict):
        self.root = schema
        self._check_schema(schema, ())

    def _check_schema(self, schema: Any, where: tuple) -> None:
        if isinstance(schema, bool):
            return
        if not isinstance(schema, dict):
            raise SchemaError(f"schema at {'/'.join(map(str, where)) or '#'} is not an object")
        unknown = set(schema) - SUPPORTED
        if unknown:
            raise SchemaError(f"unsupported keyword(s) {sorted(unknown)} at {'/'.join(map(str, where)) or '#'}")
        for key in ("additionalProperties", "items", "propertyNames", "if", "then", "else"):
            if key in schema:
                self._check_schema(schema[key], where + (key,))
        for key in ("properties", "$defs"):
            for name, sub in schema.get(key, {}).items():
                self._check_schema(sub, where + (key, name))
        for key in ("anyOf", "oneOf", "prefixItems"):
            for index, sub in enumerate(schema.get(key, ())):
                self._check_schema(sub, where + (key, index))

    def _resolve(self, ref: str) -> dict:
        if not ref.startswith("#/"):
            raise SchemaError(f"only local references are supported, not {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        return node

    def iter_errors(self, instance: Any) -> Iterator[Issue]:
        yield from self._descend(instance, self.root, (), ())

    def is_valid(self, instance: Any) -> bool:
        return next(self.iter_errors(instance), None) is None

    def _descend(self, instance: Any, schema: Any, path: tuple, schema_path: tuple) -> Iterator[Issue]:
        for issue in self._validate(instance, schema):
            _place(issue, path, schema_path)
            yield issue

    def _sub(self, instance: Any, schema: Any, rel_path: tuple, rel_schema: tuple) -> Iterator[Issue]:
        for issue in self._validate(instance, schema):
            issue.relative_path = rel_path + issue.relative_path
            issue.relative_schema_path = rel_schema + issue.relative_schema_path
            yield issue

    def _issue(self, keyword: str, instance: Any, schema: dict, message: str, **extra: Any) -> Issue:
        return Issue(keyword, schema[keyword], instance, schema, relative_schema_path=(keyword,), message=message, **extra)

    def _validate(self, instance: Any, schema: Any) -> Iterator[Issue]:
        if schema is True:
            return
        if schema is False:
            yield Issue("false", False, instance, {}, message="nothing is allowed here")
            return
        if "$ref" in schema:
            yield from self._sub(instance, self._resolve(schema["$ref"]), (), ("$ref",))
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_is_type(instance, t) for t in types):
                yield self._issue("type", instance, schema, f"{instance!r} is not of type {', '.join(map(repr, types))}")
                return  # like jsonschema, other keywords may still apply; they would only repeat this
        if "enum" in schema and not any(_equal(instance, v) for v in schema["enum"]):
            yield self._issue("enum", instance, schema, f"{instance!r} is not one of {schema['enum']!r}")
        if "const" in schema and not _equal(instance, schema["const"]):
            yield self._issue("const", instance, schema, f"{schema['const']!r} was expected")
        if isinstance(instance, str):
            if "minLength" in schema and len(instance) < schema["minLength"]:
                yield self._issue("minLength", instance, schema, f"{instance!r} is too short")
            if "pattern" in schema and not re.search(schema["pattern"], instance):
                yield self._issue("pattern", instance, schema, f"{instance!r} does not match {schema['pattern']!r}")
        if isinstance(instance, list):
            if "minItems" in schema and len(instance) < schema["minItems"]:
                yield self._issue("minItems", instance, schema, f"{instance!r} is too short")
            if "maxItems" in schema and len(instance) > schema["maxItems"]:
                yield self._issue("maxItems", instance, schema, f"{instance!r} is too long")
            prefix = schema.get("prefixItems", ())
            for index, (item, sub) in enumerate(zip(instance, prefix)):
                yield from self._sub(item, sub, (index,), ("prefixItems", index))
            if "items" in schema:
                for index in range(len(prefix), len(instance)):
                    yield from self._sub(instance[index], schema["items"], (index,), ("items",))
        if isinstance(instance, dict):
            for name in schema.get("required", ()):
                if name not in instance:
                    yield self._issue("required", instance, schema, f"{name!r} is a required property")
            properties = schema.get("properties", {})
            for name, sub in properties.items():
                if name in instance:
                    yield from self._sub(instance[name], sub, (name,), ("properties", name))
            if "additionalProperties" in schema:
                extras = [k for k in instance if k not in properties]
                extra_schema = schema["additionalProperties"]
                if extra_schema is False and extras:
                    yield self._issue("additionalProperties", instance, schema, f"additional properties {extras!r} are not allowed")
                elif extra_schema is not False:
                    for name in extras:
                        yield from self._sub(instance[name], extra_schema, (name,), ("additionalProperties",))
            if "propertyNames" in schema:
                for name in instance:
                    yield from self._sub(name, schema["propertyNames"], (), ("propertyNames",))
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                context: list[Issue] = []
                passed = 0
                for index, sub in enumerate(schema[keyword]):
                    found = list(self._sub(instance, sub, (), (index,)))
                    if found:
                        context.extend(found)
                    else:
                        passed += 1
                if passed == 0 or keyword == "oneOf" and passed > 1:
                    yield self._issue(keyword, instance, schema, f"{instance!r} is not valid under {keyword}", context=context)
        if "if" in schema:
            if next(iter(self._validate(instance, schema["if"])), None) is None:
                if "then" in schema:
                    yield from self._sub(instance, schema["then"], (), ("then",))
            elif "else" in schema:
                yield from self._sub(instance, schema["else"], (), ("else",))
