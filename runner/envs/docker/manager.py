"""`--env-manager docker`: projects with `docker_env` run in a container.

The code is always in the container: by default the project directory is
mounted read-only at /mlflow/projects/code (the working directory); with
`--build-image` an image `FROM <image>` with the project copied there (honouring
.dockerignore) is built once per key (base image ID + project files + recipe),
tagged `<name>:<key>` and labelled with the key. The store keeps one entry per
key (what `env list` shows; `env rm`/`gc` also remove a built image).

The command reaches the container as an argument list, never re-split; the
tracking variables are set inside; a local tracking store is bind-mounted at its
own path (so the artifact locations recorded in it stay valid) and a tracking
server on localhost is reached through the host network.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from runner.envs import Environment, EnvRecipe, EnvOptions
from runner.errors import EnvironmentBuildError, UsageError
from runner.project.spec import Project

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping

NAME = "docker"
RECIPE = "docker-1"
CODE_DIR = "/mlflow/projects/code"
OPTIONS: tuple[str, ...] = ("build_image", "docker_args")
LOCK_NAME: str | None = None  # (an image is its own record)
NODE_NEEDS: tuple[str, ...] = ("docker",)  # the SDK


@dataclass(frozen=True)
class DockerContents:
    project_name: str
    project_dir: Path
    image: str  # the docker_env image, as written
    base_id: str  # its ID on the daemon
    build: bool
    volumes: tuple[str, ...]
    environment: dict[str, str]
    options: tuple[tuple[str, Any], ...]  # checked -A options

    def tag(self, key: str) -> str:
        return f"{_repository_name(self.project_name)}:{key[:12]}"


def describe(project: Project) -> str:
    docker_env = project.env.docker
    return f"docker: image {docker_env.image}" if docker_env else "docker: no docker_env"


def resolve(plan: EnvRecipe, progress=None) -> None:
    """The base image was found when planned."""


def check(plan: EnvRecipe, progress=None) -> None:
    """The base image was found when planned."""


def write_lock(project: Project, platforms: list[str], notify, progress) -> Path:
    raise UsageError("mlproject lock needs a python_env.yaml or a conda.yaml (a docker_env project's image is "
                     "its environment)", hint="pin the image by digest in MLproject's docker_env")


def plan(project: Project, notify: Callable[[str], None] | None, options: EnvOptions) -> EnvRecipe:
    build_image, docker_args = options.build_image, options.docker_args
    from runner.envs.docker import client as docker_client
    from runner.envs.docker import options as dockeroptions

    docker_env = project.env.docker
    if project.env.kind != "docker_env" or docker_env is None:
        raise UsageError("--env-manager docker needs a project with docker_env in its MLproject")
    environment = _environment(docker_env.environment)  # a missing host variable fails before anything starts
    run_options = tuple(dockeroptions.check(docker_args or {}))
    base_id = docker_client.image_id(docker_env.image) or _pull(docker_env.image, notify)
    volumes = tuple(_absolute_volume(item, project.directory) for item in docker_env.volumes)
    contents = DockerContents(project.name or "", project.directory, docker_env.image, base_id, build_image, volumes,
                              environment, run_options)
    description = {"recipe": RECIPE, "manager": NAME, "image": docker_env.image, "image_id": base_id,
                   "mode": "build" if build_image else "mounted"}
    if build_image:
        description["files"] = project_files_hash(project.directory)
    summary = f"docker: {'image built FROM' if build_image else 'project mounted into'} {docker_env.image}"
    meta = {"project": str(project.directory), "image": docker_env.image, "image_id": base_id,
            "mode": description["mode"]}
    return EnvRecipe(NAME, description, summary, meta, contents)


def _environment(entries) -> dict[str, str]:
    result = {}
    for entry in entries:
        if isinstance(entry, str):
            if entry not in os.environ:
                raise UsageError(
                    f"docker_env.environment: {entry} is to be copied from this environment, and it is not set",
                    hint=f"export {entry}=... before running, or give it a value in MLproject: [\"{entry}\", \"value\"]",
                )
            result[entry] = os.environ[entry]
        else:
            result[entry[0]] = entry[1]
    return result


def _absolute_volume(volume: str, project_dir: Path) -> str:
    # A relative host path is taken from the project (docker itself would refuse it).
    host, sep, rest = volume.partition(":")
    if sep and (host.startswith(".") or "/" in host) and not host.startswith("/"):
        return f"{(project_dir / host).resolve()}:{rest}"
    return volume


def _pull(image: str, notify) -> str:
    from runner.envs.docker import client as docker_client

    client = docker_client.sdk_client()
    import docker
    import docker.errors  # (what it raises; named for the type checker)

    if notify is not None:
        notify(f"pulling {image}")
    try:
        return str(client.images.pull(image).id)
    except docker.errors.DockerException as exc:
        raise EnvironmentBuildError(
            f"image {image} is neither on the Docker daemon nor pullable ({getattr(exc, 'explanation', None) or exc})",
            hint="build or load it first (docker build / docker load / docker import), or fix docker_env.image",
        ) from None


def _repository_name(name: str) -> str:
    import re

    cleaned = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    return cleaned or "mlproject"


# -- the project's files, as the build context sees them -----------------------------
# Never part of a built image: the local tracking store a run from the project
# directory writes into (it changes every run), git's own data, bytecode caches.
ALWAYS_EXCLUDED = (".git", "mlruns", "mlartifacts", "mlflow.db", "mlflow.db-journal", "mlflow.db-wal", "mlflow.db-shm",
                   "__pycache__")


def project_files(root: Path) -> list[Path]:
    """Files of the project that go into a built image: all but what .dockerignore excludes
    (and ALWAYS_EXCLUDED)."""
    import fnmatch

    patterns: list[str] = []
    ignore = root / ".dockerignore"
    if ignore.is_file():
        for line in ignore.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line)

    def ignored(relative: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            body = pattern[1:] if negate else pattern
            body = body.strip("/")
            if fnmatch.fnmatch(relative, body) or fnmatch.fnmatch(relative, f"{body}/*") or relative.startswith(f"{body}/"):
                result = not negate
        return result

    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = sorted(d for d in dirnames if d not in ALWAYS_EXCLUDED
                             and not ignored(os.path.normpath(os.path.join(rel_dir, d))))
        for name in sorted(filenames):
            relative = os.path.normpath(os.path.join(rel_dir, name))
            if name not in ALWAYS_EXCLUDED and not ignored(relative):
                files.append(Path(relative))
    return files


def project_files_hash(root: Path) -> str:
    """The build context's key, its files read once per state (a dataset in the project is not
    read again by every run)."""
    from runner.filetree import remembered_digest

    return remembered_digest(root, [(str(relative), os.lstat(root / relative)) for relative in project_files(root)],
                             "docker-context")


# -- the store entry: a checked base image, or a built one ------------------------------
def build(plan: EnvRecipe, tmp: Path, final: Path, progress=None) -> None:
    contents: DockerContents = plan.contents
    meta = tmp / ".mlproject"
    meta.mkdir(parents=True)
    record = {"image": contents.image, "image_id": contents.base_id}
    if contents.build:
        tag = contents.tag(plan.key)
        from runner.progress import step

        with step(progress, f"building image {tag} FROM {contents.image}"):
            record.update({"tag": tag, "built_id": _build_image(contents, plan.key, tag)})
    (meta / "image.json").write_text(json.dumps(record, indent=2))
    (meta / "packages.txt").write_text(f"image {record.get('tag', contents.image)} {record.get('built_id', contents.base_id)}\n")


def _build_image(contents: DockerContents, key: str, tag: str) -> str:
    import io
    import tarfile

    from runner.envs.docker import client as docker_client

    dockerfile = (
        f"FROM {contents.base_id}\n"
        f"COPY code/ {CODE_DIR}/\n"
        f"WORKDIR {CODE_DIR}\n"
    ).encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        for relative in project_files(contents.project_dir):
            tar.add(contents.project_dir / relative, arcname=f"code/{relative.as_posix()}", recursive=False)
        if not project_files(contents.project_dir):
            directory = tarfile.TarInfo("code")
            directory.type = tarfile.DIRTYPE
            tar.addfile(directory)
    context.seek(0)
    client = docker_client.sdk_client()
    import docker
    import docker.errors  # (what it raises; named for the type checker)

    try:
        image, _ = client.images.build(
            fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True, network_mode="none",
            labels={"mlproject.key": key, "mlproject.project": contents.project_name},
        )
    except docker.errors.BuildError as exc:
        lines = [str(item.get("stream") or item.get("error") or "").rstrip() for item in exc.build_log]
        raise EnvironmentBuildError(f"building image {tag} failed: {exc.msg}", details="\n".join(line for line in lines if line)) from None
    except docker.errors.DockerException as exc:
        raise EnvironmentBuildError(f"building image {tag} failed: {getattr(exc, 'explanation', None) or exc}") from None
    return str(image.id)


def remove_image(meta: dict) -> None:
    """`env rm` / `env gc` of a built image's entry: the image goes too."""
    tag = meta.get("tag")
    if not tag:
        return
    from runner.envs.docker import client as docker_client

    try:
        docker_client.sdk_client().images.remove(tag, force=True, noprune=False)
    except Exception:  # noqa: BLE001 (no daemon, or an image a container still uses: it is kept)
        pass


# -- running inside -------------------------------------------------------------------------
@dataclass(frozen=True)
class ContainerLauncher:
    """Turns the rendered command into the argv of runner.envs.dockerrun."""

    image: str  # what the container is created from (an ID or the built tag)
    image_uri: str
    key: str
    project_dir: Path
    mount_code: bool
    volumes: tuple[str, ...]
    environment: Mapping[str, str]
    options: tuple[tuple[str, Any], ...]

    def argv(self, command: str, env: Mapping[str, str]) -> list[str]:
        from runner.launch import kill_grace

        run_id = env.get("MLPROJECT_RUN_ID", os.urandom(8).hex())
        volumes = list(self.volumes)
        if self.mount_code:
            volumes.append(f"{self.project_dir}:{CODE_DIR}:ro")
        tracking_uri = env.get("MLFLOW_TRACKING_URI", "")
        mounts, network = _tracking_access(tracking_uri)
        volumes += mounts + _artifact_mounts(env.get("MLPROJECT_ARTIFACT_URI", ""), env.get("MLFLOW_RUN_ID", ""), mounts)
        forward = [name for name in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID",
                                     "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                                     "MLFLOW_TRACKING_INSECURE_TLS", "MLPROJECT_RUN_ID") if name in env]
        spec = {
            "image": self.image, "key": self.key, "command": command, "name": container_name(run_id),
            "labels": {"mlproject.run_id": run_id, "mlproject.key": self.key},
            "environment": dict(self.environment), "forward": forward, "volumes": volumes,
            "network": network, "workdir": CODE_DIR, "options": [list(pair) for pair in self.options],
            "grace": max(1.0, kill_grace() - 1.0), "creating": str(_creation_marker(run_id)),
        }
        return [sys.executable, "-m", "runner.envs.docker.run", json.dumps(spec)]

    def cleanup(self, run_id: str, launcher_killed: bool = False) -> None:
        """Remove the run's container (see remove_run_container)."""
        remove_run_container(run_id, launcher_killed)


def remove_run_container(run_id: str, launcher_killed: bool) -> None:
    """Remove a run's container, as far as its launcher's mark says one was made. A launcher
    SIGKILLed while the daemon was creating the container (which the daemon then finishes) is
    waited for a while; one killed before asking left nothing to wait for (waiting anyway held
    the runner's exit 10 s past a Ctrl-C, seed 20261210:409). Also asked by the reconcile of a
    dead runner's run, whose launcher it stopped (seed 20261211:122 left one Created)."""
    from runner.envs.docker import client as docker_client

    marker = _creation_marker(run_id)
    try:
        phase = marker.read_text()
    except OSError:
        return  # (the launcher never asked for a container)
    appearing = launcher_killed and phase == "creating"
    docker_client.remove_container(container_name(run_id), wait=CREATION_WAIT, appearing=appearing)
    marker.unlink(missing_ok=True)


CREATION_WAIT = 10.0  # seconds: a creation on the vfs storage driver takes up to a few here


def _creation_marker(run_id: str) -> Path:
    """Where the run's launcher says how far its container's making went (see
    runner.envs.docker.run: `creating`, then `created`)."""
    from runner import home

    return home.subdir("runs") / run_id / "container.creating"


def container_name(run_id: str) -> str:
    return f"mlproject-{run_id}"


def _tracking_access(uri: str) -> tuple[list[str], str | None]:
    """(bind mounts, network mode) that let the container reach the run's tracking store."""
    from urllib.parse import urlparse

    if uri.startswith("sqlite:///"):
        directory = os.path.dirname(uri[len("sqlite:///"):].split("?", 1)[0]) or "/"
        return [f"{directory}:{directory}:rw"], None
    if uri.startswith("file:") or uri.startswith("/"):
        path = urlparse(uri).path if uri.startswith("file:") else uri
        return [f"{path}:{path}:rw"], None
    if uri.startswith(("http://", "https://")) and (urlparse(uri).hostname or "") in ("localhost", "::1") or \
            (urlparse(uri).hostname or "").startswith("127."):
        return [], "host"  # the server listens on the host's loopback
    return [], None  # docker's default network (or none, where the daemon has no bridge)


def _artifact_mounts(artifact_uri: str, run_id: str, already: list[str]) -> list[str]:
    """A local artifact root (the experiment's directory: MLflow 3 also writes logged
    models beside the runs) mounted at its own path, unless a tracking mount covers it."""
    from urllib.parse import unquote, urlparse

    if artifact_uri.startswith("file:"):
        path = unquote(urlparse(artifact_uri).path)
    elif artifact_uri.startswith("/"):
        path = artifact_uri
    else:
        return []
    suffix = f"/{run_id}/artifacts"
    root = path[: -len(suffix)] if run_id and path.endswith(suffix) else os.path.dirname(path)
    for mount in already:
        source = mount.split(":", 1)[0]
        if root == source or root.startswith(source.rstrip("/") + "/"):
            return []
    os.makedirs(root, exist_ok=True)  # docker would create a missing one owned by root
    return [f"{root}:{root}:rw"]


def activate(plan: EnvRecipe, prefix: Path) -> Environment:
    contents: DockerContents = plan.contents
    record = json.loads((prefix / ".mlproject" / "image.json").read_text()) if prefix else {}
    if contents.build:
        image, uri, image_id = record.get("built_id") or contents.tag(plan.key), record.get("tag") or contents.tag(plan.key), record.get("built_id", "")
    else:
        image, uri, image_id = contents.base_id, contents.image, contents.base_id
    launcher = ContainerLauncher(image, uri, plan.key, contents.project_dir, not contents.build, contents.volumes,
                                 contents.environment, contents.options)
    tags = {"mlflow.docker.image.uri": uri, "mlflow.docker.image.id": image_id}
    return Environment(NAME, plan.key, None, container=launcher, run_tags=tags)
