"""`make bench`: mlproject-runner side by side with `mlflow run` and the bare command.

    python benchmarks/run.py [--repeat N] [--mlflow-repeat N] [--no-mlflow]

Writes the tables to benchmarks/results/latest.md and prints them.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BENCH_DIR, Timing, measure, measure_interleaved, mlflow_python, mlproject_command, start_mlflow_server, table  # noqa: E402

TRIVIAL_MLPROJECT = """
name: trivial
entry_points:
  main:
    command: "true"
  python:
    command: "python -c pass"
"""


def trivial_local(args: argparse.Namespace, work: Path) -> str:
    """Warm overhead of `mlproject run` on a trivial local project (target: <= 100 ms, <= 60 MB)."""
    project = work / "trivial"
    project.mkdir()
    (project / "MLproject").write_text(textwrap.dedent(TRIVIAL_MLPROJECT).lstrip())
    env = {**os.environ, "MLPROJECT_HOME": str(work / "home"), "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}
    mlflow_py = None if args.no_mlflow else mlflow_python()
    out = []
    for entry, bare in (("main", ["bash", "-c", "true"]), ("python", ["bash", "-c", "python -c pass"])):
        ours = mlproject_command() + ["run", str(project), "-e", entry, "--env-manager", "local"]
        measure("warm-up", ours, 2, work, env)
        rows: list[Timing] = []
        baseline = measure(f"bare command (`{'true' if entry == 'main' else 'python -c pass'}`)", bare, args.repeat, project, env)
        rows.append(baseline)
        rows.append(measure("mlproject run --env-manager local", ours, args.repeat, work, env))
        if mlflow_py is not None:
            theirs = [str(mlflow_py), "-m", "mlflow", "run", str(project), "-e", entry, "--env-manager", "local"]
            measure("warm-up", theirs, 1, work, env)
            rows.append(measure("mlflow run --env-manager local", theirs, args.mlflow_repeat, work, env))
        overhead = (rows[1].median - baseline.median) * 1000
        ratio = rows[2].median / rows[1].median if len(rows) > 2 and rows[2].seconds else None
        verdict = "meets" if overhead <= 100 and rows[1].peak_rss_mb <= 40 and (ratio is None or ratio >= 30) else "MISSES"
        note = (f"Target: overhead <= 100 ms, peak RSS <= 40 MB, at least 30x faster than mlflow run. Measured "
                f"{overhead:.1f} ms, {rows[1].peak_rss_mb:.1f} MB" + (f", {ratio:.0f}x" if ratio else "") + f": {verdict}.")
        out.append(table(f"Trivial local project, entry point `{entry}`", rows, baseline, note))
    return "\n".join(out)


def _git_daemon(served: Path, port: int) -> subprocess.Popen:
    # In a session of its own: `git daemon` serves from a `git-daemon` child that outlives a
    # terminated `git` (see _stop_group).
    return subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={served}",
                             "--listen=127.0.0.1", f"--port={port}", str(served)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _stop_group(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text).lstrip())
    return root


def _uv() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from runner.envs.python.uv import uv_binary

    return uv_binary()


def python_env_warm(args: argparse.Namespace, work: Path) -> str:
    """Warm run of a python_env project whose environment exists (target: <= 150 ms over the bare command in that env)."""
    project = _write(work / "warm", {
        "MLproject": "name: warm\nentry_points:\n  main:\n    command: \"python -c pass\"\n",
        "python_env.yaml": "python: '3.11'\ndependencies: [six==1.16.0]\n",
    })
    env = {**os.environ, "MLPROJECT_HOME": str(work / "home")}
    ours = mlproject_command() + ["run", str(project)]
    measure("warm-up (build)", ours, 2, work, env)
    prefix = subprocess.run(mlproject_command() + ["env", "path", str(project)], env=env, capture_output=True, text=True, check=True).stdout.strip()
    bare_env = {**env, "PATH": f"{prefix}/bin:{env['PATH']}", "VIRTUAL_ENV": prefix}
    baseline = measure("bare `python -c pass` in the environment", ["bash", "-c", "python -c pass"], args.repeat, project, bare_env)
    rows = [baseline, measure("mlproject run (uv env exists)", ours, args.repeat, work, env)]
    mlflow_py = None if args.no_mlflow else mlflow_python()
    if mlflow_py is not None:
        exact = ".".join(map(str, sys.version_info[:3]))  # MLflow would ask pyenv to install the newest 3.11.x
        (project / "python_env.yaml").write_text(f"python: '{exact}'\ndependencies: [six==1.16.0]\n")
        mlenv = {**env, "MLFLOW_ENV_ROOT": str(work / "mlflow-envs"), "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
                 "PATH": f"{Path(mlflow_py).parent}:{env['PATH']}"}
        for manager in ("uv", "virtualenv"):
            theirs = [str(mlflow_py), "-m", "mlflow", "run", str(project), "--env-manager", manager]
            warm = measure("warm-up (build)", theirs, 1, work, mlenv, may_fail=True)
            if warm.failure:
                warm.label = f"mlflow run --env-manager {manager} (env exists)"
                rows.append(warm)
                continue
            rows.append(measure(f"mlflow run --env-manager {manager} (env exists)", theirs, args.mlflow_repeat, work, mlenv))
    overhead = (rows[1].median - baseline.median) * 1000
    note = f"Target: overhead <= 150 ms. Measured {overhead:.1f} ms: {'meets' if overhead <= 150 else 'MISSES'}."
    return table("python_env project, environment already built", rows, baseline, note)


HEAVY_ENV = "python: '3.11'\ndependencies:\n  - numpy\n  - pandas\n  - scikit-learn\n  - mlflow==3.17.2\n"


def cold_build(args: argparse.Namespace, work: Path) -> str:
    """Cold build of numpy+pandas+scikit-learn+mlflow with a warm download cache."""
    home_dir = work / "home"
    env = {**os.environ, "MLPROJECT_HOME": str(home_dir)}
    uv = _uv()
    mlmain = "name: heavy\nentry_points:\n  main:\n    command: \"python -c 'import mlflow, sklearn, pandas'\"\n"
    warm = _write(work / "warmcache", {"MLproject": mlmain, "python_env.yaml": HEAVY_ENV + "  - six\n"})
    measure("fill the download cache", mlproject_command() + ["env", "build", str(warm)], 1, work, env)
    # Interleaved, so both see the same network and disk conditions (uv revalidates
    # index pages even with a warm cache). A distinct extra requirement each round
    # gives every build a new key, so each one is cold.
    hand_env = {**env, "UV_CACHE_DIR": str(home_dir / "cache" / "uv"), "UV_PYTHON_DOWNLOADS": "never"}
    rows, hand_rows = [], []
    for i in range(args.build_repeat):
        pin = f"pip=={24 + i // 2}.{i % 2}"
        target = work / f"byhand{i}"
        script = (
            f"{uv} venv -q -p 3.11 {target} && {uv} pip install -q --python {target}/bin/python "
            f"numpy pandas scikit-learn mlflow==3.17.2 six {pin}"
        )
        hand_rows.append(measure("by hand", ["bash", "-c", script], 1, work, hand_env))
        project = _write(work / f"heavy{i}", {"MLproject": mlmain, "python_env.yaml": HEAVY_ENV + f"  - six\n  - {pin}\n"})
        rows.append(measure("mlproject env build", mlproject_command() + ["env", "build", str(project)], 1, work, env))
    ours = _merge(rows, "mlproject env build (cold env, warm cache)")
    by_hand = _merge(hand_rows, "uv venv + uv pip install by hand (same cache)")
    result_rows = [by_hand, ours]
    # End to end, like MLflow's rows below: a cold build and then the command (imports mlflow, sklearn, pandas).
    fresh = _write(work / "heavy-e2e", {"MLproject": mlmain, "python_env.yaml": HEAVY_ENV + "  - six\n  - pip==23.3\n"})
    result_rows.append(measure("mlproject run (cold env, end to end)", mlproject_command() + ["run", str(fresh)], 1, work, env))
    mlflow_py = None if args.no_mlflow or args.skip_mlflow_builds else mlflow_python()
    if mlflow_py is not None:
        mlflow_bin = str(Path(mlflow_py).parent)
        for manager in ("uv", "virtualenv"):
            # The exact interpreter version: MLflow asks pyenv to install the newest 3.11.x otherwise, offline.
            exact = HEAVY_ENV.replace("'3.11'", "'" + ".".join(map(str, sys.version_info[:3])) + "'")
            project = _write(work / f"mlflow-{manager}", {"MLproject": mlmain, "python_env.yaml": exact})
            mlenv = {**env, "MLFLOW_ENV_ROOT": str(work / f"mlflow-envs-{manager}"), "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
                     "PATH": f"{mlflow_bin}:{env['PATH']}"}
            result_rows.append(measure(f"mlflow run --env-manager {manager} (end to end)", [str(mlflow_py), "-m", "mlflow", "run", str(project), "--env-manager", manager], 1, work, mlenv, may_fail=True))
    virtualenv_row = next((r for r in result_rows if "virtualenv" in r.label and r.failure is None), None)
    end_to_end = result_rows[2]
    ratio = ours.median / by_hand.median
    note = (f"Target: within 10% of by hand (measured {ratio:.2f}x: {'meets' if ratio <= 1.10 else 'MISSES'}); "
            "at least 5x faster than MLflow's virtualenv manager"
            + (f" (measured end to end: {virtualenv_row.median / end_to_end.median:.1f}x)." if virtualenv_row else " (not measured)."))
    return table("Cold build: numpy, pandas, scikit-learn, mlflow (warm download cache)", result_rows, by_hand, note,
                 reference=end_to_end)


def concurrent_first_runs(args: argparse.Namespace, work: Path) -> str:
    """16 concurrent first runs of one new environment: one build, 16 successes."""
    import time as _time

    project = _write(work / "conc", {
        "MLproject": "name: conc\nentry_points:\n  main:\n    command: \"python -c 'import six'\"\n",
        "python_env.yaml": "dependencies: [six==1.16.0]\n",
    })
    env = {**os.environ, "MLPROJECT_HOME": str(work / "home")}
    started = _time.perf_counter()
    procs = [subprocess.Popen(mlproject_command() + ["run", str(project)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(16)]
    codes = [p.wait() for p in procs]
    elapsed = _time.perf_counter() - started
    builds = (work / "home" / "envs" / ".builds.log").read_text().splitlines()
    ok = codes.count(0)
    verdict = "meets" if ok == 16 and len(builds) == 1 else "MISSES"
    return (f"### 16 concurrent first runs of one new environment\n\n{ok}/16 succeeded, {len(builds)} build(s), "
            f"{elapsed:.2f} s wall for all. Target: one build, 16 successes: {verdict}.\n")


def _merge(rows: list[Timing], label: str) -> Timing:
    merged = Timing(label)
    for row in rows:
        merged.seconds += row.seconds
        merged.peak_rss_mb = max(merged.peak_rss_mb, row.peak_rss_mb)
    return merged


def tracking_overhead(args: argparse.Namespace, work: Path) -> str:
    """What tracking adds to the warm path: an existing sqlite store (direct writes) and a REST server."""
    import signal

    project = _write(work / "trk", {"MLproject": "name: trk\nentry_points:\n  main:\n    command: \"true\"\n"})
    base_env = {**os.environ, "MLPROJECT_HOME": str(work / "home")}
    started = None if args.no_mlflow else start_mlflow_server(work)
    if started is None:
        return "### Tracking overhead\n\nskipped (needs mlflow)\n"
    server, url = started
    try:
        ours = mlproject_command() + ["run", str(project), "--env-manager", "local"]
        baseline = measure("bare command (`true`)", ["bash", "-c", "true"], args.repeat, work, base_env)
        sqlite_env = {**base_env, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/store.db"}
        measure("warm-up (creates the store)", ours, 2, work, sqlite_env)
        rest_env = {**base_env, "MLFLOW_TRACKING_URI": url}
        measure("warm-up", ours, 2, work, rest_env)
        rows = [baseline] + measure_interleaved([
            ("mlproject run, untracked (MLPROJECT_NO_TRACKING=1)", ours, {**base_env, "MLPROJECT_NO_TRACKING": "1"}),
            ("mlproject run, sqlite store exists (direct writes)", ours, sqlite_env),
            ("mlproject run, REST tracking server", ours, rest_env),
        ], args.repeat * 2, work)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
    sqlite_adds = (rows[2].median - rows[1].median) * 1000
    rest_adds = (rows[3].median - rows[1].median) * 1000
    note = (f"Tracking adds, over the untracked run: sqlite {sqlite_adds:.1f} ms (target <= 100 ms: "
            f"{'meets' if sqlite_adds <= 100 else 'MISSES'}), REST {rest_adds:.1f} ms (target <= 60 ms: "
            f"{'meets' if rest_adds <= 60 else 'MISSES'}).")
    return table("Tracking on the warm path", rows, baseline, note, reference=rows[1])


def offline_tracking(args: argparse.Namespace, work: Path) -> str:
    """A run recorded offline (asked for, or its server unreachable) against one tracked to a REST
    server, and `mlproject runs sync` of those runs to it afterwards: per run, and again (nothing)."""
    import signal
    import socket

    project = _write(work / "offl", {"MLproject": "name: offl\nentry_points:\n  main:\n    command: \"true\"\n"})
    base_env = {**os.environ, "MLPROJECT_HOME": str(work / "home")}
    started = None if args.no_mlflow else start_mlflow_server(work)
    if started is None:
        return "### Offline tracking\n\nskipped (needs mlflow)\n"
    server, url = started
    with socket.socket() as sock:  # (a port nothing listens on: the server that cannot be reached)
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        ours = mlproject_command() + ["run", str(project), "--env-manager", "local"]
        rest_env = {**base_env, "MLFLOW_TRACKING_URI": url}
        measure("warm-up (creates the offline store)", ours + ["--tracking", "offline"], 2, work, rest_env)
        measure("warm-up", ours, 2, work, rest_env)
        baseline = measure("bare command (`true`)", ["bash", "-c", "true"], args.repeat, work, base_env)
        rows = [baseline] + measure_interleaved([
            ("mlproject run, REST tracking server", ours, rest_env),
            ("mlproject run --tracking offline", ours + ["--tracking", "offline"], rest_env),
            ("mlproject run, its server unreachable (recorded offline)", ours, {**base_env, "MLFLOW_TRACKING_URI": closed}),
        ], args.repeat * 2, work)
        waiting = args.repeat * 4 + 2  # (two offline kinds, interleaved, and the warm-up's two)
        # (--to: the runs whose server was unreachable go to the one that answers)
        sync = measure(f"mlproject runs sync of {waiting} offline runs", mlproject_command() + ["runs", "sync", "--to", url],
                       1, work, rest_env)
        again = measure("mlproject runs sync again (nothing to send)", mlproject_command() + ["runs", "sync"],
                        args.repeat, work, rest_env)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
    per_run = sync.median * 1000 / waiting
    note = (f"Recording offline costs {(rows[2].median - rows[1].median) * 1000:+.1f} ms against the REST server "
            f"({(rows[3].median - rows[1].median) * 1000:+.1f} ms when the server is unreachable: refused at once). "
            f"The sync took {per_run:.0f} ms per run, the mlflow client's import (once) included; a sync with "
            f"nothing to send, {again.median * 1000:.0f} ms.")
    return table("Offline tracking", [*rows, sync, again], baseline, note, reference=rows[1])


def git_cached(args: argparse.Namespace, work: Path) -> str:
    """Second run of a git project at a cached commit, against the same project from a local directory."""
    import socket
    import time as _time

    git_env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
               "GIT_COMMITTER_EMAIL": "b@b"}

    def git(*argv: str, cwd: Path | None = None) -> str:
        return subprocess.run(["git", *argv], cwd=cwd, env=git_env, check=True, capture_output=True, text=True).stdout.strip()

    plain = _write(work / "plain", {"MLproject": TRIVIAL_MLPROJECT})
    checkout = _write(work / "checkout", {"MLproject": TRIVIAL_MLPROJECT})
    git("init", "-q", "-b", "main", cwd=checkout)
    git("add", "-A", cwd=checkout)
    git("commit", "-q", "-m", "one", cwd=checkout)
    git("tag", "v1", cwd=checkout)
    sha = git("rev-parse", "HEAD", cwd=checkout)
    served = work / "srv"
    git("clone", "-q", "--bare", str(checkout), str(served / "trivial.git"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    daemon = _git_daemon(served, port)
    url = f"git://127.0.0.1:{port}/trivial.git"
    env = {**os.environ, "MLPROJECT_HOME": str(work / "home"), "MLPROJECT_NO_TRACKING": "1"}
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                _time.sleep(0.05)
        run = mlproject_command() + ["run", "--env-manager", "local"]
        measure("warm-up (clone, checkout)", run + [url, "-v", sha], 1, work, env)
        measure("warm-up", run + [url, "-v", "v1"], 1, work, env)
        baseline = measure("bare command (`true`)", ["bash", "-c", "true"], args.repeat, work, env)
        local = measure("local directory", run + [str(plain)], args.repeat, work, env)
        rows = [
            baseline, local,
            measure("local git working copy (commit, branch, changes recorded)", run + [str(checkout)], args.repeat, work, env),
            measure("git URL, cached commit (-v <full sha>)", run + [url, "-v", sha], args.repeat, work, env),
            measure("git URL, cached tag (-v v1)", run + [url, "-v", "v1"], args.repeat, work, env),
            measure("git URL, default branch (fetched each run)", run + [url], args.repeat, work, env),
        ]
        _stop_group(daemon)
        rows.append(measure("git URL, cached commit, server stopped", run + [url, "-v", sha], args.repeat, work, env))
        mlflow_py = None if args.no_mlflow else mlflow_python()
        if mlflow_py is not None:
            daemon = _git_daemon(served, port)
            _time.sleep(0.5)
            theirs = [str(mlflow_py), "-m", "mlflow", "run", url, "-v", sha, "--env-manager", "local"]
            mlflow_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}
            measure("warm-up", theirs, 1, work, mlflow_env, may_fail=True)
            rows.append(measure("mlflow run <git URL> -v <full sha> (clones every run)", theirs, args.mlflow_repeat, work,
                                mlflow_env, may_fail=True))
    finally:
        _stop_group(daemon)
    adds = (rows[3].median - local.median) * 1000
    note = (f"Target: a cached commit adds <= 50 ms over the local directory. Measured {adds:.1f} ms (tag: "
            f"{(rows[4].median - local.median) * 1000:.1f} ms): {'meets' if adds <= 50 else 'MISSES'}.")
    return table("Git project at a cached commit (untracked, to isolate the fetch)", rows, baseline, note, reference=local)


def conda_env(args: argparse.Namespace, work: Path) -> str:
    """A conda project against a local channel (tests/condachannel.py): cold build and warm run."""
    # Built in a child: a forked process's peak RSS starts from its parent's.
    channel = work / "channel"
    tests = Path(__file__).resolve().parents[1] / "tests"
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(tests)!r}); from condachannel import "
                    f"build_channel; from pathlib import Path; build_channel(Path({str(channel)!r}))"], check=True)
    project = _write(work / "conda", {
        "MLproject": "name: c\nconda_env: conda.yaml\nentry_points:\n  main:\n    command: \"python -c pass\"\n",
        "conda.yaml": f"channels: ['file://{channel}']\ndependencies: [python=3.11, pyhello, greeter]\n",
    })
    base_env = {**os.environ, "MLPROJECT_NO_TRACKING": "1"}
    cold_rows = []
    for index in range(max(3, args.build_repeat)):
        env = {**base_env, "MLPROJECT_HOME": str(work / f"home-cold-{index}")}
        cold_rows.append(measure("cold build: empty store and package cache", mlproject_command() + ["env", "build", str(project)], 1, work, env))
    cold = _merge(cold_rows, "cold build (`mlproject env build`): empty store and package cache")
    warm_home = {**base_env, "MLPROJECT_HOME": str(work / "home-warm")}
    build = mlproject_command() + ["env", "build", str(project)]
    prefix = subprocess.run(build, env=warm_home, capture_output=True, text=True, check=True).stdout.strip()
    rebuild_rows = []
    for _ in range(max(3, args.build_repeat)):
        subprocess.run(mlproject_command() + ["env", "rm", Path(prefix).name.split("-", 1)[1]], env=warm_home, check=True,
                       capture_output=True)
        rebuild_rows.append(measure("build", build, 1, work, warm_home))
    rebuild = _merge(rebuild_rows, "build with the package cache warm (solve + link)")
    baseline = measure("command in the environment (`python -c pass`)", [f"{prefix}/bin/python", "-c", "pass"], args.repeat, work, warm_home)
    warm = measure("mlproject run (environment built)", mlproject_command() + ["run", str(project)], args.repeat, work, warm_home)
    adds = (warm.median - baseline.median) * 1000
    note = (f"Targets: warm run <= 150 ms over the command in the environment: measured {adds:.1f} ms "
            f"({'meets' if adds <= 150 else 'MISSES'}); cold build (pip list excluded) < 2 s: measured "
            f"{cold.median:.2f} s ({'meets' if cold.median < 2 else 'MISSES'}).")
    return table("Conda project from a local channel (python 3.11, pyhello, greeter)", [baseline, warm, rebuild, cold], baseline, note)


def docker_reuse(args: argparse.Namespace, work: Path) -> str:
    """Second run of an unchanged --build-image project against `docker run` of the same image."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from dockerd import BASE_IMAGE, Daemon

    daemon = Daemon()
    daemon.start()
    try:
        daemon.load_base_image()
        project = _write(work / "dock", {
            "MLproject": f"name: bench-docker\ndocker_env:\n  image: {BASE_IMAGE}\nentry_points:\n  main:\n"
                         "    command: \"python3 -c pass\"\n",
        })
        env = {**os.environ, "DOCKER_HOST": daemon.host, "MLPROJECT_HOME": str(work / "home"), "MLPROJECT_NO_TRACKING": "1"}
        ours = mlproject_command() + ["run", str(project), "--build-image"]
        measure("warm-up (builds the image)", ours, 1, work, env)
        tag = daemon.docker("images", "--format", "{{.Repository}}:{{.Tag}}", "bench-docker").stdout.split()[0]
        theirs = ["docker", "run", "--rm", "--network", "none", "-w", "/mlflow/projects/code", tag, "python3", "-c", "pass"]
        repeat = max(3, args.repeat // 3)
        baseline = measure(f"docker run --rm {tag} python3 -c pass", theirs, repeat, work, env)
        reused = measure("mlproject run --build-image (image reused)", ours, repeat, work, env)
        builds = len((work / "home" / "envs" / ".builds.log").read_text().splitlines())
    finally:
        daemon.stop()
    adds = (reused.median - baseline.median) * 1000
    note = (f"Target: no rebuild and at most 300 ms over docker run. Builds: {builds} (the warm-up). Measured "
            f"{adds:+.0f} ms: {'meets' if adds <= 300 and builds == 1 else 'MISSES'}. The daemon uses the vfs storage "
            "driver (all that runs here): creating a container copies the whole image, seconds either way.")
    return table("Docker project, second run of an unchanged --build-image project", [baseline, reused], baseline, note)


def changed_spec(args: argparse.Namespace, work: Path) -> str:
    """`mlproject validate` of a project whose MLproject changes before every call (parsed and checked
    against the schema each time) and of one that does not (read from the parse cache)."""
    project = _write(work / "spec", {"MLproject": (
        "name: spec\nentry_points:\n  main:\n    parameters:\n      alpha: {type: float, default: 0.5}\n"
        "      data: {type: string, default: x}\n    command: \"python train.py {alpha} {data}\"\n")})
    env = {**os.environ, "MLPROJECT_HOME": str(work / "home")}
    ours = " ".join(mlproject_command() + ["validate", ".", "--env-manager", "local"])
    touch = 'echo "# $EPOCHREALTIME" >> MLproject'
    baseline = measure("bash appending a comment to MLproject", ["bash", "-c", touch], args.repeat, project, env)
    measure("warm-up", ["bash", "-c", ours], 2, project, env)
    rows = [baseline,
            measure("mlproject validate, MLproject unchanged (cached parse)", ["bash", "-c", ours], args.repeat, project, env),
            measure("mlproject validate, MLproject changed each time", ["bash", "-c", f"{touch} && {ours}"], args.repeat, project, env)]
    adds = (rows[2].median - rows[1].median) * 1000
    return table("A changed project file: YAML parse and schema check", rows, baseline,
                 f"A changed file costs {adds:.0f} ms over a cached one (YAML and the schema check, once per change).")


def ledger_listing(args: argparse.Namespace, work: Path) -> str:
    """1,000 finished runs in the ledger: `mlproject runs list` over all of them (target: under a second)."""
    home = work / "home"
    fill = ("import os, sys; sys.path.insert(0, {repo!r}); os.environ['MLPROJECT_HOME'] = {home!r}\n"
            "from runner.tracking.ledger import Ledger, RunRecord\n"
            "ledger = Ledger()\n"
            "for i in range(1000):\n"
            "    rid = os.urandom(16).hex()\n"
            "    ledger.start(RunRecord(rid, '/p', '/p', 'main', 'true', 'local', '/dev/null', {{'i': str(i)}}))\n"
            "    ledger.finish(rid, 'FINISHED', 0)\n").format(repo=str(Path(__file__).resolve().parents[1]), home=str(home))
    subprocess.run([sys.executable, "-c", fill], check=True)
    env = {**os.environ, "MLPROJECT_HOME": str(home)}
    rows = [
        measure("mlproject runs list --limit 1000", mlproject_command() + ["runs", "list", "--limit", "1000"], args.repeat, work, env),
        measure("mlproject runs list --limit 1000 --json", mlproject_command() + ["runs", "list", "--limit", "1000", "--json"],
                args.repeat, work, env),
    ]
    worst = max(row.median for row in rows)
    note = f"Target: 1,000 runs listed in under a second. Measured {worst * 1000:.0f} ms: {'meets' if worst < 1 else 'MISSES'}."
    return table("Ledger with 1,000 runs", rows, rows[0], note)


SWEEP_MLPROJECT = """
name: trivial-sweep
entry_points:
  main:
    parameters:
      x: {type: int, default: 0}
    command: "echo {x} > /dev/null"
  chatty:
    parameters:
      x: {type: int, default: 0}
      lines: {type: int, default: 40000}
    command: "yes {x}-0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz | head -n {lines}"
"""

MLFLOW_HYPERPARAM = """
import sys
from concurrent.futures import ThreadPoolExecutor
import mlflow.projects

uri = sys.argv[1]
def trial(x):
    return mlflow.projects.run(uri, parameters={"x": x}, env_manager="local", synchronous=True).get_status()
with ThreadPoolExecutor(2) as pool:
    statuses = list(pool.map(trial, range(40)))
assert statuses == ["FINISHED"] * 40, statuses
"""


def sweep_grid(args: argparse.Namespace, work: Path) -> str:
    """A grid of 40 trials of a trivial project, 2 at a time: the sweep's own overhead per trial
    over a bare `xargs -P2` of the same 40 commands (target <= 100 ms), and MLflow's hyperparam
    example's way (mlflow.projects.run per trial from a thread pool) beside it."""
    project = _write(work / "trivial-sweep", {"MLproject": SWEEP_MLPROJECT})
    env = {**os.environ, "MLPROJECT_HOME": str(work / "home"), "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}
    bare = ["bash", "-c", "seq 0 39 | xargs -P2 -I{} bash -c 'echo {} > /dev/null'"]
    ours = mlproject_command() + ["sweep", str(project), "-P", "x=range(0,40)", "--max-parallel", "2",
                                  "--env-manager", "local"]
    measure("warm-up", ours, 1, work, env)
    repeat = max(2, args.repeat // 5)
    rows = [measure("bare: xargs -P2, 40 commands", bare, repeat, work, env),
            measure("mlproject sweep, 40-trial grid, --max-parallel 2 (sqlite tracking)", ours, repeat, work, env)]
    mlflow_py = None if args.no_mlflow else mlflow_python()
    if mlflow_py is not None:
        script = work / "hyperparam.py"
        script.write_text(MLFLOW_HYPERPARAM)
        rows.append(measure("mlflow.projects.run per trial, 2 threads (MLflow's hyperparam example)",
                            [str(mlflow_py), str(script), str(project)], 1, work, env))
    per_trial = (rows[1].median - rows[0].median) / 40 * 1000
    note = (f"Target: the sweep's own overhead at most 100 ms per trial. Measured {per_trial:.0f} ms per trial "
            f"(the 40-trial sweep's wall time over xargs', divided by 40): {'meets' if per_trial <= 100 else 'MISSES'}.")
    return table("Sweep: a 40-trial grid of a trivial project, 2 at a time", rows, rows[0], note)


def _driver_peak_mb(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, the driver process's own peak RSS in MB: its VmHWM, read until it exits,
    what it said on stderr)."""
    with tempfile.TemporaryFile() as said:  # (a file: 1,000 trials' lines would fill a pipe and block it)
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=said)
        peak = 0.0
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024)
            except OSError:
                pass
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        said.seek(0)
        stderr = said.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {stderr[-2000:]}")
    return elapsed, peak, stderr


def sweep_scale(args: argparse.Namespace, work: Path) -> str:
    """Sweeps at scale on this machine: a 200-trial grid at --max-parallel 8 over a bare `xargs
    -P8` of the same commands (target: at most 15 ms per trial), and the driver's own peak memory
    on `--trials` trials (target: at most 100 MB at 1,000)."""
    project = _write(work / "trivial-sweep", {"MLproject": SWEEP_MLPROJECT})
    env = {**os.environ, "MLPROJECT_HOME": str(work / "home"), "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}
    bare = ["bash", "-c", "seq 0 199 | xargs -P8 -I{} bash -c 'echo {} > /dev/null'"]

    def sweep_of(trials: int) -> list[str]:
        return mlproject_command() + ["sweep", str(project), "-P", f"x=range(0,{trials})", "--max-parallel", "8",
                                      "--env-manager", "local"]

    ours = sweep_of(200)
    measure("warm-up", sweep_of(4), 1, work, env)
    rows = measure_interleaved([("bare: xargs -P8, 200 commands", bare, env),
                                ("mlproject sweep, 200-trial grid, --max-parallel 8 (sqlite tracking)", ours, env)],
                               max(1, args.repeat // 15), work)
    per_trial = (rows[1].median - rows[0].median) / 200 * 1000
    seconds, peak, said = _driver_peak_mb(sweep_of(args.trials), work, env)
    sweep_id = re.search(r"sweep (\S+): \d+ trial", said).group(1)  # type: ignore[union-attr]
    show = measure(f"mlproject sweep show, {args.trials} trials", mlproject_command() + ["sweep", "show", sweep_id],
                   5, work, env)
    note = (f"Targets: at most 15 ms per trial over xargs -P8; the driver at most 100 MB on 1,000 trials; "
            f"`sweep show` of 1,000 trials under 1 s. "
            f"Measured {per_trial:.0f} ms per trial over xargs ({'meets' if per_trial <= 15 else 'MISSES'}); "
            f"the driver's own peak RSS (VmHWM) on {args.trials} trials: {peak:.0f} MB in {seconds:.0f} s "
            f"({'meets' if peak <= 100 else 'MISSES'}{'' if args.trials >= 1000 else ', fewer trials than the target'}); "
            f"`sweep show` of them: {show.median:.2f} s median of 5 ({'meets' if show.median < 1 else 'MISSES'}).")
    return table("Sweep at scale: 200 trials, 8 at a time", rows, rows[0], note)


SLURM_MLPROJECT = """
name: stamp
entry_points:
  main:
    parameters:
      out: {type: string}
    command: "date +%s.%N > {out}"
"""


def slurm_backend(args: argparse.Namespace, work: Path) -> str:
    """The slurm backend on a real two-node cluster on this machine (tests/slurmcluster.py):
    submission overhead over a bare sbatch (target <= 150 ms) and from submission to the
    command starting on an idle cluster (target <= 0.5 s over a bare sbatch job)."""
    import time as _time

    sys.path.insert(0, str(BENCH_DIR.parent / "tests"))
    from slurmcluster import SlurmCluster

    cluster = SlurmCluster()
    cluster.start()
    try:
        project = _write(work / "stamp", {"MLproject": SLURM_MLPROJECT})
        env = {**os.environ, **cluster.env, "MLPROJECT_HOME": str(work / "home"),
               "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}
        stamp = work / "stamp.txt"
        bare = ["sbatch", "--parsable", "-o", "/dev/null", "--wrap", f"date +%s.%N > {stamp}"]
        ours = mlproject_command() + ["run", str(project), "-b", "slurm", "--detach", "--env-manager", "local",
                                      "-P", f"out={stamp}"]
        for _ in range(2):  # warm-up: the store, the staged snapshot, the page cache
            measure("warm-up", ours, 1, work, env)
            cluster.wait_idle()
        local = mlproject_command() + ["run", str(project), "--env-manager", "local", "-P", f"out={stamp}"]
        submit = measure_interleaved([("bare `sbatch --wrap ...`", bare, env),
                                      ("mlproject run -b slurm --detach (staged project, sqlite tracking)", ours, env),
                                      ("for reference: mlproject run of the same project here (local backend)", local, env)],
                                     args.repeat, work, before=cluster.wait_idle)
        cluster.wait_idle(300)
        overhead = (submit[1].median - submit[0].median) * 1000
        own = (submit[1].median - submit[0].median - submit[2].median) * 1000
        note = (f"Target: submission at most 150 ms over a bare sbatch. Measured {overhead:.0f} ms: "
                f"{'meets' if overhead <= 150 else 'MISSES'}. Of that, a whole local run of the same project (the "
                f"runner's start, the project, the tracked run, its command) takes {submit[2].median * 1000:.0f} ms; "
                f"what the submission adds over both is {own:.0f} ms.")
        out = [table("Slurm: submitting a job", submit, submit[0], note)]
        starts = {"bare": Timing("bare sbatch: submission to the command's start"),
                  "ours": Timing("mlproject run -b slurm: submission to the command's start")}
        for _ in range(max(3, args.repeat // 3)):
            for key, argv in (("bare", bare), ("ours", ours)):
                cluster.wait_idle()
                stamp.unlink(missing_ok=True)
                started = _time.time()
                subprocess.run(argv, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                deadline = _time.monotonic() + 60
                while not (stamp.exists() and stamp.read_text().strip()) and _time.monotonic() < deadline:
                    _time.sleep(0.01)
                starts[key].seconds.append(float(stamp.read_text()) - started)
        late = (starts["ours"].median - starts["bare"].median) * 1000
        note = (f"Target: the command starts at most 0.5 s after a bare sbatch job's would. Measured {late:.0f} ms "
                f"later: {'meets' if late <= 500 else 'MISSES'}. (Slurm itself starts a job about a second after "
                "its submission here: the scheduler's own pass.)")
        out.append(table("Slurm: from submission to the command starting (idle cluster)", [starts["bare"], starts["ours"]],
                         starts["bare"], note))
        return "\n".join(out)
    finally:
        cluster.stop()


# A bare job array of the same commands: task N runs line N+1 of the commands file; the script
# waits until the array has left the queue.
SLURM_BARE_ARRAY = """
set -e
tasks=$(wc -l < "$1")
task=$(mktemp "$2/task-XXXXXX.sh")
printf '#!/bin/sh\\nexec sh -c "$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" %s)"\\n' "$1" > "$task"
id=$(sbatch --parsable --array=0-$((tasks - 1))%8 --output=/dev/null "$task")
while squeue -h -j "$id" 2>/dev/null | grep -q .; do sleep 0.2; done
"""


def slurm_sweep_scale(args: argparse.Namespace, work: Path) -> str:
    """A `--trials` sweep on the test Slurm cluster (two nodes of two CPUs on this machine), at
    --max-parallel 8, against a bare `sbatch --array=...%8` of the same commands (target: at most
    20 ms per trial over it), with each array task carrying several trials (the default at this
    size) and, for reference, one trial per task (`"trials_per_task": 1`, as before 2026-12-07)."""
    sys.path.insert(0, str(BENCH_DIR.parent / "tests"))
    from slurmcluster import SlurmCluster

    trials = args.trials
    project = _write(work / "trivial-sweep", {"MLproject": SWEEP_MLPROJECT})
    commands = work / "commands.txt"
    commands.write_text("".join(f"echo {x} > /dev/null\n" for x in range(trials)))
    cluster = SlurmCluster()
    cluster.start()
    try:
        env = {**os.environ, **cluster.env, "MLPROJECT_HOME": str(work / "home"),
               "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}

        def sweep(config: str) -> list[str]:
            return mlproject_command() + ["sweep", str(project), "-P", f"x=range(0,{trials})", "-b", "slurm",
                                          "-c", config, "--max-parallel", "8", "--env-manager", "local"]

        measure("warm-up", sweep("{}"), 1, work, env)
        cluster.wait_idle()
        rows = [measure(f"bare: sbatch --array of {trials} commands, 8 at a time", ["bash", "-c", SLURM_BARE_ARRAY,
                        "bare", str(commands), str(work)], 1, work, env)]
        cluster.wait_idle()
        seconds, peak, said = _driver_peak_mb(sweep("{}"), work, env)
        carried = Timing(f"mlproject sweep -b slurm, {trials} trials, --max-parallel 8 (tasks carry several trials)",
                         [seconds], peak_rss_mb=peak)
        per_task = re.search(r"queued as slurm job array.*", said)
        rows.append(carried)
        cluster.wait_idle()
        rows.append(measure("for reference: the same sweep, one trial per task", sweep('{"trials_per_task": 1}'),
                            1, work, env))
    finally:
        cluster.stop()
    over = (rows[1].median - rows[0].median) / trials * 1000
    note = (f"Target: at most 20 ms per trial over the bare array. Measured {over:+.0f} ms per trial: "
            f"{'meets' if over <= 20 else 'MISSES'}{'' if trials >= 1000 else ' (fewer trials than the target)'}. "
            f"The driver's own peak RSS (VmHWM): {peak:.0f} MB. One sample of each (a bare array of 1,000 tasks "
            f"takes minutes here: Slurm starts ~6 tasks a second). {per_task.group(0) if per_task else ''}")
    return table(f"Slurm sweep at scale: {trials} trials, 8 at a time", rows, rows[0], note)


RAY_BARE_SUBMIT = """
import sys
from ray.job_submission import JobSubmissionClient

JobSubmissionClient(sys.argv[1]).submit_job(entrypoint="true", runtime_env={"working_dir": sys.argv[2]})
"""


def ray_backend(args: argparse.Namespace, work: Path) -> str:
    """The ray backend on a real two-node cluster on this machine (tests/raycluster.py):
    a --detach run of an unchanged project against a bare `JobSubmissionClient.submit_job`
    process of the same project (target: at most half its time; the working_dir upload of an
    unchanged project is skipped by both)."""
    sys.path.insert(0, str(BENCH_DIR.parent / "tests"))
    from raycluster import RayCluster

    cluster = RayCluster()
    cluster.start()
    try:
        project = _write(work / "project", {"MLproject": 'name: t\nentry_points:\n  main:\n    command: "true"\n'})
        bare_script = _write(work / "bare", {"submit.py": RAY_BARE_SUBMIT}) / "submit.py"
        env = {**os.environ, "MLPROJECT_HOME": str(work / "home"), "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
               "RAY_ADDRESS": cluster.address}
        bare = [sys.executable, str(bare_script), cluster.address, str(project)]
        ours = mlproject_command() + ["run", str(project), "-b", "ray", "--detach", "--env-manager", "local"]
        for _ in range(2):  # warm-up: the uploaded packages, the staged snapshot, the page cache
            measure("warm-up", bare, 1, work, env)
            measure("warm-up", ours, 1, work, env)
        rows = measure_interleaved([("bare `JobSubmissionClient(...).submit_job(...)` (a Python process)", bare, env),
                                    ("mlproject run -b ray --detach (sqlite tracking)", ours, env)], args.repeat, work)
        ratio = rows[1].median / rows[0].median
        note = (f"Target: a run of an unchanged project, --detach, at most half the time of a bare submit_job "
                f"process. Measured {ratio:.2f}x the bare process: {'meets' if ratio <= 0.5 else 'MISSES'}. The bare "
                "process pays Ray's SDK import (about 2 s here); ours submits packages the cluster already holds "
                "through the dashboard's REST API without it, and adds the runner's start, the tracked run, the "
                "ledger and the staged snapshot.")
        return table("Ray: submitting a job", rows, rows[0], note)
    finally:
        cluster.stop()


# Bare Ray job submissions of N commands, at most 8 jobs alive at once (the SDK imported once).
RAY_BARE_SWEEP = """
import sys, time
from ray.job_submission import JobSubmissionClient

client, trials = JobSubmissionClient(sys.argv[1]), int(sys.argv[2])
alive, todo = [], list(range(trials))
while todo or alive:
    while todo and len(alive) < 8:
        alive.append(client.submit_job(entrypoint=f"echo {todo.pop(0)} > /dev/null"))
    time.sleep(0.1)
    for job in list(alive):
        status = str(client.get_job_status(job).value)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            assert status == "SUCCEEDED", (job, status)
            alive.remove(job)
"""


def ray_sweep_scale(args: argparse.Namespace, work: Path) -> str:
    """A `--ray-trials` sweep on the test Ray cluster (two nodes on this machine) at --max-parallel 8,
    against bare Ray job submissions of the same commands, 8 alive at once (target: at most 50 ms
    per trial over them); and that no more Ray jobs are alive at once than --max-parallel."""
    sys.path.insert(0, str(BENCH_DIR.parent / "tests"))
    from raycluster import RayCluster

    trials = args.ray_trials
    project = _write(work / "trivial-sweep", {"MLproject": SWEEP_MLPROJECT})
    bare_script = _write(work / "bare", {"sweep.py": RAY_BARE_SWEEP}) / "sweep.py"
    cluster = RayCluster()
    cluster.start()
    try:
        env = {**os.environ, "MLPROJECT_HOME": str(work / "home"), "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
               "RAY_ADDRESS": cluster.address}

        def sweep(count: int, entry: str = "main") -> list[str]:
            return mlproject_command() + ["sweep", str(project), "-e", entry, "-P", f"x=range(0,{count})", "-b", "ray",
                                          "--max-parallel", "8", "--env-manager", "local"]

        measure("warm-up", sweep(2), 1, work, env)
        measure("warm-up", [sys.executable, str(bare_script), cluster.address, "2"], 1, work, env)
        rows = [measure(f"bare: Ray job submissions of {trials} commands, 8 alive at once",
                        [sys.executable, str(bare_script), cluster.address, str(trials)], 1, work, env)]
        alive = _most_alive(cluster.address, lambda: _driver_peak_mb(sweep(trials), work, env))
        seconds, peak, said = alive[1]
        rows.append(Timing(f"mlproject sweep -b ray, {trials} trials, --max-parallel 8", [seconds], peak_rss_mb=peak))
        # The driver's memory must not grow with what the trials print: 64 trials of 3 MB each
        # (40,000 lines), 8 carriers of 24 MB of log.
        chatty, chatty_peak, _ = _driver_peak_mb(sweep(64, "chatty"), work, env)
        rows.append(Timing("mlproject sweep -b ray, 64 trials printing 3 MB each, --max-parallel 8", [chatty],
                           peak_rss_mb=chatty_peak))
    finally:
        cluster.stop()
    over = (rows[1].median - rows[0].median) / trials * 1000
    queued = re.search(r"queued as ray .*?(\(each carrying up to \d+ trials\))", said)
    note = (f"Target: at most 50 ms per trial over the bare submissions, and no more Ray jobs alive at once than "
            f"--max-parallel. Measured {over:+.0f} ms per trial: {'meets' if over <= 50 else 'MISSES'}; at most "
            f"{alive[0]} of the sweep's jobs alive at once ({'meets' if alive[0] <= 8 else 'MISSES'}). The sweep "
            f"driver's own peak RSS (VmHWM): {peak:.0f} MB (the bare row's: its largest process); with 64 trials "
            f"printing 3 MB each (192 MB of output): {chatty_peak:.0f} MB. "
            f"{'Carrier jobs ' + queued.group(1) + '. ' if queued else ''}One sample each.")
    return table(f"Ray sweep at scale: {trials} trials, 8 at a time", rows, rows[0], note)


def _most_alive(address: str, run) -> tuple[int, Timing]:
    """(the most Ray jobs PENDING or RUNNING at once while `run()` ran, asked every 0.2 s through
    the dashboard's job list; what run() returned)."""
    import json as _json
    import threading
    import urllib.request

    most, done = [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                with urllib.request.urlopen(f"{address.rstrip('/')}/api/jobs/", timeout=10) as response:
                    jobs = _json.loads(response.read())
                most[0] = max(most[0], sum(job.get("status") in ("PENDING", "RUNNING") for job in jobs))
            except OSError:
                pass
            done.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = run()
    finally:
        done.set()
        watcher.join()
    return most[0], result


PACKED_ENV = "python: '3.11'\ndependencies:\n  - numpy\n  - scipy\n  - pandas\n  - scikit-learn\n  - pyarrow\n  - matplotlib\n"


def _tree_size_mb(root: Path) -> float:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def packed_env(args: argparse.Namespace, work: Path) -> str:
    """A large environment reaching a second node packed (`env pack` once, `env unpack` there)
    against building it on that node from a warm package cache (uv, which links from its cache,
    and virtualenv, which installs with pip); `env pack` against `tar` with the same compressor
    (zstd at level 3, all cores)."""
    command = "name: big\nentry_points:\n  main:\n    command: \"python -c pass\"\n"
    project = _write(work / "big", {"MLproject": command, "python_env.yaml": PACKED_ENV})
    submit = {**os.environ, "MLPROJECT_HOME": str(work / "submit")}
    measure("build on the submit host", mlproject_command() + ["env", "build", str(project)], 1, work, submit)
    prefix = Path(subprocess.run(mlproject_command() + ["env", "path", str(project)], env=submit, capture_output=True,
                                 text=True, check=True).stdout.strip())
    size_mb, files = _tree_size_mb(prefix), sum(1 for _ in prefix.rglob("*"))
    packs = work / "packs"
    packs.mkdir()
    archive = packs / f"{prefix.name}.tar.zst"
    repeat = max(3, args.build_repeat // 2)
    by_tar = ["tar", "-I", "zstd -3 -T0", "-cf", str(work / "by-tar.tar.zst"), "-C", str(prefix), "."]
    measure("warm-up (the page cache holds the environment)", by_tar, 1, work, submit)
    pack_rows = measure_interleaved([
        ("tar -I 'zstd -3 -T0' of the environment", by_tar, submit),
        ("mlproject env pack (digests and prefix scan included)",
         mlproject_command() + ["env", "pack", prefix.name, "-o", str(packs)], submit),
    ], repeat, work)
    archive_mb = archive.stat().st_size / 1e6
    # A node: its own MLPROJECT_HOME, whose package caches are warm (filled by a build of the
    # same packages and one more), so that building there is the fastest a build gets.
    rows = list(pack_rows)
    for manager in ("uv", "virtualenv"):
        node_env = {**os.environ, "MLPROJECT_HOME": str(work / f"node-{manager}")}
        warm = _write(work / f"warm-{manager}", {"MLproject": command, "python_env.yaml": PACKED_ENV + "  - six\n"})
        measure("fill the node's package cache", mlproject_command() + ["env", "build", str(warm), "--env-manager", manager],
                1, work, node_env)
        build_rows = []
        for i in range(repeat):
            variant = _write(work / f"big-{manager}{i}", {"MLproject": command,
                                                         "python_env.yaml": PACKED_ENV + f"  - pip=={24 + i // 2}.{i % 2}\n"})
            _sync()
            build_rows.append(measure("build", mlproject_command() + ["run", str(variant), "--env-manager", manager],
                                      1, work, node_env))
        rows.append(_merge(build_rows, f"mlproject run --env-manager {manager}: build on the node (warm cache), then the command"))
    unpack_rows = []
    for i in range(repeat):
        fresh = {**os.environ, "MLPROJECT_HOME": str(work / f"unpacked{i}")}
        unpack_and_run = " && ".join(" ".join(f"'{part}'" for part in argv) for argv in (
            mlproject_command() + ["env", "unpack", str(archive)], mlproject_command() + ["run", str(project)]))
        _sync()
        unpack_rows.append(measure("unpack there and run", ["bash", "-c", unpack_and_run], 1, work, fresh))
    unpacked = _merge(unpack_rows, "mlproject env unpack + mlproject run on a fresh node")
    _sync()
    tar_x = work / "by-tar-x"
    tar_x.mkdir()
    extract = measure("zstd -dc | tar -x of the same archive (the file system's floor)",
                      ["bash", "-c", f"zstd -dc '{archive}' | tar -x -C '{tar_x}'"], 1, work, submit)
    _sync()
    third = measure("mlproject run on that node again (nothing to unpack)", mlproject_command() + ["run", str(project)],
                    args.repeat, work, {**os.environ, "MLPROJECT_HOME": str(work / "unpacked0")})
    rows += [unpacked, extract, third]
    pack_ratio = pack_rows[1].median / pack_rows[0].median
    uv_ratio, pip_ratio = rows[2].median / unpacked.median, rows[3].median / unpacked.median
    note = (f"The environment: {size_mb:.0f} MB in {files} files; the archive {archive_mb:.0f} MB. "
            f"Targets: `env pack` at most 1.5x `tar` with the same compressor (measured {pack_ratio:.2f}x: "
            f"{'meets' if pack_ratio <= 1.5 else 'MISSES'}); reaching a node and starting the command at least 5x "
            f"faster than building there from a warm cache (measured {uv_ratio:.1f}x against uv: "
            f"{'meets' if uv_ratio >= 5 else 'MISSES'}; {pip_ratio:.1f}x against virtualenv: "
            f"{'meets' if pip_ratio >= 5 else 'MISSES'}); a third run pays no unpack ({third.median * 1000:.0f} ms).")
    return table("A packed environment: pack once, unpack on a node", rows, pack_rows[0], note, reference=unpacked)


def _sync() -> None:
    """Dirty pages written out first: one step's writeback must not be timed in the next."""
    subprocess.run(["sync"], check=False)


SCENARIOS = {
    "trivial_local": trivial_local,
    "python_env_warm": python_env_warm,
    "cold_build": cold_build,
    "concurrent_first_runs": concurrent_first_runs,
    "tracking_overhead": tracking_overhead,
    "offline_tracking": offline_tracking,
    "git_cached": git_cached,
    "conda_env": conda_env,
    "docker_reuse": docker_reuse,
    "ledger_listing": ledger_listing,
    "changed_spec": changed_spec,
    "slurm_backend": slurm_backend,
    "ray_backend": ray_backend,
    "sweep_grid": sweep_grid,
    "sweep_scale": sweep_scale,
    "slurm_sweep_scale": slurm_sweep_scale,
    "ray_sweep_scale": ray_sweep_scale,
    "packed_env": packed_env,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--mlflow-repeat", type=int, default=5)
    parser.add_argument("--build-repeat", type=int, default=6, help="cold builds per tool")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the mlflow comparison")
    parser.add_argument("--skip-mlflow-builds", action="store_true", help="skip MLflow's slow environment builds")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    parser.add_argument("--trials", type=int, default=1000,
                        help="sweep_scale: the trials of the driver-memory sweep; slurm_sweep_scale: its sweep's")
    parser.add_argument("--ray-trials", type=int, default=1000, help="ray_sweep_scale: the trials of its sweep")
    args = parser.parse_args()
    sections = [f"# mlproject-runner benchmarks\n\nMachine: {os.cpu_count()} cores. Repeats: {args.repeat} (mlflow: {args.mlflow_repeat}).\n"]
    with tempfile.TemporaryDirectory(prefix="mlproject-bench-") as tmp:
        for name in args.only or SCENARIOS:
            work = Path(tmp) / name
            work.mkdir()
            print(f"== {name}", file=sys.stderr)
            sections.append(SCENARIOS[name](args, work))
    report = "\n".join(sections)
    results = BENCH_DIR / "results"
    results.mkdir(exist_ok=True)
    # (Some scenarios only, with --only: their own file, so the full report is not replaced.)
    (results / ("latest.md" if not args.only else "-".join(sorted(args.only)) + ".md")).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
