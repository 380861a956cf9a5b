"""Fuzzed inputs: whatever a user can type or write either works or fails with a
RunnerError (one clear line); no other exception escapes, and nothing hangs.

In-process and bounded (hypothesis, a fixed number of examples each) so it runs
in `make test`.
"""
from __future__ import annotations

import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.errors import RunnerError

FUZZ = settings(max_examples=int(__import__("os").environ.get("MLPROJECT_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# YAML-able documents: what a hand-written MLproject or env file may contain, and worse.
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
documents = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)),
    max_leaves=12,
)
keys = st.sampled_from(["name", "entry_points", "conda_env", "python_env", "docker_env", "main", "parameters",
                        "command", "type", "default", "image", "environment", "volumes", "channels",
                        "dependencies", "pip", "python", "build_dependencies", "variables"])
structured = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=16,
)


def _write(path: Path, document) -> None:
    path.write_text(yaml.safe_dump(document) if not isinstance(document, str) else document)


@FUZZ
@given(document=st.one_of(documents, structured, st.text(max_size=200)))
def test_mlproject_files(tmp_path_factory, document):
    from runner.project.params import resolve
    from runner.project.spec import load_project

    root = tmp_path_factory.mktemp("fuzz-mlproject")
    _write(root / "MLproject", document)
    try:
        project = load_project(root)
        resolve(project, "main", {}, root)
    except RunnerError as exc:
        assert exc.message and "\n" not in exc.message


@FUZZ
@given(document=st.one_of(documents, structured, st.text(max_size=200)))
def test_conda_and_python_env_files(tmp_path_factory, document):
    from runner.project.envfiles import load_conda_env, load_python_env

    root = tmp_path_factory.mktemp("fuzz-env")
    for name, loader in (("conda.yaml", load_conda_env), ("python_env.yaml", load_python_env)):
        _write(root / name, document)
        try:
            loader(root / name)
        except RunnerError as exc:
            assert exc.message and "\n" not in exc.message


@FUZZ
@given(value=st.text(max_size=300), kind=st.sampled_from(["string", "float", "int", "bool", "uri"]))
def test_parameter_values(tmp_path_factory, value, kind):
    from runner.project.params import resolve
    from runner.project.spec import load_project

    root = tmp_path_factory.mktemp("fuzz-param")
    (root / "MLproject").write_text(f"entry_points:\n  main:\n    parameters:\n      p: {kind}\n    command: echo {{p}}\n")
    try:
        invocation = resolve(load_project(root), "main", {"p": value, "extra": value}, root)
    except RunnerError as exc:
        assert exc.message and "\n" not in exc.message
        return
    import shlex

    # Whatever was accepted reaches the program as data: the command splits back into the same words.
    words = shlex.split(invocation.command)
    assert words[0] == "echo" and words[-2:] == ["--extra", value]


@FUZZ
@given(items=st.lists(st.text(max_size=40), max_size=6))
def test_docker_args(items):
    from runner import api
    from runner.envs.docker import options as dockeroptions

    try:
        dockeroptions.check(api.parse_docker_args(items))
    except RunnerError as exc:
        assert exc.message and "\n" not in exc.message


uri_text = st.one_of(
    st.text(max_size=80),
    st.builds(lambda a, b, c: f"{a}://{b}@{c}", st.sampled_from(["https", "http", "ssh", "git", "file", "s3", "x"]),
              st.text(string.printable, max_size=20), st.text(string.printable, max_size=30)),
    st.builds(lambda a, b: f"{a}#{b}", st.text(max_size=20), st.text(max_size=30)),
)


@FUZZ
@given(uri=uri_text)
def test_project_uris_are_parsed_or_refused(uri):
    from runner.sources import split_subdirectory, urls

    base, _ = split_subdirectory(uri)
    try:
        if urls.is_git_url(base):
            parsed = urls.parse(base)
            assert "@" not in parsed.remote.url.split("://", 1)[-1].split("/", 1)[0] or parsed.remote.url.startswith("ssh") \
                or parsed.remote.url.startswith("git")  # no credentials left in what git is given
    except RunnerError as exc:
        assert exc.message and "\n" not in exc.message


@FUZZ
@given(subdir=st.one_of(st.text(max_size=40), st.lists(st.sampled_from(["..", ".", "a", "/", "b", "~", "\\"]), max_size=8)
                        .map("/".join)))
def test_subdirectories_never_leave_the_project(tmp_path_factory, subdir):
    from runner.sources import fetch

    root = tmp_path_factory.mktemp("fuzz-subdir") / "project"
    (root / "a" / "b").mkdir(parents=True)
    (root / "MLproject").write_text("entry_points:\n  main:\n    command: 'true'\n")
    try:
        source = fetch(f"{root}#{subdir}")
    except RunnerError as exc:
        assert exc.message
        return
    except ValueError:
        pytest.fail(f"{subdir!r}: ValueError escaped")
    assert source.path.resolve() == root.resolve() or root.resolve() in source.path.resolve().parents
