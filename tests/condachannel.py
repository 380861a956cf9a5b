"""A real local conda channel for the conda tests, built from scratch.

No public channel is reachable here, so the fixture writes real `.conda`
packages (a zip of zstd tarballs with info/index.json and info/paths.json, as
conda-build and rattler-build write them) and indexes them with
`rattler.index`. It holds:

- generic noarch packages with dependencies and several versions, enough for a
  conflict (`datalib 2` needs `helper >=2`, `tool` needs `helper <1.5`);
- `greeter`, whose script carries a prefix placeholder and which has an
  `etc/conda/activate.d` script; `binprefix`, a binary file with a binary placeholder;
- `pyhello`, a noarch: python package (files under site-packages/), and `pip`
  itself as one (with its console script), as published conda.yaml files list it;
- `python`, made from an interpreter on this machine (a pyenv build): its
  absolute RUNPATH patched to `$ORIGIN/../lib`, the original prefix declared as
  a text placeholder in the files that carry it, so it installs anywhere.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

PLACEHOLDER = "/opt/mlproject-placeholder-prefix-0123456789abcdef0123456789abcdef"
# As conda-build's: long enough for any prefix, since a binary's prefix is padded into its place.
BINARY_PLACEHOLDER = "/opt/" + "_placehold" * 25


@dataclass
class PackageFile:
    path: str  # inside the prefix
    data: bytes | None = None  # None: a symlink
    target: str | None = None  # the symlink's target
    mode: int = 0o644
    placeholder: str | None = None  # prefix placeholder in this file
    placeholder_mode: str = "text"  # or "binary": replaced inside NUL-terminated strings, padded


@dataclass
class Package:
    name: str
    version: str
    build: str = "0"
    depends: list[str] = field(default_factory=list)
    files: list[PackageFile] = field(default_factory=list)
    subdir: str = "noarch"
    noarch: str | None = "generic"
    entry_points: list[str] = field(default_factory=list)  # noarch: python console scripts

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.version}-{self.build}"


def _tar_zst(members: list[tuple[str, bytes | None, str | None, int]]) -> bytes:
    import zstandard

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data, target, mode in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type = tarfile.SYMTYPE
                info.linkname = target or ""
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = mode
                tar.addfile(info, io.BytesIO(data))
    return zstandard.ZstdCompressor(level=3, threads=-1).compress(raw.getvalue())


def write_package(pkg: Package, channel: Path) -> Path:
    paths = []
    has_prefix = []
    for item in pkg.files:
        if item.data is None:
            paths.append({"_path": item.path, "path_type": "softlink", "size_in_bytes": len(item.target or "")})
            continue
        entry = {"_path": item.path, "path_type": "hardlink", "sha256": hashlib.sha256(item.data).hexdigest(),
                 "size_in_bytes": len(item.data)}
        if item.placeholder:
            entry.update({"prefix_placeholder": item.placeholder, "file_mode": item.placeholder_mode})
            has_prefix.append(f"{item.placeholder} {item.placeholder_mode} {item.path}")
        paths.append(entry)
    index = {"name": pkg.name, "version": pkg.version, "build": pkg.build, "build_number": 0, "depends": pkg.depends,
             "subdir": pkg.subdir, "license": "MIT", "timestamp": 1_700_000_000_000}
    if pkg.noarch:
        index["noarch"] = pkg.noarch
    else:
        index.update({"platform": "linux", "arch": "x86_64"})
    info = [
        ("info/index.json", json.dumps(index, indent=2).encode(), None, 0o644),
        ("info/paths.json", json.dumps({"paths": paths, "paths_version": 1}, indent=2).encode(), None, 0o644),
        ("info/files", "".join(f"{item.path}\n" for item in pkg.files).encode(), None, 0o644),
    ]
    if has_prefix:
        info.append(("info/has_prefix", "".join(f"{line}\n" for line in has_prefix).encode(), None, 0o644))
    if pkg.noarch == "python":
        noarch = {"type": "python", **({"entry_points": pkg.entry_points} if pkg.entry_points else {})}
        info.append(("info/link.json", json.dumps({"noarch": noarch, "package_metadata_version": 1}).encode(), None, 0o644))
    members = [(item.path, item.data, item.target, item.mode) for item in pkg.files]
    out = channel / pkg.subdir / f"{pkg.stem}.conda"
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        archive.writestr(f"info-{pkg.stem}.tar.zst", _tar_zst(info))
        archive.writestr(f"pkg-{pkg.stem}.tar.zst", _tar_zst(members))
    return out


def _text(path: str, text: str, mode: int = 0o644, placeholder: str | None = None) -> PackageFile:
    return PackageFile(path, text.encode(), mode=mode, placeholder=placeholder)


def noarch_packages() -> list[Package]:
    packages = []
    for version in ("1.0", "1.5", "2.0"):
        packages.append(Package("helper", version, files=[_text("share/helper/VERSION", f"{version}\n")]))
    packages.append(Package("datalib", "1.0", depends=["helper >=1.0"], files=[_text("share/datalib/VERSION", "1.0\n")]))
    packages.append(Package("datalib", "2.0", depends=["helper >=2.0"], files=[_text("share/datalib/VERSION", "2.0\n")]))
    packages.append(Package("tool", "1.0", depends=["helper <1.5"], files=[_text("share/tool/VERSION", "1.0\n")]))
    packages.append(Package("greeter", "1.0", depends=["helper"], files=[
        _text("bin/greet", f"#!/bin/sh\necho \"greeter lives in {PLACEHOLDER}/share/greeter\"\n", 0o755, PLACEHOLDER),
        _text("share/greeter/hello.txt", "hello\n"),
        _text("etc/conda/activate.d/greeter.sh", 'export GREETER_HOME="$CONDA_PREFIX/share/greeter"\n'),
    ]))
    # A binary that names its prefix inside a NUL-terminated string, as compiled libraries do.
    packages.append(Package("binprefix", "1.0", files=[PackageFile(
        "lib/binprefix.dat", b"\x7fBIN\0" + BINARY_PLACEHOLDER.encode() + b"/share/binprefix\0tail\0",
        placeholder=BINARY_PLACEHOLDER, placeholder_mode="binary")]))
    packages.append(Package("pyhello", "0.1", build="py_0", depends=["python >=3.8"], noarch="python", files=[
        _text("site-packages/pyhello/__init__.py", "def greet(who):\n    return f'hello {who} from a conda package'\n"),
    ]))
    return packages


def pip_package() -> Package:
    """`pip` as a noarch: python conda package, from the pip of the interpreter running the tests."""
    import pip

    source = Path(pip.__file__).parent
    site = source.parent
    files = []
    for directory in [source, *site.glob(f"pip-{pip.__version__}.dist-info")]:
        for dirpath, dirnames, filenames in os.walk(directory):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in filenames:
                full = Path(dirpath, name)
                files.append(PackageFile(f"site-packages/{full.relative_to(site).as_posix()}", full.read_bytes()))
    return Package("pip", pip.__version__, build="py_0", depends=["python >=3.8"], noarch="python", files=files,
                   entry_points=["pip = pip._internal.cli.main:main"])


_SKIP_DIRS = {"test", "tests", "site-packages", "idlelib", "tkinter", "turtledemo", "ensurepip", "__pycache__",
              "lib2to3", "pydoc_data"}  # (unittest stays: numpy and scipy import it)


def python_package(version_prefix: str = "3.11") -> Package:
    """A `python` conda package from a pyenv-built interpreter on this machine."""
    root = _find_interpreter_prefix(version_prefix)
    version = root.name
    files: list[PackageFile] = []
    original = str(root)
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        top = rel_dir.split(os.sep)[0]
        if rel_dir == "." :
            dirnames[:] = [d for d in dirnames if d in ("bin", "lib")]
        if top == "lib" and rel_dir.count(os.sep) >= 1:
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("config-")]
        elif top == "lib":
            dirnames[:] = [d for d in dirnames if d.startswith("python")]
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if top == "bin" and not name.startswith("python"):
                continue
            if name.endswith((".a", ".pyc")) or (top == "lib" and rel_dir == "lib" and not name.startswith("libpython")):
                continue
            if os.path.islink(full):
                files.append(PackageFile(rel, None, target=os.readlink(full)))
                continue
            data = Path(full).read_bytes()
            mode = os.stat(full).st_mode & 0o777
            placeholder = None
            if rel == f"bin/python{version_prefix}":
                data = _patch_runpath(data, f"{original}/lib".encode())
            elif original.encode() in data and b"\0" not in data[:8192]:
                placeholder = original  # text files naming the prefix (sysconfig data, -config scripts)
            files.append(PackageFile(rel, data, mode=mode, placeholder=placeholder))
    site = f"lib/python{version_prefix}/site-packages/README.txt"
    files.append(_text(site, "This directory exists so that 3rd party packages can be installed here.\n"))
    return Package("python", version, build="h_local_0", subdir="linux-64", noarch=None, files=files)


def _find_interpreter_prefix(version_prefix: str) -> Path:
    candidates = sorted(Path(os.path.expanduser("~/.pyenv/versions")).glob(f"{version_prefix}.*"))
    candidates = [c for c in candidates if re.fullmatch(r"\d+\.\d+\.\d+", c.name) and (c / "bin" / f"python{version_prefix}").exists()]
    if not candidates:
        raise AssertionError(f"no pyenv-built Python {version_prefix} on this machine to make a python conda package from")
    return candidates[-1]


def _patch_runpath(binary: bytes, old: bytes) -> bytes:
    """Point the interpreter's RUNPATH at its own prefix ($ORIGIN/../lib): same length, NUL padded."""
    new = b"$ORIGIN/../lib"
    assert len(new) <= len(old), "RUNPATH too short to patch"
    index = binary.find(old + b"\0")
    if index < 0:
        return binary  # a static build: nothing to patch
    return binary[:index] + new + b"\0" * (len(old) - len(new)) + binary[index + len(old):]


def build_channel(channel: Path, with_python: bool = True) -> Path:
    """Write and index the channel; returns its directory."""
    started = time.monotonic()
    (channel / "noarch").mkdir(parents=True, exist_ok=True)
    (channel / "linux-64").mkdir(parents=True, exist_ok=True)
    for pkg in noarch_packages():
        write_package(pkg, channel)
    write_package(pip_package(), channel)
    if with_python:
        write_package(python_package(), channel)
    index(channel)
    print(f"conda test channel built in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return channel


def index(channel: Path) -> None:
    from rattler.index import index_fs

    asyncio.run(index_fs(channel, write_zst=False, write_shards=False, force=True))


def condarc(path: Path, **settings) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(settings))
    return path



