"""The exact installed packages of a Python environment, read from its metadata.

Reading `*.dist-info/METADATA` headers directly is exact and takes a few
milliseconds; asking an installer (`pip freeze`) costs a process start.
"""
from __future__ import annotations

from pathlib import Path


def installed_packages(prefix: Path) -> list[str]:
    """`name==version` lines, sorted by name, for every distribution in the environment."""
    found: dict[str, str] = {}
    for site in sorted(prefix.glob("lib/python*/site-packages")) + sorted(prefix.glob("lib/site-packages")):
        for dist in site.glob("*.dist-info"):
            name, version = _name_version(dist / "METADATA")
            if name:
                found[name.lower()] = f"{name}=={version}"
    return [found[k] for k in sorted(found)]


def _name_version(metadata: Path) -> tuple[str | None, str | None]:
    name = version = None
    try:
        with open(metadata, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    break  # end of the headers
                if line.startswith("Name:"):
                    name = line[5:].strip()
                elif line.startswith("Version:"):
                    version = line[8:].strip()
                if name and version:
                    break
    except OSError:
        return None, None
    return name, version
