"""The docker SDK's client for DOCKER_HOST, and the two lookups a warm run makes with it.

The SDK costs ~130 ms to import; a docker run costs a container start (hundreds
of milliseconds at least), so it is imported only for docker projects.
"""
from __future__ import annotations

import os

from runner.errors import EnvironmentBuildError


def daemon_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def unreachable(exc: BaseException) -> EnvironmentBuildError:
    return EnvironmentBuildError(
        f"cannot reach the Docker daemon at {daemon_address()} ({exc})",
        hint="start the daemon, or point DOCKER_HOST at it",
    )


def sdk_client():
    try:
        import docker
        import docker.errors  # (what it raises; named for the type checker)
    except ImportError:
        raise EnvironmentBuildError("the docker SDK is not installed", hint="pip install docker") from None
    try:
        return docker.from_env(timeout=600)
    except docker.errors.DockerException as exc:
        raise unreachable(exc) from None


def image_id(reference: str) -> str | None:
    """The local image's ID, or None when the daemon does not have it."""
    import docker
    import docker.errors  # (what it raises; named for the type checker)

    client = sdk_client()
    try:
        return client.images.get(reference).id
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        raise EnvironmentBuildError(f"the Docker daemon could not inspect image {reference!r} ({exc.explanation or exc})") from None
    except (docker.errors.DockerException, OSError) as exc:  # requests' connection errors are OSErrors
        raise unreachable(exc) from None
    finally:
        client.close()


def remove_container(name: str, wait: float = 0.0, appearing: bool = False) -> None:
    """Remove a container whatever its state; nothing if it is already gone or the daemon is.
    `wait`: while the daemon refuses, ask again for that long; `appearing`: a creation is under
    way, so a container not there yet is looked for again too."""
    import time

    import docker
    import docker.errors  # (what it raises; named for the type checker)

    try:
        client = sdk_client()
    except EnvironmentBuildError:
        return
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                client.containers.get(name).remove(force=True, v=True)
                return
            except docker.errors.NotFound:
                if not appearing:
                    return  # gone (or never made)
            except (docker.errors.DockerException, OSError):
                # (A container the daemon is still creating may refuse its removal for a moment:
                # asked again while waiting, as for one not there yet; seed 20261206:318 left one
                # Created when the first refusal ended the cleanup.)
                pass
            if time.monotonic() >= deadline:
                return  # the launcher removes its container too; this is the second line of defence
            time.sleep(0.25)
    finally:
        client.close()
