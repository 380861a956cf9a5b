"""`conda-lock.yml`: lock a conda environment per platform, and install exactly from it.

The file is conda-lock's own format (version 1), so the conda-lock tool reads
it (`conda-lock render`, `conda-lock install`). `metadata.content_hash` holds,
per platform, the hash of what the lock was made from (channels, specs, the pip
list and the files it names): a lock whose hash no longer matches conda.yaml is
stale. conda packages come from rattler's solve; the pip list is locked by
`uv pip compile --format pylock.toml` for that platform and Python.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from runner.envs.conda.contents import LOCK_NAME, CondaContents
from runner.envs.python.pylock import UV_PLATFORMS
from runner.errors import EnvironmentBuildError
from runner.progress import step

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Callable


_WHEEL_HINTS = {
    "linux-64": ("x86_64",), "linux-aarch64": ("aarch64",), "osx-64": ("x86_64", "universal2"),
    "osx-arm64": ("arm64", "universal2"), "win-64": ("win_amd64",),
}


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    manager: str  # "conda" or "pip"
    url: str
    sha256: str | None
    md5: str | None
    build: str | None


@dataclass(frozen=True)
class Lock:
    path: Path
    content_hash: dict[str, str]  # platform -> hash of what the lock was made from
    by_platform: dict[str, tuple[LockedPackage, ...]]
    generator: str | None = None  # "mlproject-runner X" for ours; conda-lock writes none

    @property
    def ours(self) -> bool:
        """Whether its content hash is ours: conda-lock hashes its own parse of the env file, which
        only conda-lock can recompute, so another tool's lock cannot be checked for staleness."""
        return (self.generator or "").startswith("mlproject-runner")

    def for_platform(self, platform: str) -> list[LockedPackage]:
        return list(self.by_platform.get(platform, ()))


def content_hash(contents: CondaContents, platform: str) -> str:
    from runner.envs.conda.channels import redact

    material = {
        "platform": platform,
        "channels": [redact(url) for url in contents.channels],
        "specs": sorted(contents.specs),
        "pip": contents.pip.key_material(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def lock_path(env_file: Path) -> Path:
    return env_file.parent / LOCK_NAME


def read(path: Path) -> Lock:
    from runner.project.yamlfile import parse

    try:
        data = parse(path.read_text(encoding="utf-8"), path.name)
    except OSError as exc:
        raise EnvironmentBuildError(f"{path.name} cannot be read: {exc.strerror}") from None
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("package"), list):
        raise EnvironmentBuildError(f"{path.name} is not a conda-lock version 1 file", hint="write it again with `mlproject lock`")
    metadata = data.get("metadata") or {}
    index: dict[str, list[LockedPackage]] = {}
    for entry in data["package"]:
        hashes = entry.get("hash") or {}
        package = LockedPackage(str(entry["name"]), str(entry["version"]), entry.get("manager", "conda"), entry["url"],
                                hashes.get("sha256"), hashes.get("md5"), entry.get("build"))
        index.setdefault(entry.get("platform", ""), []).append(package)
    generator = (metadata.get("custom_metadata") or {}).get("generator")
    return Lock(path, dict(metadata.get("content_hash") or {}), {k: tuple(v) for k, v in index.items()},
                str(generator) if generator else None)


def key_material(lock: Lock, platform: str) -> list[str]:
    """What an environment installed from the lock is: exactly these files."""
    return sorted(f"{p.manager} {p.url} {p.sha256 or p.md5}" for p in lock.for_platform(platform))


# -- installing from a lock (the records come from conda.resolve through the worker) ----
def pip_requirement_lines(packages: list[LockedPackage]) -> list[str]:
    return [f"{p.name} @ {p.url} --hash=sha256:{p.sha256}" for p in packages if p.manager == "pip"]


# -- writing a lock --------------------------------------------------------------------
def write(contents: CondaContents, platforms: list[str], progress: Callable[[str], None] | None = None, *,
          solved: dict[str, list[dict]] | None = None, path: Path | None = None) -> Path:
    """Solve for each platform and write the lock next to conda.yaml; `solved`: records already
    solved (an installed environment's, written to `path` as the record of what it holds)."""
    from runner.envs.conda.solve import solve_for
    from runner.envs.conda.channels import redact
    from runner.version import __version__

    entries: list[dict] = []
    hashes = {}
    for platform in platforms:
        if solved is not None:
            records = solved[platform]
        else:
            with step(progress, f"solving for {platform}"):
                records = solve_for(contents, platform)
        hashes[platform] = content_hash(contents, platform)
        python = None
        for record in sorted(records, key=lambda r: r["name"]):
            if record["name"] == "python":
                python = record["version"]
            entries.append({
                "name": record["name"],
                "version": record["version"],
                "manager": "conda",
                "platform": platform,
                "dependencies": _dependencies(record["depends"]),
                "url": record["url"],
                "hash": {"md5": record["md5"] or "", "sha256": record["sha256"]},
                "build": record["build"],
                "category": "main",
                "optional": False,
            })
        if contents.pip.lines:
            if python is None:
                raise EnvironmentBuildError("the pip: list needs python among the dependencies")
            entries.extend(_lock_pip(contents, platform, python, progress))
    document = {
        "version": 1,
        "metadata": {
            "content_hash": hashes,
            "channels": [{"url": redact(url), "used_env_vars": []} for url in contents.channels],
            "platforms": list(platforms),
            "sources": [contents.env_file.name],
            "custom_metadata": {"generator": f"mlproject-runner {__version__}"},
        },
        "package": entries,
    }
    import yaml

    path = path or lock_path(contents.env_file)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(document, sort_keys=False, width=1000))
    os.replace(tmp, path)
    return path


def _dependencies(depends: list[str]) -> dict[str, str]:
    result = {}
    for spec in depends:
        name, _, constraint = spec.partition(" ")
        result[name] = constraint.strip()
    return result


def _lock_pip(contents: CondaContents, platform: str, python: str, progress) -> list[dict]:
    import tempfile

    from runner.envs.build import run_step
    from runner.envs.uvtool import requirement_args, uv_binary, uv_env

    if platform not in UV_PLATFORMS:
        raise EnvironmentBuildError(f"cannot lock the pip: list for platform {platform}")
    version = ".".join(python.split(".")[:2])
    with tempfile.TemporaryDirectory(prefix="mlproject-lock-") as tmp:
        work = Path(tmp)
        args = [arg for arg in requirement_args(work, "pip", contents.pip) if arg != "-r"]  # compile takes the file itself
        out = work / "pylock.toml"
        run_step([uv_binary(), "pip", "compile", *args, "--format", "pylock.toml", "--python-version", version,
                  "--python-platform", UV_PLATFORMS[platform], "--quiet", "-o", str(out)],
                 f"locking the pip: list for {platform}", env=uv_env(), progress=progress)
        from runner.envs.python.pylock import toml_loads

        data = toml_loads(out.read_text())
    entries = []
    for package in data.get("packages", []):
        artifact = _pick_wheel(package.get("wheels") or [], platform, version) or package.get("sdist")
        if not artifact:
            raise EnvironmentBuildError(f"the pip lock of {package.get('name')} names no file to install")
        entries.append({
            "name": package["name"],
            "version": str(package["version"]),
            "manager": "pip",
            "platform": platform,
            "dependencies": {},
            "url": artifact["url"],
            "hash": {"sha256": artifact["hashes"]["sha256"]},
            "category": "main",
            "optional": False,
        })
    return entries


def _pick_wheel(wheels: list[dict], platform: str, python: str) -> dict | None:
    tag = "cp" + python.replace(".", "")
    hints = _WHEEL_HINTS.get(platform, ())

    def score(wheel: dict) -> tuple[int, int]:
        name = wheel["url"].rsplit("/", 1)[-1]
        fits = name.endswith("-none-any.whl") or any(hint in name for hint in hints)
        return (1 if fits else 0, 1 if f"-{tag}-" in name else 0)

    best = max(wheels, key=score, default=None)
    return best if best is not None and score(best)[0] else None
