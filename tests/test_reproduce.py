"""Reproducing runs, as a user would: pylock.toml locks for Python environments, what every
run keeps to be re-run, `mlproject rerun`, and `mlproject runs diff`. Real uv, pip, git and
MLflow sqlite store; small real packages (six) from the package index."""
from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import assert_clean_error, run_cli

TRAIN_PROJECT = """
    name: reproducible
    python_env: python_env.yaml
    entry_points:
      main:
        parameters:
          x: {type: float, default: 1}
        command: "python train.py {x}"
"""
TRAIN = 'import sys, six\nprint("six", six.__version__, "x", sys.argv[1], "code", "v1")\n'


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=cwd,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _repository(make_project, six: str = "six") -> Path:
    project = make_project(TRAIN_PROJECT, {"python_env.yaml": f'python: "3.11"\ndependencies:\n  - {six}\n',
                                           "train.py": TRAIN, ".gitignore": "mlflow.db\nmlruns/\n"})
    _git(project, "init", "-q", "-b", "main")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "first")
    return project


def _run_id(stderr: str) -> str:
    found = re.findall(r"in run with ID '([0-9a-f]+)'", stderr)
    assert found, stderr
    return found[-1]


def _output(result) -> str:
    return next(line for line in result.stdout.splitlines() if line.startswith("six "))


def _client(cwd: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")


def _envs(home: Path) -> list[str]:
    root = home / "envs"
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def test_lock_then_locked_run_installs_exactly_the_lock(make_project, mlproject_home):
    project = _repository(make_project, "six<1.17")
    locked = run_cli("lock", str(project))
    assert locked.returncode == 0, locked.stderr
    lock = project / "pylock.toml"
    text = lock.read_text()
    assert 'lock-version = "1.0"' in text and 'name = "six"' in text and "[tool.mlproject-runner]" in text
    version = re.search(r'name = "six"\nversion = "([^"]+)"', text).group(1)
    assert version.startswith("1.16")

    ran = run_cli("run", str(project), "--locked")
    assert ran.returncode == 0, ran.stderr
    assert _output(ran).startswith(f"six {version} ")
    assert "from pylock.toml" in ran.stderr
    (env,) = _envs(mlproject_home)
    build_log = (mlproject_home / "envs" / env / ".mlproject" / "build.log").read_text()
    assert "pylock.toml" in build_log and "six<1.17" not in build_log  # the lock, not the env file

    # pip (virtualenv) installs the same lock, every file checked against its hash
    by_pip = run_cli("run", str(project), "--locked", "--env-manager", "virtualenv")
    assert by_pip.returncode == 0, by_pip.stderr
    assert _output(by_pip).startswith(f"six {version} ")


def test_missing_or_stale_lock_under_locked_is_refused_and_creates_nothing(make_project, mlproject_home, _work_in_tmp):
    project = _repository(make_project)
    refused = run_cli("run", str(project), "--locked")
    assert_clean_error(refused, 2, "no pylock.toml")
    assert run_cli("lock", str(project)).returncode == 0
    (project / "python_env.yaml").write_text('python: "3.11"\ndependencies:\n  - six\n  - packaging\n')
    stale = run_cli("run", str(project), "--locked")
    assert_clean_error(stale, 2, "stale")
    # validate says so too (it said nothing, and refused --locked)
    checked = run_cli("validate", str(project))
    assert checked.returncode == 0 and "warning: pylock.toml is stale" in checked.stdout, checked.stdout
    assert_clean_error(run_cli("validate", str(project), "--locked"), 2, "--locked: pylock.toml is stale")
    assert _envs(mlproject_home) == []
    assert _client(_work_in_tmp).search_runs(["0"]) == []  # no run was created
    resolved = run_cli("run", str(project))  # without --locked: one warning, and a resolve
    assert resolved.returncode == 0, resolved.stderr
    warnings = [line for line in resolved.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "stale" in warnings[0]


def test_dirty_run_is_rerun_with_its_changes_packages_and_parameters(make_project, mlproject_home, _work_in_tmp):
    project = _repository(make_project)
    first_commit = _git(project, "rev-parse", "HEAD")
    (project / "train.py").write_text(TRAIN.replace("v1", "v2-uncommitted"))
    (project / "notes.txt").write_text("not committed\n")
    original = run_cli("run", str(project), "-P", "x=2")
    assert original.returncode == 0, original.stderr
    original_id = _run_id(original.stderr)
    assert "v2-uncommitted" in _output(original)
    client = _client(_work_in_tmp)
    artifacts = {a.path for folder in ("source", "environment") for a in client.list_artifacts(original_id, folder)}
    assert {"source/diff.patch", "source/untracked.txt", "environment/pylock.toml"} <= artifacts
    assert client.get_run(original_id).data.tags["mlproject.source.git.dirty"] == "true"

    # the working copy moves on: committed, then changed again
    _git(project, "commit", "-qam", "second")
    (project / "train.py").write_text(TRAIN.replace("v1", "v3"))
    _git(project, "commit", "-qam", "third")

    again = run_cli("rerun", original_id[:10])
    assert again.returncode == 0, again.stderr
    assert _output(again) == _output(original)  # same code, same package version, same parameter
    assert "untracked files were not recorded" in again.stderr and "notes.txt" in again.stderr
    rerun_id = _run_id(again.stderr)
    rerun = client.get_run(rerun_id)
    assert rerun.data.tags["mlproject.rerunOf"] == original_id
    assert rerun.data.tags["mlflow.source.git.commit"] == first_commit
    assert rerun.data.tags["mlproject.source.git.dirty"] == "true"
    assert "mlproject.rerunChanged" not in rerun.data.tags
    assert rerun.data.params == client.get_run(original_id).data.params
    assert rerun.info.experiment_id == client.get_run(original_id).info.experiment_id
    same = run_cli("runs", "diff", original_id, rerun_id)
    assert same.returncode == 0, same.stderr
    assert same.stdout.startswith("no differences"), same.stdout

    # a second rerun reuses the environment installed from the recorded lock
    envs = _envs(mlproject_home)
    assert run_cli("rerun", original_id).returncode == 0
    assert _envs(mlproject_home) == envs


def test_git_project_is_rerun_at_its_recorded_commit_after_the_branch_moved(make_project, tmp_path, _work_in_tmp):
    project = _repository(make_project)
    url = f"file://{project}"
    original = run_cli("run", url, "-v", "main", "-P", "x=5")
    assert original.returncode == 0, original.stderr
    (project / "train.py").write_text(TRAIN.replace("v1", "moved-on"))
    _git(project, "commit", "-qam", "the branch moves")
    moved = run_cli("run", url, "-v", "main")
    assert "moved-on" in _output(moved)

    again = run_cli("rerun", _run_id(original.stderr))
    assert again.returncode == 0, again.stderr
    assert _output(again) == _output(original)

    changed = run_cli("rerun", _run_id(original.stderr), "-P", "x=7")
    assert changed.returncode == 0, changed.stderr
    assert " x 7.0 " in _output(changed) or " x 7 " in _output(changed)
    tags = _client(_work_in_tmp).get_run(_run_id(changed.stderr)).data.tags
    assert tags["mlproject.rerunChanged"] == "x" and tags["mlproject.rerunOf"] == _run_id(original.stderr)


def test_runs_diff_names_the_package_that_differs(make_project, _work_in_tmp):
    project = _repository(make_project, "six==1.16.0")
    first = run_cli("run", str(project))
    assert first.returncode == 0, first.stderr
    (project / "python_env.yaml").write_text('python: "3.11"\ndependencies:\n  - six==1.17.0\n')
    second = run_cli("run", str(project), "-P", "x=3")
    assert second.returncode == 0, second.stderr
    diff = run_cli("runs", "diff", _run_id(first.stderr), _run_id(second.stderr))
    assert diff.returncode == 0, diff.stderr
    rows = {line.split()[0] + " " + line.split()[1]: line.split()[2:] for line in diff.stdout.splitlines()[1:-1]}
    assert rows["package six"] == ["1.16.0", "1.17.0"], diff.stdout
    assert rows["parameter x"] == ["1", "3"], diff.stdout
    assert "source" in rows or any(key.startswith("source") for key in rows)  # the second ran uncommitted changes
    assert diff.stdout.splitlines()[-1].startswith("the same:")


@pytest.mark.parametrize("change, reason", [
    ('python = "3.11.7"', 'python = "3.4.1"'),
    ('platforms = ["linux-64"]', 'platforms = ["osx-arm64"]'),
])
def test_rerun_whose_lock_this_machine_cannot_satisfy_is_refused(make_project, mlproject_home, _work_in_tmp, change, reason):
    project = _repository(make_project)
    original = run_cli("run", str(project))
    assert original.returncode == 0, original.stderr
    run_id = _run_id(original.stderr)
    recorded = mlproject_home / "runs" / run_id / "environment" / "pylock.toml"
    text = recorded.read_text()
    python_line = re.search(r'^python = "[^"]+"$', text, re.M).group(0)
    recorded.write_text(text.replace(python_line if change.startswith("python") else change, reason))
    before = len(_client(_work_in_tmp).search_runs(["0"]))
    refused = run_cli("rerun", run_id)
    assert_clean_error(refused, 2, "cannot be rerun as it ran")
    assert ("3.4" in refused.stderr) if change.startswith("python") else ("osx-arm64" in refused.stderr)
    assert len(_client(_work_in_tmp).search_runs(["0"])) == before  # nothing was created


def test_rerun_of_an_unknown_run_is_one_clear_error():
    assert_clean_error(run_cli("rerun", "0123456789abcdef"), 2, "no run with ID")


def test_lock_of_a_project_without_env_file_is_refused(make_project):
    project = make_project(textwrap.dedent("""
        name: bare
        entry_points:
          main:
            command: "true"
    """))
    assert_clean_error(run_cli("lock", str(project)), 2, "python_env.yaml or a conda.yaml")


def test_conda_run_is_rerun_from_the_lock_of_what_it_installed(cli, own_channel, make_project, mlproject_home):
    from test_conda import LOCKED, SHOW, _publish_helper_3, conda_project

    root = conda_project(make_project, LOCKED, SHOW)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "conda project")
    original = cli("run", str(root))  # solved: helper 2.0, the newest in the channel
    assert original.returncode == 0, original.stderr
    assert original.stdout.splitlines()[0] == "2.0" and "six 1.16.0" in original.stdout
    run_id = _run_id(original.stderr)
    recorded = mlproject_home / "runs" / run_id / "environment" / "conda-lock.yml"
    assert recorded.is_file()
    _publish_helper_3(own_channel)  # a solve now picks helper 3.0
    import shutil

    for env in _envs(mlproject_home):  # the environment is gone (gc, another machine): solved again
        shutil.rmtree(mlproject_home / "envs" / env)
    fresh = cli("run", str(root))
    assert fresh.returncode == 0 and fresh.stdout.splitlines()[0] == "3.0", fresh.stderr
    again = cli("rerun", run_id)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == "2.0" and "six 1.16.0" in again.stdout  # what the run installed
    diff = cli("runs", "diff", run_id, _run_id(fresh.stderr))
    assert "package helper" in diff.stdout and "2.0" in diff.stdout and "3.0" in diff.stdout, diff.stdout


def test_a_run_this_machine_never_saw_is_rerun_from_its_tracking_server(make_project, mlflow_server, tmp_path):
    """Recorded on another machine (another MLPROJECT_HOME: no ledger row, no environment): the
    run, its changes and its lock come from the server, its artifacts through the server."""
    project = _repository(make_project, "six<1.17")
    (project / "train.py").write_text(TRAIN.replace("v1", "v2-uncommitted"))
    server = {"MLFLOW_TRACKING_URI": mlflow_server}
    original = run_cli("run", str(project), "-P", "x=6", env=server)
    assert original.returncode == 0, original.stderr
    run_id = _run_id(original.stderr)
    _git(project, "commit", "-qam", "moved on")
    (project / "train.py").write_text(TRAIN.replace("v1", "later"))

    elsewhere = {**server, "MLPROJECT_HOME": str(tmp_path / "another-home")}
    again = run_cli("rerun", run_id, env=elsewhere)
    assert again.returncode == 0, again.stderr
    assert _output(again) == _output(original) and "v2-uncommitted" in _output(again) and "1.16" in _output(again)
    rerun = MlflowClient(mlflow_server).get_run(_run_id(again.stderr))
    assert rerun.data.tags["mlproject.rerunOf"] == run_id
    assert rerun.info.experiment_id == MlflowClient(mlflow_server).get_run(run_id).info.experiment_id
    assert_clean_error(run_cli("rerun", "f" * 32, env=elsewhere), 2)  # in neither: one clear error


def test_a_run_of_mlflow_run_is_rerun_here(make_project, _work_in_tmp):
    """Drop-in: what `mlflow run` recorded (tags, params) is enough to run it again here."""
    import sys

    project = _repository(make_project)
    made = subprocess.run([sys.executable, "-m", "mlflow", "run", str(project), "-P", "x=8", "--env-manager", "local"],
                          capture_output=True, text=True, timeout=300, cwd=_work_in_tmp,
                          env={**__import__("os").environ, "MLFLOW_TRACKING_URI": f"sqlite:///{_work_in_tmp / 'mlflow.db'}"})
    assert made.returncode == 0, made.stderr
    original_id = re.search(r"Run \(ID '([0-9a-f]+)'\) succeeded", made.stderr).group(1)
    again = run_cli("rerun", original_id)
    assert again.returncode == 0, again.stderr
    assert "x 8" in _output(again)
    tags = _client(_work_in_tmp).get_run(_run_id(again.stderr)).data.tags
    assert tags["mlproject.rerunOf"] == original_id
    assert tags["mlflow.source.git.commit"] == _git(project, "rev-parse", "HEAD")


DATA_PROJECT = """
    name: reads-data
    entry_points:
      main:
        parameters:
          data: {type: path}
        command: "cat {data}"
"""


def test_rerun_refuses_when_a_path_parameters_file_changed(make_project, _work_in_tmp):
    project = make_project(DATA_PROJECT, {".gitignore": "mlflow.db\nmlruns/\n"})
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "reads data")
    data = _work_in_tmp / "data.csv"
    data.write_text("a,b\n1,2\n")
    original = run_cli("run", str(project), "-P", "data=data.csv", "--env-manager", "local")
    assert original.returncode == 0, original.stderr
    run_id = _run_id(original.stderr)
    same = run_cli("rerun", run_id)
    assert same.returncode == 0 and same.stdout == original.stdout, same.stderr
    # Logged as the original logged it (as given), not as the absolute path the command got.
    rerun_id = _run_id(same.stderr)
    assert _client(_work_in_tmp).get_run(rerun_id).data.params == {"data": "data.csv"}
    assert _client(_work_in_tmp).get_run(run_id).data.params == {"data": "data.csv"}
    diff = run_cli("runs", "diff", run_id, rerun_id)
    assert diff.returncode == 0 and "data" not in diff.stdout, diff.stdout
    data.write_text("a,b\n1,3\n")
    refused = run_cli("rerun", run_id)
    assert_clean_error(refused, 2, "data.csv changed since the run")
    other = _work_in_tmp / "other.csv"
    other.write_text("x\n")
    replaced = run_cli("rerun", run_id, "-P", f"data={other}")  # a changed rerun: the caller chose the file
    assert replaced.returncode == 0 and replaced.stdout == "x\n", replaced.stderr
    anyway = run_cli("rerun", run_id, "--allow-differences")
    assert anyway.returncode == 0 and anyway.stdout == "a,b\n1,3\n", anyway.stderr
    assert "warning: rerun of" in anyway.stderr and "changed since the run" in anyway.stderr


PLAIN_PROJECT = """
    name: plain-directory
    entry_points:
      main:
        parameters:
          x: {type: float, default: 1}
        command: "python train.py {x}"
"""
PLAIN_TRAIN = 'import sys\nprint("x", sys.argv[1], "code", "v1")\n'


def test_a_project_outside_git_is_rerun_by_the_digest_of_its_files(make_project, mlflow_server, tmp_path, _work_in_tmp):
    """Refused before, whatever its files ("not a git working copy ... it runs as it is now", then
    exit 2). Its files' digests are recorded at submission: the same files are an exact rerun; a
    changed file is named; on a machine without the directory the kept files are used."""
    project = make_project(PLAIN_PROJECT, {"train.py": PLAIN_TRAIN})
    assert subprocess.run(["git", "-C", str(project), "rev-parse"], capture_output=True).returncode != 0
    server = {"MLFLOW_TRACKING_URI": mlflow_server}
    original = run_cli("run", str(project), "-P", "x=4", "--env-manager", "local", env=server)
    assert original.returncode == 0, original.stderr
    run_id = _run_id(original.stderr)
    artifacts = [a.path for a in MlflowClient(mlflow_server).list_artifacts(run_id, "source")]
    assert artifacts == ["source/files.json", "source/project.tar.gz"]

    same = run_cli("rerun", run_id, env=server)
    assert same.returncode == 0, same.stderr
    assert same.stdout == original.stdout == "x 4 code v1\n"
    assert "source:" not in same.stderr and "warning" not in same.stderr  # exact: no refusal, no note

    (project / "train.py").write_text(PLAIN_TRAIN.replace("v1", "v2"))
    (project / "notes.txt").write_text("added later\n")
    refused = run_cli("rerun", run_id, env=server)
    assert_clean_error(refused, 2, "changed since the run (1): train.py")
    assert "note: rerun of" in refused.stderr and "files added to" in refused.stderr and "notes.txt" in refused.stderr
    anyway = run_cli("rerun", run_id, "--allow-differences", env=server)
    assert anyway.returncode == 0 and anyway.stdout == "x 4 code v2\n", anyway.stderr

    # Another machine: no ledger row, no directory; the files come from the tracking server.
    moved = project.rename(project.with_name("moved-away"))
    elsewhere = {**server, "MLPROJECT_HOME": str(tmp_path / "another-home")}
    there = run_cli("rerun", run_id, env=elsewhere)
    assert there.returncode == 0, there.stderr
    assert there.stdout == "x 4 code v1\n"  # the files as they were, not as they are in moved-away/
    assert "runs the project's files kept with the run (2 files)" in there.stderr
    assert (moved / "train.py").read_text() != PLAIN_TRAIN


def test_the_default_store_written_into_a_working_copy_does_not_make_it_dirty(make_project, mlproject_home):
    """`mlproject run .` in a git project writes mlflow.db and mlruns/ there (as `mlflow run .`
    does): the next run was recorded dirty, with a diff and an untracked-files note."""
    project = make_project(PLAIN_PROJECT, {"train.py": PLAIN_TRAIN})
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "first")
    for _ in range(2):
        done = run_cli("run", ".", "--env-manager", "local", cwd=project)
        assert done.returncode == 0, done.stderr
    assert (project / "mlflow.db").is_file() and (project / "mlruns").is_dir()
    runs = _client(project).search_runs(["0"])
    assert [r.data.tags["mlproject.source.git.dirty"] for r in runs] == ["false", "false"]
    (project / "scratch.py").write_text("print('new')\n")  # a file of the project's own: dirty
    done = run_cli("run", ".", "--env-manager", "local", cwd=project)
    tags = _client(project).get_run(_run_id(done.stderr)).data.tags
    assert tags["mlproject.source.git.dirty"] == "true"
    untracked = mlproject_home / "runs" / _run_id(done.stderr) / "source" / "untracked.txt"
    assert untracked.read_text() == "scratch.py\n"


def test_a_rerun_whose_original_store_is_gone_is_refused_and_creates_no_store(make_project, tmp_path):
    """It left an empty mlflow.db (and its directory) where the original's store was."""
    project = make_project(PLAIN_PROJECT, {"train.py": PLAIN_TRAIN})
    where = tmp_path / "was-here"
    where.mkdir()
    original = run_cli("run", str(project), "--env-manager", "local", cwd=where)
    assert original.returncode == 0, original.stderr
    where.rename(tmp_path / "moved")
    refused = run_cli("rerun", _run_id(original.stderr), cwd=tmp_path)
    assert_clean_error(refused, 2, "which no longer exists (moved or deleted)")
    assert not where.exists()


def test_a_projects_files_kept_by_many_threads_at_once(make_project, mlproject_home, tmp_path):
    """A sweep's trials keep one project's files at once, from threads of one process: their
    archives' temporary names were the process's, and one trial failed renaming the other's."""
    from concurrent.futures import ThreadPoolExecutor

    from runner.sources import provenance

    project = make_project(PLAIN_PROJECT, {"train.py": PLAIN_TRAIN, "data.bin": "x" * 200_000})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: provenance.keep_files(project, tmp_path / f"run{n}"), range(16)))
    archives = {(tmp_path / f"run{n}" / "source" / "project.tar.gz").read_bytes() for n in range(16)}
    assert len(archives) == 1
    assert not [p for p in (mlproject_home / "cache" / "projects").iterdir() if p.name.startswith(".")]
