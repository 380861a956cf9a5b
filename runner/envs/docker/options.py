"""`-A/--docker-args` as MLflow reads them, turned into docker SDK arguments.

MLflow turns `-A name=value` into `docker run --name value` and a bare `-A name`
into the flag `--name`. The same options are accepted here and mapped onto the
SDK's `containers.create` arguments; an option with no mapping is refused
before anything starts, naming the ones that work.
"""
from __future__ import annotations

from runner.errors import UsageError

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, Mapping

# option (as `docker run` spells it) -> (SDK argument, how its value is read)
_OPTIONS: dict[str, tuple[str, str]] = {
    "memory": ("mem_limit", "text"), "m": ("mem_limit", "text"),
    "memory-swap": ("memswap_limit", "text"), "memory-reservation": ("mem_reservation", "text"),
    "cpus": ("nano_cpus", "cpus"), "cpu-shares": ("cpu_shares", "int"), "cpuset-cpus": ("cpuset_cpus", "text"),
    "shm-size": ("shm_size", "text"),
    "user": ("user", "text"), "u": ("user", "text"),
    "network": ("network_mode", "text"), "net": ("network_mode", "text"),
    "hostname": ("hostname", "text"), "ipc": ("ipc_mode", "text"), "pid": ("pid_mode", "text"),
    "privileged": ("privileged", "flag"), "init": ("init", "flag"), "read-only": ("read_only", "flag"),
    "workdir": ("working_dir", "text"), "w": ("working_dir", "text"),
    "entrypoint": ("entrypoint", "text"),
    "env": ("environment", "list"), "e": ("environment", "list"),
    "volume": ("volumes", "list"), "v": ("volumes", "list"),
    "cap-add": ("cap_add", "list"), "cap-drop": ("cap_drop", "list"),
    "device": ("devices", "list"), "dns": ("dns", "list"), "security-opt": ("security_opt", "list"),
    "add-host": ("extra_hosts", "list"), "label": ("labels", "list"), "l": ("labels", "list"),
    "tmpfs": ("tmpfs", "list"), "gpus": ("device_requests", "gpus"), "runtime": ("runtime", "text"),
    "platform": ("platform", "text"), "stop-signal": ("stop_signal", "text"),
}


def check(docker_args: Mapping[str, str | bool]) -> list[tuple[str, str | bool]]:
    """Validate every -A option now; returns (option, value) pairs for the container launcher."""
    result = []
    for name, value in docker_args.items():
        option = name.lstrip("-")
        if option not in _OPTIONS:
            known = ", ".join(sorted(k for k in _OPTIONS if len(k) > 1))
            raise UsageError(f"-A {name!r}: not a docker run option mlproject can pass on", hint=f"supported: {known}")
        kind = _OPTIONS[option][1]
        if kind == "flag" and value is not True and str(value).lower() not in ("true", "1"):
            raise UsageError(f"-A {name!r}: a flag takes no value", hint=f"write -A {option}")
        if kind != "flag" and value is True:
            raise UsageError(f"-A {name!r}: needs a value", hint=f"write -A {option}=VALUE")
        if kind in ("int", "cpus"):
            try:
                float(value) if kind == "cpus" else int(value)
            except ValueError:
                raise UsageError(f"-A {name}={value!r}: not a number") from None
        result.append((option, value))
    return result


def sdk_arguments(pairs: list[tuple[str, str | bool]]) -> dict[str, Any]:
    """(option, value) pairs -> keyword arguments of `client.containers.create`."""
    kwargs: dict[str, Any] = {}
    for option, value in pairs:
        argument, kind = _OPTIONS[option]
        if kind == "flag":
            kwargs[argument] = True
        elif kind == "int":
            kwargs[argument] = int(value)
        elif kind == "cpus":
            kwargs[argument] = int(float(value) * 1e9)
        elif kind == "gpus":
            from docker.types import DeviceRequest

            count = -1 if value == "all" else int(str(value).split("=")[-1])
            kwargs[argument] = [DeviceRequest(count=count, capabilities=[["gpu"]])]
        elif kind == "list":
            kwargs.setdefault(argument, []).append(str(value))
        else:
            kwargs[argument] = str(value)
    if "labels" in kwargs:
        kwargs["labels"] = dict(item.partition("=")[::2] for item in kwargs["labels"])
    if "extra_hosts" in kwargs:
        kwargs["extra_hosts"] = dict(item.partition(":")[::2] for item in kwargs["extra_hosts"])
    if "tmpfs" in kwargs:
        kwargs["tmpfs"] = dict((item.partition(":")[0], item.partition(":")[2]) for item in kwargs["tmpfs"])
    return kwargs
