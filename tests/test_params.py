"""Parameter types, coercion, defaults, and safe command rendering."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from runner.errors import ParameterError, ProjectError, UsageError
from runner.project.params import check_command, parse_assignments, resolve
from runner.project.spec import load_project

pytestmark = pytest.mark.unit  # (the unit tier: `make unit`)

TYPED = """
entry_points:
  main:
    parameters:
      s: {type: string, default: hello}
      f: {type: float, default: 0.5}
      i: {type: int, default: 3}
      b: {type: bool, default: false}
      p: {type: path, default: data.csv}
      u: {type: uri, default: "s3://bucket/key"}
    command: "prog {s} {f} {i} {b} {p} {u}"
"""


@pytest.fixture
def typed_project(make_project):
    return load_project(make_project(TYPED, {"data.csv": "x\n"}))


def test_defaults(typed_project):
    inv = resolve(typed_project, "main", {}, typed_project.directory)
    assert inv.values == {
        "s": "hello", "f": 0.5, "i": 3, "b": False,
        "p": str(typed_project.directory / "data.csv"), "u": "s3://bucket/key",
    }
    assert inv.command == f"prog hello 0.5 3 False {typed_project.directory / 'data.csv'} s3://bucket/key"


@pytest.mark.parametrize(
    "name,text,value",
    [
        ("f", "1e-3", 0.001), ("f", "2", 2.0), ("f", "-0.25", -0.25),
        ("i", "42", 42), ("i", "-7", -7),
        ("b", "true", True), ("b", "False", False), ("b", "1", True), ("b", "no", False),
        ("u", "file:///tmp/x", "file:///tmp/x"), ("s", "a b", "a b"),
    ],
)
def test_valid_values_convert(typed_project, name, text, value):
    inv = resolve(typed_project, "main", {name: text}, typed_project.directory)
    assert inv.values[name] == value
    assert inv.texts[name] == text  # the command receives the user's own text


@pytest.mark.parametrize(
    "name,text,expected",
    [
        ("f", "notafloat", "is not a float"), ("f", "", "is not a float"),
        ("i", "not-an-int", "is not an int"), ("i", "2.5", "is not an int"),
        ("b", "maybe", "is not a bool"),
        ("u", "just/a/path", "Expected URI for parameter u"),
        ("p", "no/such/file.csv", "no such file or directory was found"),
    ],
)
def test_wrong_values_name_parameter_value_and_type(typed_project, name, text, expected):
    with pytest.raises(ParameterError) as info:
        resolve(typed_project, "main", {name: text}, typed_project.directory)
    message = info.value.message
    assert f"parameter {name!r}" in message or f"parameter {name} " in message or f"parameter {name}," in message
    assert repr(text) in message
    assert expected in info.value.message
    assert info.value.exit_code == 2


def test_api_values_of_python_types(typed_project):
    inv = resolve(typed_project, "main", {"f": 0.4, "i": 5, "b": True, "s": 7}, typed_project.directory)
    assert inv.values["f"] == 0.4 and inv.values["i"] == 5 and inv.values["b"] is True and inv.values["s"] == "7"
    with pytest.raises(ParameterError):
        resolve(typed_project, "main", {"i": True}, typed_project.directory)


def test_bad_default_is_reported(make_project):
    project = load_project(make_project("entry_points:\n  main:\n    parameters:\n      n: {type: int, default: abc}\n    command: x {n}\n"))
    with pytest.raises(ParameterError, match="parameter 'n': default value 'abc' is not an int"):
        resolve(project, "main", {}, project.directory)


def test_all_missing_required_listed_at_once(make_project):
    project = load_project(
        make_project("entry_points:\n  main:\n    parameters:\n      a: float\n      b: string\n      c: {type: int, default: 1}\n    command: x {a} {b} {c}\n")
    )
    with pytest.raises(ParameterError) as info:
        resolve(project, "main", {}, project.directory)
    assert "No value given for missing parameters: 'a', 'b'" in info.value.message
    assert info.value.hint == "give -P a=VALUE -P b=VALUE"


def test_every_parameter_problem_at_once_with_its_misspelling(make_project):
    """A misspelt required parameter used to say only that the real one was missing, and a
    second bad value waited for the first to be fixed."""
    project = load_project(make_project(
        "entry_points:\n  main:\n    parameters:\n      alpha: float\n      n: {type: int, default: 1}\n"
        "      data: path\n    command: x {alpha} {n} {data}\n"))
    with pytest.raises(ParameterError) as info:
        resolve(project, "main", {"alpah": "0.4", "n": "many", "data": "no/such.csv"}, project.directory)
    message = info.value.message
    assert message.startswith("3 problems with the parameters of entry point 'main': ")
    assert "No value given for missing parameters: 'alpha'" in message and "did you mean alpha?" in message
    assert "parameter 'n': value 'many' is not an int" in message
    assert "Got value 'no/such.csv' for parameter data, but no such file or directory was found" in message
    assert len(info.value.problems) == 3
    assert "-P alpha=VALUE" in info.value.hint and "whole number" in info.value.hint


def test_undeclared_appended_quoted(make_project):
    project = load_project(make_project("entry_points:\n  main:\n    command: prog\n"))
    inv = resolve(project, "main", {"extra": "x y", "n": "$(id)"}, project.directory)
    assert inv.command == "prog --extra 'x y' --n '$(id)'"
    assert inv.extra == {"extra": "x y", "n": "$(id)"}


def test_values_are_quoted(make_project):
    project = load_project(make_project("entry_points:\n  main:\n    parameters:\n      name: string\n    command: echo {name}\n"))
    inv = resolve(project, "main", {"name": "friend; echo INJECTED"}, project.directory)
    assert shlex.split(inv.command) == ["echo", "friend; echo INJECTED"]


def test_nul_refused(make_project):
    project = load_project(make_project("entry_points:\n  main:\n    parameters:\n      name: string\n    command: echo {name}\n"))
    with pytest.raises(ParameterError, match="NUL"):
        resolve(project, "main", {"name": "a\0b"}, project.directory)


def test_path_resolves_against_cwd_then_project(make_project, tmp_path):
    root = make_project("entry_points:\n  main:\n    parameters:\n      p: path\n    command: cat {p}\n", {"data/in.csv": "project\n"})
    caller = tmp_path / "caller"
    (caller / "data").mkdir(parents=True)
    (caller / "data" / "in.csv").write_text("caller\n")
    project = load_project(root)
    assert resolve(project, "main", {"p": "data/in.csv"}, caller).values["p"] == str(caller / "data" / "in.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert resolve(project, "main", {"p": "data/in.csv"}, elsewhere).values["p"] == str(root / "data" / "in.csv")
    assert resolve(project, "main", {"p": f"file://{root}/data/in.csv"}, elsewhere).values["p"] == str(root / "data" / "in.csv")


def test_placeholder_without_parameter(make_project):
    project = load_project(make_project("entry_points:\n  main:\n    parameters:\n      a: string\n    command: echo {a} {b}\n"))
    assert check_command(project.entry_points["main"]) == ["entry point 'main': command uses {b} but declares no parameter 'b'"]
    with pytest.raises(ProjectError, match="declares no parameter 'b'"):
        resolve(project, "main", {"a": "x"}, project.directory)


def test_literal_braces(make_project):
    project = load_project(make_project("entry_points:\n  main:\n    command: \"python -c 'print({{1: 2}})'\"\n"))
    assert resolve(project, "main", {}, project.directory).command == "python -c 'print({1: 2})'"


def test_parse_assignments():
    assert parse_assignments(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(UsageError, match="given more than once"):
        parse_assignments(["a=1", "a=2"])
    with pytest.raises(UsageError, match="expected NAME=VALUE"):
        parse_assignments(["novalue"])
    with pytest.raises(UsageError):
        parse_assignments(["=x"])


def test_inferred_entry_point_gets_all_parameters_appended(make_project):
    project = load_project(make_project(files={"train.py": "pass\n"}))
    inv = resolve(project, "train.py", {"alpha": "0.4"}, project.directory)
    assert inv.command == "python train.py --alpha 0.4"
    assert Path(inv.cwd) == project.directory
