"""The process that runs one container for a run: `python -m runner.envs.docker.run SPEC`.

It is the run's command as far as the launcher knows: started in the run's
process group, its output teed to the terminal and the run's log, its exit code
the run's. It creates the container with the docker SDK, streams the
container's output, and exits with the container's exit code. On SIGINT,
SIGTERM or SIGHUP it stops the container (SIGTERM, then SIGKILL after the
grace period) and exits 128+N. The container is removed on every path; if this
process itself is killed, the runner removes the container by name afterwards.

SPEC (JSON) names the environment variables to pass in rather than carrying
their values, so no credential (a tracking token) appears on a command line.
"""
from __future__ import annotations

if __name__ == "__main__":  # (a signal while it imports: nothing exists yet; see runner.startup)
    from runner import startup

    startup.hold()

import json
import os
import signal
import sys
import threading

# The rendered command arrives as $0: no quoting is redone, and bash is used
# where the image has it (sh otherwise).
SHELL_WRAPPER = 'if command -v bash >/dev/null 2>&1; then exec bash -c "$0"; else exec sh -c "$0"; fi'
DAEMON_ERROR = 125  # as `docker run` exits when the container cannot be run


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    try:
        import docker
        import docker.errors  # (what it raises; named for the type checker)
        from docker.errors import APIError, DockerException, ImageNotFound
    except ImportError:
        return _fail("the docker SDK is not installed (pip install docker)")
    from runner.envs.docker.options import sdk_arguments

    environment = dict(spec["environment"])
    environment.update({name: os.environ[name] for name in spec["forward"] if name in os.environ})
    options = sdk_arguments([tuple(pair) for pair in spec["options"]])
    extra_env = options.pop("environment", [])
    for item in extra_env:
        name, _, value = item.partition("=")
        environment[name] = value
    volumes = list(spec["volumes"]) + options.pop("volumes", [])
    labels = {**spec["labels"], **options.pop("labels", {})}
    options.setdefault("working_dir", spec["workdir"])
    from runner.launch import deferred

    # Handled from here on, before the container exists: a signal that lands inside the creation
    # must not interrupt it (the daemon would finish making a container no one removes); it is
    # carried out once the creation has answered.
    received: list[int] = []
    created: list = []
    deferred.ready()  # a handler hands the stop to it: starting a thread in a handler can deadlock

    def stop(signum: int, _frame) -> None:
        if received:
            return
        received.append(signum)
        if created:  # from another thread and client: the main thread is reading the output stream
            deferred.call(lambda: _stop(created[0].id, spec["grace"]))

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    creating = spec.get("creating")
    from runner import faults

    faults.checkpoint("docker.launcher")  # (its handlers set, nothing asked of the daemon yet)
    try:
        client = docker.from_env(timeout=600)
        if "network_mode" not in options:
            options["network_mode"] = spec["network"] or _default_network(client)
        if received:  # asked to stop before anything was asked of the daemon
            return 128 + received[0]
        _mark(creating, "creating")
        container = client.containers.create(
            spec["image"], command=["sh", "-c", SHELL_WRAPPER, spec["command"]], name=spec["name"], labels=labels,
            environment=environment, volumes=volumes, detach=True, auto_remove=True, **options,
        )
    except ImageNotFound:
        return _fail(f"image {spec['image']} is not on the Docker daemon any more; "
                     f"rebuild it with `mlproject env rm {spec['key'][:12]}` and run again")
    except (APIError, DockerException) as exc:
        return _fail(f"cannot create the container: {getattr(exc, 'explanation', None) or exc}")
    created.append(container)
    _mark(creating, "created")  # (it exists: whoever removes it finds it by name, until it is gone)
    faults.checkpoint("docker.created")  # (made, not started)
    if received:  # asked to stop while it was being created: it never starts
        try:
            container.remove(force=True, v=True)
        except DockerException:
            pass
        return 128 + received[0]
    # The daemon removes the container when it exits (auto_remove), without making
    # the run wait for it; the exit code comes from a wait registered before the start.
    exit_status: list[int] = []
    waiter = threading.Thread(target=_wait_for_exit, args=(client, container.id, exit_status), daemon=True)
    finished = False
    try:
        stream = container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
        waiter.start()
        container.start()
        for out, err in stream:
            if out:
                _write(1, out)
            if err:
                _write(2, err)
        waiter.join()
        finished = bool(exit_status)
        code = exit_status[0] if exit_status else DAEMON_ERROR
    except (APIError, DockerException) as exc:
        if not received:
            return _fail(f"the container failed: {getattr(exc, 'explanation', None) or exc}")
        code = DAEMON_ERROR
    finally:
        if not finished:  # never started, or left early: it must not outlive the run
            try:
                container.remove(force=True, v=True)
            except DockerException:
                pass
    return 128 + received[0] if received else code


def _wait_for_exit(client, container_id: str, exit_status: list[int]) -> None:
    from docker.errors import DockerException

    try:
        result = client.api.wait(container_id, condition="next-exit")
        exit_status.append(int(result.get("StatusCode", DAEMON_ERROR)))
    except DockerException:
        pass


def _default_network(client) -> str:
    # docker's default bridge, unless this daemon runs without one (--bridge=none).
    return "bridge" if client.networks.list(names=["bridge"]) else "none"


def _mark(path: str | None, phase: str) -> None:
    """The file that tells the runner, if this process is killed, where the container's making
    stood: `creating` (asked of the daemon, which finishes it regardless: wait for it), then
    `created` (it exists until removed). No file: nothing was asked, nothing to wait for."""
    if path is None:
        return
    try:
        with open(path, "w") as handle:
            handle.write(phase)
    except OSError:
        pass


def _stop(container_id: str, grace: float) -> None:
    import docker
    import docker.errors  # (what it raises; named for the type checker)

    try:
        docker.from_env().containers.get(container_id).stop(timeout=max(1, int(grace)))
    except docker.errors.DockerException:
        pass


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fail(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return DAEMON_ERROR


if __name__ == "__main__":
    sys.exit(main(sys.argv))
