"""Loading MLproject files: schema validation with file:line, YAML errors, inference."""
from __future__ import annotations

import pytest

from runner.errors import ProjectError, SpecValidationError
from runner.project.envfiles import load_conda_env, load_python_env
from runner.project.spec import load_project

pytestmark = pytest.mark.unit  # (the unit tier: `make unit`)


def test_loads_every_key(make_project):
    root = make_project(
        """
        name: demo
        python_env: env/python_env.yaml
        entry_points:
          main:
            parameters:
              alpha: float
              l1_ratio: {type: float, default: 0.1}
              data: {type: path, default: data.csv}
              flag: {type: bool, default: false}
              n: {type: int, default: 3}
              where: {type: uri, default: "s3://b/k"}
              who: {default: anyone}
            command: "python train.py {alpha} {l1_ratio}"
          other:
            command: "echo other"
        """,
        {"env/python_env.yaml": "python: '3.11'\n"},
    )
    project = load_project(root)
    assert project.name == "demo"
    assert project.env.kind == "python_env"
    assert project.env.path == root / "env" / "python_env.yaml"
    main = project.entry_points["main"]
    assert main.parameters["alpha"].type == "float" and main.parameters["alpha"].required
    assert main.parameters["l1_ratio"].default == 0.1
    assert main.parameters["flag"].default is False and not main.parameters["flag"].required
    assert main.parameters["who"].type == "string"
    assert project.entry_points["other"].parameters == {}


@pytest.mark.parametrize("filename", ["MLproject", "mlproject", "MLPROJECT", "MlProject"])
def test_file_name_in_any_case(make_project, filename):
    root = make_project(files={filename: "entry_points:\n  main:\n    command: echo hi\n"})
    assert load_project(root).spec_path.name == filename


def test_unknown_type_names_run_as_strings_with_a_warning(make_project):
    """MLflow accepts any type name; an unknown one runs as a string, with a warning naming file and line."""
    root = make_project(
        """
        name: demo
        entry_points:
          main:
            parameters:
              alpha: {type: flaot, default: 0.1}
              mode: category
            command: "echo {alpha} {mode}"
        """
    )
    project = load_project(root)
    params = project.entry_point("main").parameters
    assert params["alpha"].type == "string" and params["mode"].type == "string"
    assert project.warnings == [
        "MLproject:5: parameter 'alpha' of entry point 'main': type 'flaot' is not one MLflow knows; "
        "it runs as a string (did you mean float?)",
        "MLproject:6: parameter 'mode' of entry point 'main': type 'category' is not one MLflow knows; it runs as a string",
    ]
    assert load_project(root).warnings == project.warnings  # the second load reads the cache


def test_community_type_names_are_their_types(make_project):
    root = make_project("entry_points:\n  main:\n    parameters:\n      a: str\n      b: text\n      c: integer\n"
                        "      d: boolean\n      e: double\n      f: {type: number, default: 1.5}\n      g: Float\n    command: x\n")
    project = load_project(root)
    types = {name: p.type for name, p in project.entry_point("main").parameters.items()}
    assert types == {"a": "string", "b": "string", "c": "int", "d": "bool", "e": "float", "f": "float", "g": "float"}
    assert project.warnings == []


def test_a_type_that_is_not_a_name_points_at_parameter(make_project):
    root = make_project("entry_points:\n  main:\n    parameters:\n      alpha: {type: [float]}\n    command: x\n")
    with pytest.raises(SpecValidationError, match=r"MLproject:4: entry_points.main.parameters.alpha.type: expected a string"):
        load_project(root)


def test_missing_command(make_project):
    root = make_project("name: x\nentry_points:\n  main:\n    parameters: {}\n")
    with pytest.raises(SpecValidationError, match=r"MLproject:4: entry_points.main: missing required key 'command'"):
        load_project(root)


def test_wrong_type_of_value(make_project):
    root = make_project("entry_points:\n  main:\n    command: [a, b]\n")
    with pytest.raises(SpecValidationError, match=r"MLproject:3: entry_points.main.command: expected a string, got a list"):
        load_project(root)


def test_malformed_yaml_gives_line_not_traceback(make_project):
    root = make_project(files={"MLproject": 'name: x\nentry_points:\n  main:\n    command: "echo hi\n'})
    with pytest.raises(SpecValidationError, match=r"^MLproject:4: invalid YAML"):
        load_project(root)


def test_bad_indentation(make_project):
    root = make_project(files={"MLproject": "name: x\nentry_points:\n  main:\n    command: a\n   bad: b\n"})
    with pytest.raises(SpecValidationError, match=r"^MLproject:\d+: invalid YAML"):
        load_project(root)


def test_more_than_one_env_key(make_project):
    root = make_project(
        "name: x\nconda_env: conda.yaml\npython_env: python_env.yaml\nentry_points: {}\n",
        {"conda.yaml": "dependencies: []\n", "python_env.yaml": "python: '3.11'\n"},
    )
    with pytest.raises(SpecValidationError, match=r"MLproject:3: Project cannot contain multiple environment fields"):
        load_project(root)


def test_unknown_keys_warn_with_line(make_project):
    root = make_project("name: x\nartifact_store: s3\nentry_points:\n  main:\n    command: a\n    timeout: 3\n")
    project = load_project(root)
    assert project.warnings == [
        "MLproject:2: artifact_store: unknown key, ignored",
        "MLproject:6: entry_points.main.timeout: unknown key, ignored",
    ]


def test_warnings_survive_the_cache(make_project):
    root = make_project("name: x\nextra: 1\nentry_points: {}\n")
    first = load_project(root).warnings
    assert first and load_project(root).warnings == first


def test_env_file_outside_project_refused(make_project, tmp_path):
    (tmp_path / "outside.yaml").write_text("python: '3.11'\n")
    root = make_project("name: x\npython_env: ../outside.yaml\nentry_points: {}\n")
    with pytest.raises(SpecValidationError, match="leads outside the project"):
        load_project(root)


def test_missing_env_file(make_project):
    root = make_project("name: x\nconda_env: conda.yaml\nentry_points: {}\n")
    with pytest.raises(SpecValidationError, match="but no such file was found in the project"):
        load_project(root)


def test_no_mlproject_picks_up_env_files(make_project):
    assert load_project(make_project(files={"python_env.yaml": "python: '3.11'\n", "conda.yaml": "name: x\n"})).env.kind == "python_env"
    assert load_project(make_project(files={"conda.yaml": "name: x\n"})).env.kind == "conda_env"
    assert load_project(make_project(files={"train.py": "pass\n"})).env.kind == "none"


def test_inferred_entry_points(make_project, monkeypatch):
    monkeypatch.setenv("SHELL", "/bin/bash")
    root = make_project(files={"train.py": "pass\n", "go.sh": "echo hi\n"})
    project = load_project(root)
    assert project.entry_point("train.py").command == "python train.py"
    assert project.entry_point("go.sh").command == "/bin/bash go.sh"
    with pytest.raises(ProjectError, match="Could not find main among entry points"):
        project.entry_point("main")
    with pytest.raises(ProjectError, match="no such file"):
        project.entry_point("missing.py")
    with pytest.raises(ProjectError, match="outside the project"):
        project.entry_point("../escape.py")


def test_docker_env_needs_name(make_project):
    root = make_project("docker_env:\n  image: python:3.11\nentry_points: {}\n")
    with pytest.raises(SpecValidationError, match="needs a name"):
        load_project(root)


def test_docker_env_forms(make_project):
    root = make_project(
        """
        name: d
        docker_env:
          image: base:1
          volumes: ["/data:/data:ro"]
          environment: [HOME_VAR, ["SET_VAR", "value"], ["NUM", 3]]
        entry_points: {}
        """
    )
    docker = load_project(root).env.docker
    assert docker.image == "base:1"
    assert docker.volumes == ("/data:/data:ro",)
    assert docker.environment == ("HOME_VAR", ("SET_VAR", "value"), ("NUM", "3"))


def test_python_env_file(make_project):
    root = make_project(
        files={"python_env.yaml": "python: 3.10\nbuild_dependencies: [pip]\ndependencies:\n  - numpy==1.26\n  - -r requirements.txt\n"}
    )
    env = load_python_env(root / "python_env.yaml")
    assert env.python == "3.10"  # not the float 3.1
    assert env.dependencies == ("numpy==1.26", "-r requirements.txt")


def test_python_env_schema_error(make_project):
    root = make_project(files={"python_env.yaml": "python: '3.10'\ndependencies: numpy\n"})
    with pytest.raises(SpecValidationError, match=r"python_env.yaml:2: dependencies: expected a list"):
        load_python_env(root / "python_env.yaml")


def test_conda_env_file(make_project):
    root = make_project(
        files={"conda.yaml": "name: x\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n    - mlflow\n"}
    )
    env = load_conda_env(root / "conda.yaml")
    assert env.channels == ("conda-forge",)
    assert env.dependencies == ("python=3.11", "pip")
    assert env.pip == ("mlflow",)


def test_conda_env_schema_error(make_project):
    root = make_project(files={"conda.yaml": "name: x\ndependencies:\n  - python\n  - {pip: mlflow}\n"})
    with pytest.raises(SpecValidationError, match=r"conda.yaml:4: dependencies\[1\].pip: expected a list"):
        load_conda_env(root / "conda.yaml")


@pytest.mark.parametrize("text", ["", "name: empty\n", "name: empty\ndependencies: []\n", "dependencies:\n  - pip: []\n"])
def test_a_conda_env_with_no_dependencies_is_refused(make_project, text):
    """It built an empty environment, and the command ran with whatever python was on PATH."""
    root = make_project(files={"conda.yaml": text})
    with pytest.raises(SpecValidationError, match="conda.yaml: lists no dependencies") as info:
        load_conda_env(root / "conda.yaml")
    assert "--env-manager local" in info.value.hint
