"""Run by the Python of a virtualenv that has the PyPI conda-lock package: writes a conda-lock.yml
with conda-lock's own models and writer, for packages taken from a local channel's repodata.

    python condalock_tool.py CHANNEL_DIR ENV_FILE NAME[=VERSION] ...

conda-lock's `lock` command needs a conda binary to solve, which this machine cannot have; the
packages are named here instead (with every dependency), and conda-lock computes the content
hash and writes the file.
"""
from __future__ import annotations

import json
import pathlib
import sys

from conda_lock.conda_lock import compute_content_hashes, make_lock_spec
from conda_lock.lockfile import write_conda_lock_file
from conda_lock.lockfile.v2prelim.models import HashModel, LockedDependency, Lockfile, LockMeta
from conda_lock.models.channel import Channel


def records(channel_dir: pathlib.Path) -> list[tuple[str, dict]]:
    found = []
    for subdir in ("linux-64", "noarch"):
        repodata = json.loads((channel_dir / subdir / "repodata.json").read_text())
        for filename, record in {**repodata.get("packages", {}), **repodata.get("packages.conda", {})}.items():
            found.append((f"{channel_dir.as_uri()}/{subdir}/{filename}", record))
    return found


def version_key(version: str) -> tuple:
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))


def main() -> None:
    channel_dir, env_file, wanted = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]
    available = records(channel_dir)
    pins = dict(item.partition("=")[::2] for item in wanted)
    chosen: dict[str, tuple[str, dict]] = {}
    todo = list(pins)
    while todo:
        name = todo.pop()
        if name in chosen:
            continue
        candidates = [(url, r) for url, r in available if r["name"] == name and r["version"].startswith(pins.get(name) or "")]
        url, record = max(candidates, key=lambda item: version_key(item[1]["version"]))
        chosen[name] = (url, record)
        todo.extend(spec.split(" ")[0] for spec in record.get("depends", []))
    packages = [
        LockedDependency(
            name=name, version=record["version"], manager="conda", platform="linux-64",
            dependencies={spec.split(" ")[0]: (spec.split(" ", 1)[1] if " " in spec else "") for spec in record.get("depends", [])},
            url=url, hash=HashModel(md5=record["md5"], sha256=record.get("sha256")), build=record.get("build"),
            categories={"main"},  # a package in no category is left out of the file conda-lock writes
        )
        for name, (url, record) in sorted(chosen.items())
    ]
    spec = make_lock_spec(src_files=[env_file], platform_overrides=["linux-64"], mapping_url="")
    metadata = LockMeta(content_hash=compute_content_hashes(spec, None), channels=[Channel.from_string(channel_dir.as_uri())],
                        platforms=["linux-64"], sources=[env_file.name])
    write_conda_lock_file(Lockfile(package=packages, metadata=metadata), env_file.parent / "conda-lock.yml", metadata_choices=())


if __name__ == "__main__":
    main()
