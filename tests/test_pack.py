"""Packed environments (`mlproject env pack|unpack`, runner/envs/pack.py): an environment built in
one store is packed once and unpacked into another (another machine's, or a node's own), where
the project runs on it without building; what names the old path is rewritten, binaries padded
as conda does; a damaged, foreign or hostile archive is refused and leaves nothing behind."""
from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from conftest import assert_clean_error
from runner.envs.build import relocated_text
from runner.envs.python.installed import installed_packages

SIX = """
name: sixer
python_env: python_env.yaml
entry_points:
  main:
    command: "python -c 'import six, sys; print(six.__version__, sys.prefix)'"
"""
EMPTY = """
name: empty
entry_points:
  main:
    command: "python -c 'import sys; print(sys.prefix)'"
"""


def _builds(home: Path) -> list[str]:
    log = home / "envs" / ".builds.log"
    return log.read_text().splitlines() if log.exists() else []


def _store_entries(home: Path) -> list[str]:
    root = home / "envs"
    return sorted(p.name for p in root.iterdir() if p.name not in (".locks", ".builds.log")) if root.is_dir() else []


def _pack(cli, target: str, out_dir: Path, *extra: str) -> Path:
    result = cli("env", "pack", target, "-o", str(out_dir), *extra)
    assert result.returncode == 0, result.stderr
    assert re.search(r"packing \S+ \(\d+ files, .*\): done in", result.stderr), result.stderr
    archive = Path(result.stdout.strip())
    assert archive.parent == out_dir and archive.name.endswith(".tar.zst") and archive.is_file()
    assert not [p for p in out_dir.iterdir() if ".part-" in p.name]
    return archive


@pytest.mark.parametrize("manager", ["uv", "virtualenv"])
def test_a_packed_python_environment_runs_from_another_store_as_built(cli, make_project, mlproject_home, tmp_path,
                                                                     manager):
    root = make_project(SIX, {"python_env.yaml": "python: '3.11'\ndependencies:\n  - six==1.16.0\n"})
    # Packing a project builds its environment first.
    archive = _pack(cli, str(root), tmp_path, "--env-manager", manager)
    built = mlproject_home / "envs" / archive.name[: -len(".tar.zst")]
    assert len(_builds(mlproject_home)) == 1 and built.is_dir()
    # Another store, at a path long enough that a script's shebang naming it would pass the 127
    # bytes pip writes plainly: a node's own MLPROJECT_HOME.
    other = tmp_path / ("another-node-with-a-longer-home-path-" + "x" * 80)
    node = {"MLPROJECT_HOME": str(other)}
    # Two unpacks of one key at once on a node unpack it once (the store's lock).
    racing = [subprocess.Popen([os.sys.executable, "-m", "runner", "env", "unpack", str(archive)], env={**os.environ, **node},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    answers = [(proc.wait(60), *proc.communicate()) for proc in racing]
    assert [code for code, _, _ in answers] == [0, 0], answers
    unpacked = other / "envs" / built.name
    assert {out.strip() for _, out, _ in answers} == {str(unpacked)}
    assert [line.split()[1:3] for line in _builds(other)] == [["unpacked", built.name]]
    # It holds what the original holds; its scripts name where it lives now.
    assert installed_packages(unpacked) == installed_packages(built)
    assert "six==1.16.0" in installed_packages(unpacked)
    assert (unpacked / ".mlproject" / "packages.txt").read_text() == (built / ".mlproject" / "packages.txt").read_text()
    assert (unpacked / ".mlproject" / "pylock.toml").is_file()  # the lock travels with it
    shown = cli("env", "show", built.name, env=node)
    assert f"unpacked from: {archive.name} (built at {built})" in shown.stdout, shown.stdout
    for script in (unpacked / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            assert str(built).encode() not in script.read_bytes(), script
    if manager == "virtualenv":
        # Written as pip writes a long shebang: through /bin/sh.
        assert (unpacked / "bin" / "pip").read_text().startswith(f"#!/bin/sh\n'''exec' {unpacked}/bin/python")
        version = subprocess.run([str(unpacked / "bin" / "pip"), "--version"], capture_output=True, text=True)
        assert version.returncode == 0 and str(unpacked) in version.stdout, version
    # The project runs there on it, building nothing.
    ran = cli("run", str(root), "--env-manager", manager, env=node)
    assert ran.returncode == 0, ran.stderr
    assert f"1.16.0 {unpacked}\n" in ran.stdout and "building environment" not in ran.stderr
    assert len(_builds(other)) == 1
    again = cli("env", "unpack", str(archive), env=node)
    assert again.returncode == 0 and "already in the store" in again.stderr and len(_builds(other)) == 1
    # By key, too (a prefix of it is enough).
    (tmp_path / "by-key").mkdir()
    assert _pack(cli, built.name.split("-")[-1][:10], tmp_path / "by-key").name == archive.name


@pytest.mark.parametrize("where", ["short", "long", "with space"])
def test_a_relocated_script_still_runs_wherever_its_interpreter_now_lives(tmp_path, where):
    """A script's shebang that its new path makes longer than pip writes plainly, or gives a
    space, goes through /bin/sh as pip writes it; the script runs from there with its arguments."""
    old = b"/opt/built/env"
    new = tmp_path / {"short": "e", "long": "n" * 130, "with space": "a node"}[where]
    (new / "bin").mkdir(parents=True)
    (new / "bin" / "python").symlink_to(os.sys.executable)
    script = new / "bin" / "hello"
    script.write_bytes(relocated_text(old.join([b"#!", b"/bin/python\nimport sys\nprint('hi', sys.argv[1:])\n"]),
                                      old, str(new).encode()))
    script.chmod(0o755)
    first = script.read_bytes().split(b"\n")[0]
    assert first == (f"#!{new}/bin/python".encode() if where == "short" else b"#!/bin/sh")
    ran = subprocess.run([str(script), "a b", "$x"], capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout == "hi ['a b', '$x']\n", ran


def test_a_packed_conda_environment_is_relocated_in_its_text_and_its_binaries(cli, channel, make_project,
                                                                              mlproject_home, tmp_path):
    conda_yaml = "channels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pyhello\n  - greeter\n  - binprefix\n"
    command = "python -c 'import pyhello, sys; print(pyhello.greet(\"x\"), sys.prefix)' && greet"
    root = make_project(f"name: c\nconda_env: conda.yaml\nentry_points:\n  main:\n    command: \"{command.replace(chr(34), chr(92) + chr(34))}\"\n",
                        {"conda.yaml": conda_yaml})
    archive = _pack(cli, str(root), tmp_path)
    built = mlproject_home / "envs" / archive.name[: -len(".tar.zst")]
    binary = (built / "lib" / "binprefix.dat").read_bytes()
    assert binary.startswith(b"\x7fBIN\0" + f"{built}/share/binprefix\0".encode())
    # A shorter path: the binary's string is padded with NULs, its length and layout unchanged.
    short = mlproject_home.parent / "n"
    result = cli("env", "unpack", str(archive), env={"MLPROJECT_HOME": str(short)})
    assert result.returncode == 0, result.stderr
    unpacked = Path(result.stdout.strip())
    moved = (unpacked / "lib" / "binprefix.dat").read_bytes()
    assert len(moved) == len(binary)
    assert moved[5:].split(b"\0")[0] == f"{unpacked}/share/binprefix".encode()
    assert moved.endswith(b"\0tail\0") and moved.index(b"tail") == binary.index(b"tail")
    ran = cli("run", str(root), env={"MLPROJECT_HOME": str(short)})
    assert ran.returncode == 0, ran.stderr
    assert f"hello x from a conda package {unpacked}\n" in ran.stdout
    assert f"greeter lives in {unpacked}/share/greeter" in ran.stdout  # the text placeholder, rewritten
    assert "building environment" not in ran.stderr and [line.split()[1] for line in _builds(short)] == ["unpacked"]
    assert (unpacked / ".mlproject" / "packages.txt").read_text() == (built / ".mlproject" / "packages.txt").read_text()
    # A longer path cannot go into the binary: refused, and nothing is left in that store.
    longer = tmp_path / ("a-much-longer-home-" + "x" * 40)
    refused = cli("env", "unpack", str(archive), env={"MLPROJECT_HOME": str(longer)})
    assert_clean_error(refused, 2, "inside a binary")
    assert "MLPROJECT_HOME" in refused.stderr
    assert _store_entries(longer) == []


def _members(archive: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(fileobj=io.BytesIO(zstandard.ZstdDecompressor().decompressobj().decompress(archive.read_bytes()))) as source:
        return [(info, source.extractfile(info).read() if info.isreg() else None) for info in source.getmembers()]


def _written(target: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.PAX_FORMAT) as copy:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            copy.addfile(info, io.BytesIO(data) if data is not None else None)
    target.write_bytes(zstandard.ZstdCompressor().compress(plain.getvalue()))
    return target


def _rewritten(archive: Path, target: Path, change) -> Path:
    """A copy of `archive` with each member passed through `change(info, data) -> (info, data)
    | None` (None: left out)."""
    return _written(target, [changed for info, data in _members(archive) if (changed := change(info, data)) is not None])


def test_a_damaged_foreign_or_hostile_archive_is_refused_and_leaves_nothing(cli, make_project, tmp_path):
    root = make_project(EMPTY)
    archive = _pack(cli, str(root), tmp_path)
    other = {"MLPROJECT_HOME": str(tmp_path / "other")}

    def refused(path: Path, contains: str) -> None:
        result = cli("env", "unpack", str(path), env=other)
        assert_clean_error(result, 2, contains)
        assert _store_entries(tmp_path / "other") == [], result.stderr
        assert not (tmp_path / "escaped").exists()

    # Not an archive at all; an archive that is not a packed environment.
    (tmp_path / "notes.tar.zst").write_text("hello")
    refused(tmp_path / "notes.tar.zst", "is not a packed environment")
    with tarfile.open(tmp_path / "gzipped.tar.gz", "w:gz") as gzipped:
        gzipped.add(root / "MLproject", arcname="MLproject")
    refused(tmp_path / "gzipped.tar.gz", "is not a packed environment")
    plain = tarfile.TarInfo("MLproject")
    refused(_written(tmp_path / "plain.tar.zst", [(plain, b"name: x\n")]), "is not a packed environment")
    refused(tmp_path / "missing.tar.zst", "no such file")
    # Cut short on its way; one byte of it changed (the compressed stream's checksum).
    data = archive.read_bytes()
    (tmp_path / "cut.tar.zst").write_bytes(data[: len(data) * 2 // 3])
    refused(tmp_path / "cut.tar.zst", "damaged")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x55
    (tmp_path / "flipped.tar.zst").write_bytes(bytes(flipped))
    refused(tmp_path / "flipped.tar.zst", "damaged")
    # One file's bytes changed.
    changed = _rewritten(archive, tmp_path / "changed.tar.zst",
                         lambda info, data: (info, data + b"# changed\n") if info.name == "pyvenv.cfg" else (info, data))
    refused(changed, "damaged: its pyvenv.cfg differs from the file packed")
    # A file left out.
    short = _rewritten(archive, tmp_path / "short.tar.zst", lambda info, data: None if info.name == "pyvenv.cfg" else (info, data))
    refused(short, "lacks files it lists (pyvenv.cfg)")
    # A header whose description is not its key's.

    def edit_header(edit):
        def change(info, data):
            if info.name == ".mlproject-pack/header.json":
                header = json.loads(data)
                edit(header)
                data = json.dumps(header).encode()
            return info, data
        return change

    forged = _rewritten(archive, tmp_path / "forged.tar.zst",
                        edit_header(lambda h: h["meta"]["description"].update(platform="elsewhere")))
    refused(forged, "does not match its key")
    # A consistent header whose interpreter this machine lacks (a virtualenv runs on its own).
    from runner.envs import EnvRecipe

    def elsewhere(header):
        header["meta"]["description"]["python"]["path"] = "/nowhere/bin/python3.11"
        header["key"] = EnvRecipe(header["kind"], header["meta"]["description"], "", {}).key
    refused(_rewritten(archive, tmp_path / "elsewhere.tar.zst", edit_header(elsewhere)),
            "needs Python 3.11")
    # Members that leave the environment: `..`, an absolute name, a write through a symlink, a
    # hard link to a file outside, a file in a directory the archive never made, a name twice.

    def hostile(kind):
        extra = {
            "dotdot": [("../escaped", tarfile.REGTYPE, b"x", "")],
            "absolute": [(str(tmp_path / "escaped"), tarfile.REGTYPE, b"x", "")],
            "through-link": [("out", tarfile.SYMTYPE, None, str(tmp_path)), ("out/escaped", tarfile.REGTYPE, b"x", "")],
            "hard-link": [("passwd", tarfile.LNKTYPE, None, "/etc/passwd")],
            "no-parent": [("nowhere/escaped", tarfile.REGTYPE, b"x", "")],
            "twice": [("twice", tarfile.SYMTYPE, None, str(tmp_path / "escaped")), ("twice", tarfile.REGTYPE, b"x", "")],
        }[kind]
        members = _members(archive)
        bad = []
        for name, type_, payload, link in extra:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = type_, link
            bad.append((info, payload))
        return _written(tmp_path / f"hostile-{kind}.tar.zst", members[:1] + bad + members[1:])  # right after the header

    for kind in ("dotdot", "absolute", "through-link", "hard-link", "no-parent", "twice"):
        refused(hostile(kind), "which is not part of an environment")


def test_an_interrupted_unpack_leaves_nothing_and_the_next_one_unpacks(cli, make_project, tmp_path):
    root = make_project(SIX, {"python_env.yaml": "python: '3.11'\ndependencies:\n  - six==1.16.0\n"})
    archive = _pack(cli, str(root), tmp_path)
    other = tmp_path / "node"
    for strike in ("SIGINT", "SIGTERM", "SIGKILL"):
        result = cli("env", "unpack", str(archive), env={"MLPROJECT_HOME": str(other),
                                                          "MLPROJECT_FAULT_AT": f"env.unpacking:{strike}"})
        assert result.returncode in (130, 143, -signal.SIGKILL), (strike, result.returncode, result.stderr)
        assert "Traceback" not in result.stderr
        # Nothing complete at the key's path; at most a killed process's private temporary
        # directory, which the next unpack of the key removes.
        assert not [name for name in _store_entries(other) if not name.startswith(".tmp-")], strike
        if strike != "SIGKILL":
            assert _store_entries(other) == [], (strike, _store_entries(other))
    done = cli("env", "unpack", str(archive), env={"MLPROJECT_HOME": str(other)})
    assert done.returncode == 0, done.stderr
    assert _store_entries(other) == [Path(done.stdout.strip()).name]


@pytest.mark.parametrize("seed", [20261206])
def test_unpacks_struck_at_random_instants_leave_the_store_whole(cli, make_project, tmp_path, seed):
    """Signals at seeded random instants of an unpack's measured life (not only at the hook):
    whatever the instant, the key is either complete and runs, or absent; the next unpack works."""
    import random
    import time

    root = make_project(SIX, {"python_env.yaml": "python: '3.11'\ndependencies:\n  - six==1.16.0\n"})
    archive = _pack(cli, str(root), tmp_path)
    argv = [os.sys.executable, "-m", "runner", "env", "unpack", str(archive)]
    started = time.monotonic()
    assert cli("env", "unpack", str(archive), env={"MLPROJECT_HOME": str(tmp_path / "timed")}).returncode == 0
    life = time.monotonic() - started
    rng = random.Random(seed)
    for number in range(8):
        home = tmp_path / f"node{number}"
        strike = rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
        at = rng.uniform(0, 1.05) * life
        proc = subprocess.Popen(argv, env={**os.environ, "MLPROJECT_HOME": str(home)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(at)
        proc.send_signal(strike)
        out, err = proc.communicate(timeout=30)
        where = (number, strike.name, round(at, 3), proc.returncode, err)
        assert proc.returncode in (0, 128 + strike, -strike), where
        assert "Traceback" not in err, where
        complete = [name for name in _store_entries(home) if not name.startswith(".tmp-")]
        if proc.returncode == 0:
            assert complete == [Path(out.strip()).name], where
        elif ": done in" in err:  # (struck after the key was complete, while the process exited)
            assert len(complete) == 1, where
        else:
            assert complete == [], where
            if strike != signal.SIGKILL:
                assert _store_entries(home) == [], where
        again = cli("env", "unpack", str(archive), env={"MLPROJECT_HOME": str(home)})
        assert again.returncode == 0, (where, again.stderr)
        ran = cli("run", str(root), env={"MLPROJECT_HOME": str(home), "MLPROJECT_NO_TRACKING": "1"})
        assert ran.returncode == 0 and "building environment" not in ran.stderr, (where, ran.stderr)


def test_an_interrupted_pack_leaves_no_archive(cli, make_project, tmp_path):
    root = make_project(SIX, {"python_env.yaml": "python: '3.11'\ndependencies:\n  - six==1.16.0\n"})
    assert cli("env", "build", str(root)).returncode == 0
    for strike in ("SIGINT", "SIGTERM", "SIGHUP"):
        result = cli("env", "pack", str(root), "-o", str(tmp_path), env={"MLPROJECT_FAULT_AT": f"env.packing:{strike}"})
        assert result.returncode == 128 + signal.Signals[strike], (strike, result.returncode, result.stderr)
        assert f"env pack interrupted by {strike}" in result.stderr and "Traceback" not in result.stderr
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tar.zst") or ".part-" in p.name] == []
    _pack(cli, str(root), tmp_path)


def test_what_env_pack_does_not_take(cli, make_project, tmp_path):
    assert_clean_error(cli("env", "pack", "0123abcd"), 2, "no environment with key")
    local = cli("env", "pack", str(make_project(EMPTY)), "--env-manager", "local")
    assert_clean_error(local, 2, "nothing to pack")
    key_with_options = cli("env", "pack", "0123abcd", "--env-manager", "uv")
    assert_clean_error(key_with_options, 2, "not a key's")


def test_cache_gc_removes_packed_environments_no_submission_used_lately(cli, tmp_path):
    """What the Ray backend packs for its nodes (staging/environments/<name>/...) is dated by each
    submission that ships it; `cache gc` removes those unused for the period, and packings that
    were cut short."""
    staging = tmp_path / "staging"
    day_ago = time.time() - 86400

    def packed(name: str, aged: bool, archive: bool = True) -> Path:
        directory = staging / "environments" / name / f"mlproject_env_{name}"
        directory.mkdir(parents=True)
        if archive:
            (directory / f"{name}.tar.zst").write_bytes(b"x" * 4096)
        for path in (directory / f"{name}.tar.zst", directory.parent) if archive else (directory.parent,):
            if aged:
                os.utime(path, (day_ago, day_ago))
        return directory.parent

    old, fresh, cut_short = packed("uv-old", True), packed("uv-fresh", False), packed("uv-cut", True, archive=False)
    collected = cli("cache", "gc", "--older-than", "1h", "--staging-dir", str(staging))
    assert collected.returncode == 0, collected.stderr
    assert "removed 0 staged project(s), 1 packed environment(s), 0 ended job(s)' files and 1 leftover(s)" in collected.stdout, collected.stdout
    assert "and 1 packed environment(s) used recently" in collected.stdout
    assert not old.exists() and not cut_short.exists() and fresh.exists()
    assert sorted(p.name for p in (staging / "environments").iterdir()) == ["uv-fresh"]
