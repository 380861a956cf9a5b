"""This machine's platform, as conda and lock files name platforms (linux-64, osx-arm64, ...)."""
from __future__ import annotations

import os
import sys


def platform_name() -> str:
    machine = os.uname().machine
    arch = {"x86_64": "64", "amd64": "64", "aarch64": "aarch64", "arm64": "aarch64", "ppc64le": "ppc64le",
            "s390x": "s390x", "i686": "32"}.get(machine, machine)
    system = "osx" if sys.platform == "darwin" else "linux"
    if system == "osx" and arch == "aarch64":
        arch = "arm64"
    return f"{system}-{arch}"
