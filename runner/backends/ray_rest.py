"""Ray's Jobs REST API, the dashboard's `/api/jobs/`, spoken with the standard library.

Importing Ray's job SDK costs ~1.9 s, more than a run's whole submission otherwise. What a
run of an unchanged project asks of a cluster (its version; submitting a job whose packages
the cluster already holds; a job's state, logs and stop) is one HTTP request each, so it is
asked here; the SDK is imported only to upload a package the cluster does not hold (the
REST API has no call that turns a local directory into one). Endpoints, as documented by
Ray: `GET /api/version`, `POST /api/jobs/`, `GET /api/jobs/{id}`, `GET /api/jobs/{id}/logs`,
`POST /api/jobs/{id}/stop`; and `GET /api/packages/gcs/{name}`, which the SDK itself asks
before an upload. (A carrier's log as it grows comes over the websocket
`/api/jobs/{id}/logs/tail`: runner.backends.ray_tail.)
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

_TIMEOUT = 30.0
ENDED = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})  # a job's statuses once it has ended


class RayRestError(RuntimeError):
    """The dashboard refused a request: its status and its own words (as the SDK's errors
    carry them: "Job X does not exist" for an unknown job)."""

    def __init__(self, status: int, text: str):
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        said = lines[-1] if lines and lines[0].startswith("Traceback") else " ".join(lines[:1])  # (a traceback: its error)
        super().__init__(f"{said or 'no message'} (HTTP {status})")
        self.status = status


@dataclass(frozen=True)
class RayRest:
    """One cluster's dashboard, at `address` (`http://HEAD:8265`; no scheme: http)."""

    address: str

    @property
    def base(self) -> str:
        address = self.address.rstrip("/")
        return address if address.startswith(("http://", "https://")) else f"http://{address}"

    def _call(self, method: str, path: str, body: Any = None, timeout: float = _TIMEOUT) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            raise RayRestError(exc.code, exc.read().decode(errors="replace")) from None
        try:
            return json.loads(text) if text.strip() else None
        except ValueError:
            return text

    def version(self) -> dict:
        return self._call("GET", "/api/version")

    def job(self, job_id: str) -> dict | None:
        """The job's details (status, driver_exit_code, message, error_type, runtime_env, ...);
        None when the cluster has no such job."""
        try:
            return self._call("GET", f"/api/jobs/{job_id}")
        except RayRestError as exc:
            if exc.status == 404:
                return None
            raise

    def logs(self, job_id: str) -> str:
        return (self._call("GET", f"/api/jobs/{job_id}/logs") or {}).get("logs", "")

    def stop(self, job_id: str) -> bool:
        """Whether Ray handed the stop to the job's supervisor (see ray._withdraw); a job the
        cluster does not know raises RayRestError "Job X does not exist"."""
        return bool((self._call("POST", f"/api/jobs/{job_id}/stop") or {}).get("stopped"))

    def submit(self, job: dict[str, Any]) -> None:
        """POST a job whose runtime_env names packages the cluster holds (`gcs://` URIs)."""
        self._call("POST", "/api/jobs/", {key: value for key, value in job.items() if value is not None})

    def holds(self, package_uri: str) -> bool:
        """Whether the cluster still holds a package (Ray removes one no job has used for a while)."""
        protocol, _, name = package_uri.partition("://")
        try:
            self._call("GET", f"/api/packages/{protocol}/{name}")
            return True
        except RayRestError as exc:
            if exc.status == 404:
                return False
            raise
