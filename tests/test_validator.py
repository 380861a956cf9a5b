"""The built-in schema validator agrees with the jsonschema package (the reference)."""
from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.project.schema import SCHEMA_FILES, schema_dir
from runner.project.validator import SchemaError, Validator

SCHEMAS = {kind: json.loads((schema_dir() / name).read_text()) for kind, name in SCHEMA_FILES.items()}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False, width=16),
    st.sampled_from(["", "string", "float", "int", "bool", "path", "uri", "flaot", "3.10", "3.1x", "a b", "x=y", "pip", "command", "main"]),
)
KEYS = st.sampled_from([
    "name", "entry_points", "main", "parameters", "command", "type", "default", "conda_env", "python_env",
    "docker_env", "image", "volumes", "environment", "python", "dependencies", "build_dependencies",
    "channels", "pip", "variables", "prefix", "alpha", "a b", "",
])
documents = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=5)),
    max_leaves=25,
)


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=documents)
def test_agrees_with_jsonschema_on_generated_documents(kind, document):
    schema = SCHEMAS[kind]
    reference = jsonschema.Draft202012Validator(schema)
    ours = Validator(schema)
    assert ours.is_valid(document) == reference.is_valid(document)
    ours_paths = {tuple(e.absolute_path) for e in ours.iter_errors(document)}
    reference_paths = {tuple(e.absolute_path) for e in reference.iter_errors(document)}
    assert ours_paths == reference_paths


VALID = {
    "mlproject": {
        "name": "x",
        "python_env": "python_env.yaml",
        "entry_points": {"main": {"parameters": {"a": "float", "b": {"type": "int", "default": 3}}, "command": "x {a}"}},
    },
    "python_env": {"python": "3.10", "build_dependencies": ["pip"], "dependencies": ["six"]},
    "conda_env": {"name": "e", "channels": ["c"], "dependencies": ["python=3.10", {"pip": ["six"]}]},
}


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_known_documents(kind):
    assert Validator(SCHEMAS[kind]).is_valid(VALID[kind])
    assert jsonschema.Draft202012Validator(SCHEMAS[kind]).is_valid(VALID[kind])


def test_schemas_are_valid_2020_12_and_use_only_supported_keywords():
    for schema in SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(schema)
        Validator(schema)  # raises SchemaError on a keyword it does not implement
    with pytest.raises(SchemaError, match="unsupported keyword"):
        Validator({"type": "object", "minProperties": 1})
