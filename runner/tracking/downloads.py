"""Remote `path` parameters (s3://, runs:/, models:/, ...), fetched with MLflow's artifact API.

They are downloaded into the run's own directory before the command starts,
and removed when the run ends. Without the mlflow package this is an error
before anything starts (checked by `require`).
"""
from __future__ import annotations

from pathlib import Path

from runner.errors import ParameterError, TrackingError


def require(remote: dict[str, str]) -> None:
    from runner.tracking import mlflow_installed

    if remote and not mlflow_installed():
        name, uri = next(iter(remote.items()))
        raise ParameterError(
            f"parameter {name!r}: remote path {uri!r} needs the mlflow package to be downloaded",
            hint="pip install 'mlproject-runner[mlflow]', or download it yourself and pass a local path",
        )


def download(remote: dict[str, str], into: Path, tracking_uri: str | None, library=None) -> dict[str, str]:
    """{parameter: local path} for each remote path, downloaded under `into`."""
    if not remote:
        return {}
    if library is not None:
        library.wait()
    from mlflow.artifacts import download_artifacts

    local = {}
    for name, uri in remote.items():
        target = into / name
        target.mkdir(parents=True, exist_ok=True)
        try:
            local[name] = download_artifacts(artifact_uri=uri, dst_path=str(target), tracking_uri=tracking_uri)
        except Exception as exc:  # noqa: BLE001 - any download failure is one clear line
            message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise TrackingError(f"parameter {name!r}: cannot download {uri!r}: {message}") from None
    return local
