"""Git projects against real servers on loopback: file://, git daemon, HTTP with
basic auth, and sshd (scp-like `git@gitserver:org/demo.git` through an ssh config).

Runs go through the real CLI and track into ./mlflow.db, whose tags are read back.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import assert_clean_error
from gitservers import GitDaemon, HttpServer, SshServer, free_port, git, make_demo_repo

PASSWORD = "pa55-W0rd-9731"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_repo(tmp_path_factory.mktemp("git-demo"))


@pytest.fixture
def daemon(demo, tmp_path):
    server = GitDaemon(demo.bare.parent.parent, free_port(), tmp_path / "git-daemon.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def http(demo):
    # Also served as org/demo (no .git), the name a GitHub-style tree URL gives.
    alias = demo.bare.parent / "demo"
    if not alias.exists():
        os.symlink(demo.bare, alias)
    server = HttpServer(demo.bare.parent.parent, "alice", PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ssh(demo):
    # sshd serves as the `git` account, which must be able to read the repositories.
    root = Path(tempfile.mkdtemp(prefix="mlproject-ssh-"))
    os.chmod(root, 0o755)
    shutil.copytree(demo.bare.parent.parent, root / "srv")
    server = SshServer(root / "srv", root / "conf", free_port())
    try:
        server.start()  # creates the `git` account if the machine has none
        subprocess.run(["chown", "-R", "git:", str(root / "srv")], check=True)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def run_id_of(result) -> str:
    match = re.search(r"run with ID '([0-9a-f]{32})'", result.stderr)
    assert match, result.stderr
    return match.group(1)


def tags_of(run_id: str, db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("select key, value from tags where run_uuid = ?", (run_id,)).fetchall())


def runs_in(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("select count(*) from runs").fetchone()[0]


def ledger_rows(home: Path) -> int:
    if not (home / "ledger.db").exists():
        return 0
    with sqlite3.connect(home / "ledger.db") as conn:
        return conn.execute("select count(*) from runs").fetchone()[0]


def ok(result):
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result


# -- URL forms --------------------------------------------------------------------------
def test_url_forms_parse_to_one_mirror_per_repository():
    from runner.sources import urls

    same = [
        "https://github.com/org/repo.git", "https://github.com/org/repo", "https://user:tok@GitHub.com/org/repo/",
        "https://github.com/org/repo/tree/v1.2/train",
    ]
    assert len({urls.parse(u).remote.key for u in same}) == 1
    assert urls.parse("git@github.com:org/repo.git").remote.key == urls.parse("ssh://git@github.com/org/repo").remote.key
    tree = urls.parse("https://github.com/org/repo/tree/v1.2/train/step")
    assert (tree.remote.url, tree.version, tree.subdir) == ("https://github.com/org/repo", "v1.2", "train/step")
    creds = urls.parse("https://alice:s%40cret@host.example/org/repo.git").remote
    assert creds.url == "https://host.example/org/repo.git" and (creds.username, creds.password) == ("alice", "s@cret")
    assert urls.parse("ssh://git:pw@host.example:2222/org/repo.git").remote.url == "ssh://git@host.example:2222/org/repo.git"
    for url in ("git://h.example/r.git", "file:///srv/r.git", "git@h.example:r.git", "h.example:org/r.git", "http://h/r"):
        assert urls.is_git_url(url), url
    for path in ("./project", "project", "C:", "notes:todo", "/abs/path"):
        assert not urls.is_git_url(path), path


def test_missing_local_path_is_reported_as_a_path(cli):
    result = cli("run", "./no-such-projcet", "--env-manager", "local")
    assert_clean_error(result, 2, "does not exist")
    assert "git" not in result.stderr.lower()


# -- file:// : every kind of version ------------------------------------------------------
@pytest.mark.parametrize(
    "version, expected, branch",
    [(None, "version two", None), ("feature", "feature branch", "feature"), ("v1", "version one", None),
     ("SHORT", "version one", None), ("FULL", "version two", None)],
)
def test_versions_over_file_url(cli, demo, _work_in_tmp, version, expected, branch):
    args = ["run", f"file://{demo.bare}", "-P", "who=file", "--env-manager", "local"]
    commit = {None: demo.main, "feature": demo.feature, "v1": demo.v1, "SHORT": demo.v1, "FULL": demo.main}[version]
    if version is not None:
        args += ["-v", {"SHORT": demo.v1[:7], "FULL": demo.main}.get(version, version)]
    result = ok(cli(*args))
    assert f"{expected}: file" in result.stdout
    tags = tags_of(run_id_of(result), _work_in_tmp / "mlflow.db")
    assert tags["mlflow.source.git.commit"] == commit
    assert tags["mlflow.source.git.repoURL"] == f"file://{demo.bare}"
    assert tags.get("mlflow.source.git.branch") == branch  # as MLflow: only a branch that -v named
    if version is None:
        assert tags["mlproject.source.git.branch"] == "main"  # the default branch, recorded as ours
    assert tags["mlflow.source.name"] == f"file://{demo.bare}"


def test_subdirectory_and_read_only_shared_checkout(cli, demo, mlproject_home):
    first = ok(cli("run", f"file://{demo.bare}#sub", "-v", "v1", "--env-manager", "local"))
    second = ok(cli("run", f"file://{demo.bare}#sub", "-v", demo.v1, "--env-manager", "local"))
    assert "sub version one" in first.stdout and "sub version one" in second.stdout
    checkouts = list((mlproject_home / "git" / "checkouts").glob("git-*"))
    assert len(checkouts) == 1, checkouts  # one checkout per commit, shared
    tree = checkouts[0] / "tree"
    for path in (tree / "say.py", tree / "sub" / "hello.py", tree / "sub"):
        assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), path


def test_github_style_tree_url_and_http_with_credentials(cli, demo, http, _work_in_tmp, mlproject_home):
    base = http.url("org/demo")  # served as org/demo.git: the tree URL names org/demo
    result = ok(cli("run", f"{base}/tree/feature/sub", "--env-manager", "local"))
    assert "sub feature branch" in result.stdout
    tags = tags_of(run_id_of(result), _work_in_tmp / "mlflow.db")
    assert tags["mlflow.source.git.branch"] == "feature"
    assert tags["mlflow.source.git.repoURL"] == f"http://127.0.0.1:{http.port}/org/demo"
    # The password reached the server (the runs worked) and nothing else.
    ok(cli("run", http.url("org/demo.git"), "-v", "v1", "--env-manager", "local"))
    _assert_nowhere(PASSWORD, [result.stdout, result.stderr], [mlproject_home, _work_in_tmp])


def test_wrong_password_fails_at_once_and_creates_nothing(cli, http, _work_in_tmp, mlproject_home):
    result = cli("run", http.url("org/demo.git", password="wrong-" + PASSWORD), "--env-manager", "local", timeout=60)
    assert_clean_error(result, 2, "authentication")
    assert "wrong-" not in result.stderr
    no_password = cli("run", f"http://127.0.0.1:{http.port}/org/demo.git", "--env-manager", "local", timeout=60)
    assert_clean_error(no_password, 2, "authentication")  # git did not prompt: it failed
    assert runs_in(_work_in_tmp / "mlflow.db") == 0 and ledger_rows(mlproject_home) == 0
    assert not list((mlproject_home / "git" / "mirrors").glob("*.git"))  # no half-made mirror
    _assert_nowhere(PASSWORD, [result.stdout, result.stderr], [mlproject_home, _work_in_tmp])


def _assert_nowhere(secret: str, outputs: list[str], roots: list[Path]) -> None:
    for text in outputs:
        assert secret not in text
    needle = secret.encode()
    for root in roots:
        for dirpath, _, filenames in os.walk(root):
            for name in filenames:
                path = Path(dirpath, name)
                if path.is_symlink():
                    continue
                assert needle not in path.read_bytes(), path
                assert secret not in str(path)


def test_interrupted_clone_leaves_nothing_behind(demo, mlproject_home, _work_in_tmp):
    server = HttpServer(demo.bare.parent.parent, "alice", PASSWORD, stall=threading.Event())
    server.start()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "runner", "run", server.url("org/demo.git"), "--env-manager", "local"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        mirrors = mlproject_home / "git" / "mirrors"
        deadline = time.monotonic() + 30
        while not list(mirrors.glob(".tmp-*")) and time.monotonic() < deadline:
            time.sleep(0.05)  # the clone has started (and is stalled by the server)
        assert list(mirrors.glob(".tmp-*")), "the clone did not start"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        server.stop()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not list(mirrors.iterdir()) or {p.name for p in mirrors.iterdir()} <= {".locks"}
    leftovers = [pid for pid in os.listdir("/proc") if pid.isdigit() and str(server.port) in _cmdline(pid)]
    assert not leftovers, leftovers
    assert runs_in(_work_in_tmp / "mlflow.db") == 0 and ledger_rows(mlproject_home) == 0


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# -- git daemon: offline second runs, concurrency ------------------------------------------
def test_second_run_of_a_commit_needs_no_server(cli, demo, daemon, mlproject_home):
    url = daemon.url("org/demo.git")
    ok(cli("run", url, "-v", "v1", "-P", "who=daemon", "--env-manager", "local"))
    ok(cli("run", url, "-P", "who=daemon", "--env-manager", "local"))  # default branch, fetched
    requests = daemon.upload_requests()
    ok(cli("run", url, "-v", "v1", "--env-manager", "local"))  # tag present: no fetch
    assert daemon.upload_requests() == requests
    daemon.stop()
    for version in ("v1", demo.v1, demo.v1[:8], demo.main):
        result = ok(cli("run", url, "-v", version, "-P", "who=offline", "--env-manager", "local"))
        assert "offline" in result.stdout
    # A branch is re-fetched; with the host gone, the branch as last fetched runs, and says so.
    result = ok(cli("run", url, "-P", "who=offline", "--env-manager", "local"))
    assert "version two: offline" in result.stdout
    assert "warning:" in result.stderr and "cannot reach" in result.stderr


def test_eight_concurrent_first_runs_clone_once(demo, daemon, mlproject_home, _work_in_tmp):
    url = daemon.url("org/demo.git")
    argv = [sys.executable, "-m", "runner", "run", url, "-P", "who=crowd", "--env-manager", "local"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert "version two: crowd" in out
    mirrors = mlproject_home / "git" / "mirrors"
    assert len((mirrors / ".builds.log").read_text().splitlines()) == 1  # cloned once
    assert len(list(mirrors.glob("*.git"))) == 1
    # Runs that waited for the clone use it as fetched; one that asks later fetches the branch again.
    assert daemon.upload_requests() < 8
    built = (mlproject_home / "git" / "checkouts" / ".builds.log").read_text().splitlines()
    assert len(built) == 1, built  # one checkout, shared by all eight


# -- ssh: the scp-like form of the mission ----------------------------------------------------
def test_scp_like_url_over_ssh(cli, demo, ssh, _work_in_tmp):
    env = {"GIT_SSH_COMMAND": ssh.git_ssh_command()}
    result = ok(cli("run", "git@gitserver:org/demo.git", "-P", "who=ssh", "--env-manager", "local", env=env))
    assert "version two: ssh" in result.stdout
    tags = tags_of(run_id_of(result), _work_in_tmp / "mlflow.db")
    assert tags["mlflow.source.git.repoURL"] == "git@gitserver:org/demo.git"
    assert tags["mlproject.source.git.branch"] == "main" and tags["mlflow.source.git.commit"] == demo.main
    tagged = ok(cli("run", "git@gitserver:org/demo.git#sub", "-v", "v1", "--env-manager", "local", env=env))
    assert "sub version one" in tagged.stdout


def test_ssh_without_a_key_fails_without_prompting(cli, ssh, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(ssh.client_config.read_text().replace("IdentityFile", "#IdentityFile"))
    env = {"GIT_SSH_COMMAND": f"ssh -F {config} -o IdentityAgent=none", "SSH_AUTH_SOCK": ""}
    result = cli("run", "git@gitserver:org/demo.git", "--env-manager", "local", env=env, timeout=60)
    assert_clean_error(result, 2, "authentication")


# -- safety and errors ------------------------------------------------------------------------
@pytest.mark.parametrize("subdir", ["../..", "/etc", "sub/../../..", "escape", "escape/passwd"])
def test_subdirectory_cannot_leave_the_repository(cli, tmp_path, subdir, _work_in_tmp, mlproject_home):
    work = tmp_path / "evil"
    work.mkdir()
    git("init", "-q", "-b", "main", str(work))
    (work / "MLproject").write_text("entry_points:\n  main:\n    command: echo hi\n")
    os.symlink("/etc", work / "escape")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "evil", cwd=work)
    result = cli("run", f"file://{work}#{subdir}", "--env-manager", "local")
    assert_clean_error(result, 2)
    assert "outside" in result.stderr or "does not exist" in result.stderr
    assert runs_in(_work_in_tmp / "mlflow.db") == 0


def test_errors_are_one_line_and_create_no_run(cli, demo, daemon, tmp_path, _work_in_tmp, mlproject_home):
    closed = free_port()
    not_a_repo = tmp_path / "plain"
    not_a_repo.mkdir()
    cases = [
        (["run", f"git://127.0.0.1:{closed}/org/demo.git"], "cannot reach"),
        (["run", daemon.url("org/missing.git")], "not a git repository"),
        (["run", f"file://{not_a_repo}"], "not a git repository"),
        (["run", f"file://{demo.bare}", "-v", "no-such-branch"], "Unable to checkout version 'no-such-branch'"),
        (["run", f"file://{demo.bare}", "-v", "0" * 40], "no branch, tag or commit"),
        (["run", f"file://{demo.bare}#nope"], "Could not find subdirectory nope"),
        (["run", f"file://{demo.bare}", "-e", "train"], "Could not find train among entry points"),
        (["run", f"file://{demo.bare}", "--version=--upload-pack=touch /tmp/x"], "not a branch, tag or commit"),
        (["run", str(not_a_repo), "-v", "v1"], "Setting a version is only supported for Git project URIs"),
    ]
    for args, message in cases:
        result = cli(*args, "--env-manager", "local", timeout=60)
        assert_clean_error(result, 2, message)
    assert runs_in(_work_in_tmp / "mlflow.db") == 0 and ledger_rows(mlproject_home) == 0


# -- local repositories -----------------------------------------------------------------------
def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            path = Path(dirpath, name)
            info = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
            result[str(path.relative_to(root))] = (info.st_mode, digest)
    return result


def test_local_repository_is_never_changed_by_versioned_runs(cli, demo, tmp_path, _work_in_tmp):
    work = tmp_path / "clone"
    git("clone", "-q", str(demo.bare), str(work))
    git("checkout", "-q", "-b", "mine", cwd=work)
    (work / "say.py").write_text("import sys\nprint('uncommitted:', sys.argv[1])\n")  # a local change
    (work / "notes.txt").write_text("untracked\n")
    before = _snapshot(work)
    versions = (("v1", "version one"), ("origin/feature", "feature branch"), ("main", "version two"),
                (demo.v1[:9], "version one"))
    for version, expected in versions:
        result = ok(cli("run", str(work), "-v", version, "-P", "who=local", "--env-manager", "local"))
        assert f"{expected}: local" in result.stdout
    assert _snapshot(work) == before
    # Without --version it runs in place, uncommitted change included, and says so in its tags.
    result = ok(cli("run", str(work), "-P", "who=here", "--env-manager", "local"))
    assert "uncommitted: here" in result.stdout
    tags = tags_of(run_id_of(result), _work_in_tmp / "mlflow.db")
    assert tags["mlproject.source.git.dirty"] == "true" and tags["mlproject.source.git.branch"] == "mine"
    assert "mlflow.source.git.branch" not in tags and "mlflow.gitBranchName" not in tags  # as MLflow: no -v, no branch
    assert tags["mlflow.source.git.commit"] == demo.main and tags["mlflow.source.git.repoURL"] == str(demo.bare)
    assert tags["mlflow.source.name"] == f"file://{work}"  # MLflow's form for a local project in git
    nested = ok(cli("run", str(work / "sub"), "--env-manager", "local"))
    assert tags_of(run_id_of(nested), _work_in_tmp / "mlflow.db")["mlflow.source.name"] == f"file://{work}#sub"
    assert _snapshot(work) == before


def test_submodules_are_initialised(cli, tmp_path):
    lib = tmp_path / "lib"
    git("init", "-q", "-b", "main", str(lib))
    (lib / "helper.py").write_text("GREETING = 'from the submodule'\n")
    git("add", "-A", cwd=lib)
    git("commit", "-q", "-m", "lib", cwd=lib)
    app = tmp_path / "app"
    git("init", "-q", "-b", "main", str(app))
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", f"file://{lib}", "lib", cwd=app)
    (app / "MLproject").write_text("entry_points:\n  main:\n    command: python run.py\n")
    (app / "run.py").write_text("import sys\nsys.path.insert(0, 'lib')\nimport helper\nprint(helper.GREETING)\n")
    git("add", "-A", cwd=app)
    git("commit", "-q", "-m", "app", cwd=app)
    result = ok(cli("run", f"file://{app}", "--env-manager", "local"))
    assert "from the submodule" in result.stdout


# -- the cache's upkeep -----------------------------------------------------------------------
def test_cache_gc_keeps_what_a_run_uses(cli, demo, mlproject_home):
    from runner.sources import cache
    from runner.sources.urls import local_remote

    url = f"file://{demo.bare}"
    ok(cli("run", url, "-v", "v1", "--env-manager", "local"))
    ok(cli("run", f"{url}#sub", "-v", "feature", "--env-manager", "local"))
    held = cache.checkout(local_remote(str(demo.bare)), "feature")  # as a running run holds it
    try:
        listing = ok(cli("cache", "list")).stdout
        assert demo.v1[:12] in listing and demo.feature[:12] in listing
        dry = ok(cli("cache", "gc", "--older-than", "0", "--dry-run"))
        assert "would remove 1 checkout(s) and 0 mirror(s); kept 1 checkout(s) in use" in dry.stdout
        assert "would be freed; nothing was removed (--dry-run)" in dry.stdout
        assert demo.v1[:12] in ok(cli("cache", "list")).stdout
        result = ok(cli("cache", "gc", "--older-than", "0"))
        assert "removed 1 checkout(s) and 0 mirror(s); kept 1 checkout(s) in use" in result.stdout
        assert (held.tree / "say.py").exists()
    finally:
        held.lease.release()
    result = ok(cli("cache", "gc", "--older-than", "0"))
    assert "removed 1 checkout(s) and 1 mirror(s)" in result.stdout
    assert not list((mlproject_home / "git" / "mirrors").glob("*.git"))


def test_runs_from_threads_share_one_checkout(demo, mlproject_home, _work_in_tmp):
    import runner

    url = f"file://{demo.bare}"
    results, errors = [], []

    def one() -> None:
        try:
            submitted = runner.run(url, version="v1", parameters={"who": "thread"}, env_manager="local",
                                   stream_output=False)
            results.append(submitted.exit_code)
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and results == [0, 0, 0, 0]


def test_server_dying_mid_clone_fails_clearly_and_leaves_nothing(tmp_path, mlproject_home, _work_in_tmp, cli):
    """The git server's connection drops after 64 KiB of a ~3 MB pack: one clear error, no
    half-made mirror or checkout, no run; once the server is back, the same URL runs."""
    from gitservers import CuttingRelay

    repo = make_demo_repo(tmp_path / "big")
    (repo.work / "weights.bin").write_bytes(os.urandom(3 * 1024 * 1024))  # incompressible
    git("add", "-A", cwd=repo.work)
    git("commit", "-q", "-m", "weights", cwd=repo.work)
    git("push", "-q", str(repo.bare), "main", cwd=repo.work)
    server = GitDaemon(repo.bare.parent.parent, free_port(), tmp_path / "daemon.log")
    server.start()
    relay = CuttingRelay(server.port, cut_after=64 * 1024)
    url = f"git://127.0.0.1:{relay.port}/org/demo.git"
    try:
        result = cli("run", url, "-P", "who=relay", "--env-manager", "local")
        assert relay.cuts >= 1, "the transfer was not cut: the pack is too small"
        assert_clean_error(result, 2, "was lost during the transfer")
        mirrors = mlproject_home / "git" / "mirrors"
        assert not list(mirrors.glob(".tmp-*")) and not [p for p in mirrors.glob("*") if p.name != ".locks"]
        checkouts = mlproject_home / "git" / "checkouts"
        assert not checkouts.exists() or not [p for p in checkouts.iterdir() if p.name != ".locks"]
        assert runs_in(_work_in_tmp / "mlflow.db") == 0 and ledger_rows(mlproject_home) == 0
        relay.cut_after = None  # the server is reachable again
        again = cli("run", url, "-P", "who=relay", "--env-manager", "local")
        assert again.returncode == 0, again.stderr
        assert "version two: relay" in again.stdout
        # A fetch of the default branch cut the same way: the branch as fetched before runs, with a warning.
        (repo.work / "more.bin").write_bytes(os.urandom(3 * 1024 * 1024))
        git("add", "-A", cwd=repo.work)
        git("commit", "-q", "-m", "more weights", cwd=repo.work)
        git("push", "-q", str(repo.bare), "main", cwd=repo.work)
        relay.cut_after = 64 * 1024
        cached = cli("run", url, "-P", "who=cached", "--env-manager", "local")
        assert cached.returncode == 0, cached.stderr
        assert "warning: the connection to" in cached.stderr and "as fetched before" in cached.stderr
        assert "version two: cached" in cached.stdout
        assert not list((mlproject_home / "git" / "mirrors").glob(".tmp-*"))
    finally:
        relay.close()
        server.stop()


def test_runs_of_one_cached_commit_do_not_see_each_other_s_files(cli, tmp_path, mlproject_home):
    """Each run works in its own copy of the cached commit, as each `mlflow run` works in a fresh
    clone: a file one run writes into its working directory is not there for the next (as root too)."""
    work = tmp_path / "writer"
    work.mkdir()
    (work / "MLproject").write_text("entry_points:\n  main:\n    command: 'ls; echo out > written.txt; chmod u+w data.txt && echo more >> data.txt'\n")
    (work / "data.txt").write_text("original\n")
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "writer", cwd=work)
    url = f"file://{work}"
    first = ok(cli("run", url, "-v", "main", "--env-manager", "local"))
    second = ok(cli("run", url, "-v", "main", "--env-manager", "local"))
    for result in (first, second):
        assert result.stdout.split() == ["MLproject", "data.txt"], result.stdout
    [checkout] = (mlproject_home / "git" / "checkouts").glob("git-*")
    assert (checkout / "tree" / "data.txt").read_text() == "original\n" and not (checkout / "tree" / "written.txt").exists()
    assert not list((mlproject_home / "runs").glob("*/work"))  # each copy lived as long as its run
