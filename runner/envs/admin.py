"""`mlproject env ...`: build, list, show, path, rm, gc over the environment store."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from runner.store import META_DIR, Store, StoredEnv
from runner.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """`30d`, `12h`, `45m`, `30s`, `2w`; a bare number only for 0 (everything unused): `30` alone
    is refused, since whether it meant days or seconds decides what is deleted."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise UsageError(f"--older-than {text!r}: expected a duration like 30d, 12h, 45m or 30s",
                         hint="units: s, m, h, d, w; 0 for everything not in use")
    number, unit = match.groups()
    if not unit and float(number) != 0:
        raise UsageError(f"--older-than {text!r} needs a unit", hint=f"for example --older-than {number}d (days), "
                         f"{number}h, {number}m or {number}s")
    return float(number) * _UNITS[unit or "s"]


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def human_age(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{int(seconds // length)}{unit} ago"
    return "just now"


@dataclass(frozen=True)
class EnvRow:
    key: str
    manager: str
    size: str
    last_used: str
    project: str
    path: Path


def sizes(envs: list[StoredEnv]) -> dict[str, int]:
    """Each environment's disk use as `du` counts it, the same in `env list`, `env show` and
    `env gc`: a file hard-linked into several environments (from uv's or conda's cache) counts
    once, in the oldest of them."""
    from runner.store import disk_usage

    ordered = sorted(envs, key=lambda env: (env.meta.get("created", 0), env.name))
    return dict(zip((env.name for env in ordered), disk_usage([env.path for env in ordered])))


def list_rows(store: Store | None = None) -> list[EnvRow]:
    """The environments, most recently used first, with their sizes (see `sizes`)."""
    store = store or Store()
    now = time.time()
    envs = sorted(store.list(), key=lambda e: -e.last_used)
    measured = sizes(envs)
    return [
        EnvRow(env.key, env.kind, human_size(measured[env.name]), human_age(now - env.last_used),
               env.meta.get("project", "?"), env.path)
        for env in envs
    ]


def find_one(key: str, store: Store | None = None) -> StoredEnv:
    store = store or Store()
    matches = store.find(key)
    if not matches:
        raise UsageError(f"no environment with key {key!r}", hint="see `mlproject env list`")
    if len(matches) > 1:
        raise UsageError(f"key {key!r} is ambiguous ({len(matches)} environments)", hint="give more characters of the key")
    return matches[0]


def show(key: str) -> list[str]:
    store = Store()
    env = find_one(key, store)
    meta = env.meta
    lines = [
        f"key: {env.key}",
        f"manager: {env.kind}",
        f"path: {env.path}",
        f"project: {meta.get('project', '?')}",
        f"summary: {meta.get('summary', '')}",
        f"size: {human_size(sizes(store.list()).get(env.name) or int(meta.get('size') or 0))}",
        f"created: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(meta.get('created', 0)))}",
    ]
    if meta.get("unpacked_from"):  # (not built here: `mlproject env unpack` put it here)
        lines.append(f"unpacked from: {meta['unpacked_from']} (built at {meta.get('packed_at', '?')})")
    lines.append("packages:")
    packages = env.path / META_DIR / "packages.txt"
    try:
        lines.extend(f"  {line}" for line in packages.read_text().splitlines() if line.strip())
    except OSError:
        lines.append("  (not recorded)")
    return lines


def key_to_pack(target: str) -> bool:
    """Whether `mlproject env pack TARGET` names a stored environment (a key, a prefix of one, or
    `<manager>-<key>`) rather than a project."""
    return re.fullmatch(r"(?:[a-z]+-)?[0-9a-f]{4,32}", target) is not None and not Path(target).exists()


def remove(key: str) -> str:
    env = find_one(key)
    images = _built_images([env])
    if not Store().remove(env):
        raise UsageError(f"environment {env.name} is in use by a running project", hint="wait for the run to end")
    _remove_images(images, [env])
    return env.name


def _built_images(envs: list[StoredEnv]) -> dict[str, dict]:
    """The image records of docker entries (read before the entries go)."""
    import json

    records = {}
    for env in envs:
        if env.kind == "docker":
            try:
                records[env.name] = json.loads((env.path / META_DIR / "image.json").read_text())
            except (OSError, ValueError):
                continue
    return records


def _remove_images(records: dict[str, dict], removed: list[StoredEnv]) -> None:
    # A built image belongs to its entry: it goes with it.
    if not records:
        return
    from runner.envs.docker.manager import remove_image

    for env in removed:
        if env.name in records:
            remove_image(records[env.name])


def gc(older_than: str, dry_run: bool = False) -> list[str]:
    age = parse_duration(older_than)
    store = Store()
    envs = store.list()
    images = _built_images(envs)
    # Measured before anything goes, as `env list` measures them, so that a dry run, the real
    # one and the listing agree.
    measured = sizes(envs)
    removed, in_use, leftovers = store.gc(age, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    if not dry_run:
        _remove_images(images, removed)
    freed = [int(measured.get(env.name, env.meta.get("size")) or 0) for env in removed]
    lines = [f"{verb} {env.name} ({human_size(size)}, {env.meta.get('project', '?')})" for env, size in zip(removed, freed)]
    lines += [f"kept {env.name}: in use" for env in in_use]
    if leftovers:
        lines.append(f"{verb} {leftovers} leftover temporary build(s)")
    if dry_run:
        lines.append(f"{len(removed)} environment(s) would be removed, {human_size(sum(freed))} would be freed; "
                     "nothing was removed (--dry-run)")
    else:
        lines.append(f"{len(removed)} environment(s) removed, {human_size(sum(freed))} freed")
    if not dry_run:
        lines.append(_trim_caches(age))
    return lines


def _trim_caches(older_than: float) -> str:
    """uv prunes what no longer matters itself; pip's cache loses files unused for the period."""
    import os
    import subprocess

    from runner import home
    from runner.envs.uvtool import uv_binary, uv_env

    cache = home.home() / "cache"
    pruned = "download caches: "
    if (cache / "uv").is_dir():
        result = subprocess.run([uv_binary(), "cache", "prune"], env=uv_env(), capture_output=True, text=True)
        pruned += "uv pruned" if result.returncode == 0 else "uv prune failed"
    cutoff = time.time() - older_than
    count = 0
    for dirpath, _, filenames in os.walk(cache / "pip"):
        for name in filenames:
            full = os.path.join(dirpath, name)
            try:
                if os.stat(full).st_atime < cutoff and os.stat(full).st_mtime < cutoff:
                    os.unlink(full)
                    count += 1
            except OSError:
                continue
    return pruned + (f", {count} old pip cache file(s) removed" if count else "")
