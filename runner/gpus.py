"""Devices for runs on this machine: each run that asks for K GPUs gets K devices no other run
holds, and sees only those (`CUDA_VISIBLE_DEVICES`); a run that finds none free waits.

A device is held through a lease: an exclusive `flock` on `MLPROJECT_HOME/gpus/<device>.lock`,
taken without waiting. flock belongs to the open file, so the trials of one sweep (threads of one
process), concurrent API runs and separate `mlproject` commands exclude one another alike, and
the kernel frees a dead runner's devices with its process. All K are taken or none: a run holding
some while it waits for the rest could wait for ever on another run doing the same.

The devices: those given (`--gpus 0,1,2,3`, any names), else those `CUDA_VISIBLE_DEVICES`
names, else those `nvidia-smi -L` lists. Cluster backends ask their scheduler instead.
"""
from __future__ import annotations

import functools
import os
import re
import time
from dataclasses import dataclass, field

from runner.errors import UsageError
from runner.filelock import FileLock

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Callable, Sequence

ENV_VARIABLE = "CUDA_VISIBLE_DEVICES"
TAG = "mlproject.gpus"  # the devices a run was given
_POLL_SECONDS = 0.1


def machine_devices() -> tuple[str, ...]:
    """The devices this process may use: CUDA_VISIBLE_DEVICES when set, else nvidia-smi's
    (asked once per process: a sweep's trials and concurrent API runs each need the list)."""
    named = os.environ.get(ENV_VARIABLE)
    if named is not None:
        return tuple(device.strip() for device in named.split(",") if device.strip())
    return _listed_by_nvidia_smi()


@functools.lru_cache(maxsize=None)
def _listed_by_nvidia_smi() -> tuple[str, ...]:
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return tuple(re.findall(r"^GPU (\d+):", listing, flags=re.MULTILINE))


def parse_devices(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """`--gpus 0,1,2,3` (or a list from the API) as device names; None: not given."""
    if text is None:
        return None
    names = text.split(",") if isinstance(text, str) else [str(name) for name in text]
    devices = tuple(name.strip() for name in names if name.strip())
    for device in devices:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]*", device):
            raise UsageError(f"{device!r} is not a device name", hint="name devices as nvidia-smi -L does: --gpus 0,1")
    if len(set(devices)) != len(devices):
        raise UsageError(f"a device is named twice in --gpus {','.join(devices)}", hint="name each device once")
    return devices


@dataclass(frozen=True)
class GpuRequest:
    """What a run asks for: `count` devices out of `devices` (None: the machine's)."""

    count: int
    devices: tuple[str, ...] | None = None

    def pool(self) -> tuple[str, ...]:
        """The devices to choose from; an error when there are fewer than one run needs."""
        pool = self.devices if self.devices is not None else machine_devices()
        if self.count > len(pool):
            found = f"only {len(pool)} ({', '.join(pool)})" if pool else "none"
            raise UsageError(f"a run asks for {self.count} GPU(s) and this machine has {found}",
                             hint="name the devices to share out with --gpus 0,1,... (any names), "
                                  "or ask for fewer per run")
        return pool


def count_given(count: int | None, devices: tuple[str, ...] | None, option: str) -> int:
    """K of `--gpus-per-run K` / `--gpus-per-trial K`, checked: 1 when only `--gpus LIST` is given."""
    if count is None:
        return 1 if devices else 0
    check_count(count, option)
    return count


def check_count(count: object, option: str) -> None:
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise UsageError(f"{option} must be a whole number of devices, not {count!r}", hint=f"for example {option} 1")


@dataclass
class Lease:
    """Devices held for one run until released (or its process ends)."""

    devices: tuple[str, ...]
    _locks: list[FileLock] = field(default_factory=list, repr=False)

    def env(self) -> dict[str, str]:
        return {ENV_VARIABLE: ",".join(self.devices)}

    def release(self) -> None:
        locks, self._locks = self._locks, []
        for lock in locks:
            lock.close()


def lease(request: GpuRequest, cancelled: Callable[[], bool], on_wait: Callable[[str], None]) -> Lease | None:
    """`request.count` free devices, waited for; None if `cancelled()` turned true meanwhile."""
    from runner import home

    pool = request.pool()
    directory = home.subdir("gpus")
    said = False
    while True:
        taken = _take(directory, pool, request.count)
        if taken is not None:
            return taken
        if cancelled():
            return None
        if not said:
            on_wait(f"waiting for {request.count} free GPU(s) of {', '.join(pool)} (others' runs hold them)")
            said = True
        time.sleep(_POLL_SECONDS)


def _take(directory, pool: Sequence[str], count: int) -> Lease | None:
    held = Lease(())
    devices: list[str] = []
    for device in pool:
        lock = FileLock(directory / f"{device}.lock")
        if lock.exclusive(wait=False):
            held._locks.append(lock)
            devices.append(device)
            if len(devices) == count:
                held.devices = tuple(devices)
                return held
        else:
            lock.close()
    held.release()
    return None
