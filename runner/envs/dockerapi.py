"""The few Docker Engine API calls on the warm path, over the daemon's socket.

The docker SDK costs ~130 ms to import; a warm run of a built image only needs
to read an image's ID and, after the run, make sure its container is gone. Those
two calls go straight to `DOCKER_HOST` (a unix socket or plain tcp) with the
runner's small HTTP client. Everything else (pulls, builds, running containers)
uses the SDK.
"""
from __future__ import annotations

import json
import os
from urllib.parse import quote

from runner.errors import EnvironmentBuildError
from runner.httpwire import Connection, Endpoint, unix_endpoint

_API = "/v1.41"  # Docker 20.10 and later
_DEFAULT_SOCKET = "/var/run/docker.sock"


def daemon_address() -> str:
    return os.environ.get("DOCKER_HOST") or f"unix://{_DEFAULT_SOCKET}"


def _connection(timeout: float = 30.0) -> Connection | None:
    """A connection to the daemon, or None when only the SDK can reach it (TLS, ssh)."""
    address = daemon_address()
    if address.startswith("unix://"):
        return Connection(unix_endpoint(address[len("unix://"):]), timeout)
    if address.startswith("tcp://") and not os.environ.get("DOCKER_TLS_VERIFY"):
        host, _, port = address[len("tcp://"):].rstrip("/").partition(":")
        return Connection(Endpoint(host, int(port or 2375)), timeout)
    return None


def request(method: str, path: str, timeout: float = 30.0) -> tuple[int, dict | list | None] | None:
    """(status, JSON body); None when the daemon is reached only through the SDK."""
    connection = _connection(timeout)
    if connection is None:
        return None
    try:
        response = connection.request(method, _API + path)
        body = response.body
    except OSError as exc:
        raise unreachable(exc) from None
    finally:
        connection.close()
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    return response.status, data


def unreachable(exc: BaseException) -> EnvironmentBuildError:
    return EnvironmentBuildError(
        f"cannot reach the Docker daemon at {daemon_address()} ({exc})",
        hint="start the daemon, or point DOCKER_HOST at it",
    )


def image_id(reference: str) -> str | None:
    """The local image's ID, or None when the daemon does not have it."""
    answer = request("GET", f"/images/{quote(reference, safe='')}/json")
    if answer is None:
        import docker

        try:
            return sdk_client().images.get(reference).id
        except docker.errors.ImageNotFound:
            return None
    status, data = answer
    if status == 404:
        return None
    if status != 200 or not isinstance(data, dict):
        raise EnvironmentBuildError(f"the Docker daemon could not inspect image {reference!r} (HTTP {status})")
    return data.get("Id")


def remove_container(name: str) -> None:
    """Remove a container whatever its state; nothing if it is already gone."""
    try:
        if request("DELETE", f"/containers/{quote(name, safe='')}?force=1&v=1", timeout=60.0) is None:
            import docker

            try:
                sdk_client().containers.get(name).remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
    except EnvironmentBuildError:
        pass


def sdk_client():
    """The docker SDK's client for DOCKER_HOST (imported only when needed)."""
    try:
        import docker
    except ImportError:
        raise EnvironmentBuildError("the docker SDK is not installed", hint="pip install docker") from None
    try:
        return docker.from_env(timeout=600)
    except docker.errors.DockerException as exc:
        raise unreachable(exc) from None
