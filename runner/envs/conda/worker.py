"""py-rattler in a process of its own: `python -m runner.envs.conda.worker` (JSON in, JSON out).

rattler runs its work on native threads that outlive the call (a timed-out
solve keeps going; repodata fetches of other subdirs finish later). An
interpreter that exits while they run can crash (seen: SIGSEGV/SIGABRT at exit
after a clean error). So the runner, and any program calling `runner.run()`,
never imports rattler: each solve or install is a short-lived worker that
answers on stdout and leaves with os._exit, and records cross as plain dicts.

Actions:
  solve    {channels, specs, platform, this_platform, timeout, cache_dir} -> [record]
  match    {channels, platform, packages: [{name, url, sha256, md5}], cache_dir} -> [record]
  install  {channels, platform, packages, target, final, cache_dir, pkgs_dir} -> true
A failure answers {"error": {"kind": solver|channel|matchspec|lock|other, "text": ...}}.
"""
from __future__ import annotations

import json
import os
import sys


def _record(record) -> dict:
    return {
        "name": record.name.normalized,
        "version": str(record.version),
        "build": str(record.build),
        "url": str(record.url),
        "channel": str(record.channel or ""),
        "subdir": str(record.subdir),
        "depends": list(record.depends),
        "sha256": record.sha256.hex() if record.sha256 else None,
        "md5": record.md5.hex() if record.md5 else None,
    }


def _virtual_packages(platform: str, this_platform: str) -> list:
    import rattler

    if platform == this_platform:
        return rattler.VirtualPackage.detect()
    # Another platform: the virtual packages conda-lock assumes for it by default.
    system = platform.split("-", 1)[0]
    defaults = {"linux": [("__unix", "0"), ("__linux", "5.10"), ("__glibc", "2.17")],
                "osx": [("__unix", "0"), ("__osx", "11.0" if platform.endswith("arm64") else "10.15")],
                "win": [("__win", "0")]}.get(system, [])
    return [rattler.GenericVirtualPackage(rattler.PackageName(name), rattler.Version(version), rattler.BuildString("0"))
            for name, version in defaults]


def solve(request: dict) -> list[dict]:
    import asyncio
    import datetime

    import rattler

    records = asyncio.run(rattler.solve(
        sources=request["channels"],
        # Parsed as conda parses them (lenient): `conda env export` writes python=3.11.7=h955ad1f_0.
        specs=[rattler.MatchSpec(spec, strict=False) for spec in request["specs"]],
        gateway=rattler.Gateway(cache_dir=request["cache_dir"]),
        platforms=[request["platform"], "noarch"],
        virtual_packages=_virtual_packages(request["platform"], request["this_platform"]),
        timeout=datetime.timedelta(seconds=request["timeout"]),
        channel_priority=rattler.ChannelPriority.Strict,
    ))
    return [_record(record) for record in records]


class LockMismatch(Exception):
    pass


def _matched(request: dict) -> list:
    """The channels' own records for exactly the given files, each checked against its hash."""
    import asyncio

    import rattler

    packages = request["packages"]
    gateway = rattler.Gateway(cache_dir=request["cache_dir"])
    found = asyncio.run(gateway.query(request["channels"], [request["platform"], "noarch"],
                                      sorted({p["name"] for p in packages}), recursive=False))
    by_url = {str(record.url): record for channel_records in found for record in channel_records}
    records = []
    for package in packages:
        record = by_url.get(package["url"])
        if record is None:
            raise LockMismatch(f"{package['name']} ({package['url']}) is no longer in its channel")
        sha256 = record.sha256.hex() if record.sha256 else None
        md5 = record.md5.hex() if record.md5 else None
        if (package.get("sha256") and package["sha256"] != sha256) or (package.get("md5") and package["md5"] != md5):
            raise LockMismatch(f"{package['name']} in the channel differs from the expected file (hash mismatch)")
        records.append(record)
    return records


def match(request: dict) -> list[dict]:
    return [_record(record) for record in _matched(request)]


def install(request: dict) -> bool:
    import asyncio

    import rattler

    records = _matched(request)
    asyncio.run(rattler.install(
        records,
        target_prefix=request["target"],
        cache_dir=request["pkgs_dir"],
        show_progress=False,
        execute_link_scripts=False,
        alternative_target_prefix=request["final"],  # patched files name where it will live
    ))
    return True


def _kind(exc: BaseException) -> str:
    if isinstance(exc, LockMismatch):
        return "lock"
    try:
        from rattler import exceptions
    except ImportError:
        return "other"
    if isinstance(exc, exceptions.SolverError):
        return "solver"
    if isinstance(exc, (exceptions.FetchRepoDataError, exceptions.GatewayError, exceptions.InvalidChannelError)):
        return "channel"
    if isinstance(exc, exceptions.InvalidMatchSpecError):
        return "matchspec"
    return "other"


ACTIONS = {"solve": solve, "match": match, "install": install}


def main() -> None:
    request = json.loads(sys.stdin.read())
    try:
        answer = {"ok": ACTIONS[request["action"]](request)}
    except Exception as exc:  # noqa: BLE001 (every failure is answered, with its kind)
        answer = {"error": {"kind": _kind(exc), "text": str(exc)}}
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    os._exit(0)  # rattler's threads may still run: never go through interpreter teardown


if __name__ == "__main__":
    main()
