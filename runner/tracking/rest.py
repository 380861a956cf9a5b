"""MLflow tracking over its REST API, with the standard library only.

Honours MLFLOW_TRACKING_TOKEN (bearer), MLFLOW_TRACKING_USERNAME/PASSWORD
(basic), MLFLOW_TRACKING_INSECURE_TLS and MLFLOW_TRACKING_SERVER_CERT_PATH.
The URL's credentials never appear in an error message.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

from runner.errors import TrackingError
from runner.tracking import ATTEMPT_TAG, RunContext, StartRequest, redact
from runner.tracking.common import experiment_choice, now_ms, refuse_changed_params, retry, tag_filter
from runner.status import RunStatus

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Callable

    from runner.tracking.connection import Connection

# As MLflow's own client: MLFLOW_HTTP_REQUEST_TIMEOUT, 120 s by default. A server
# that many runs start against at once can take seconds to answer each.
_TIMEOUT = float(os.environ.get("MLPROJECT_HTTP_TIMEOUT") or os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or "120")


class RestTracker:
    def __init__(self, uri: str, timeout: float | None = None):
        self.uri = uri.rstrip("/")
        self._timeout = timeout or _TIMEOUT
        parts = urlsplit(self.uri)
        self._scheme = parts.scheme
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self._base = parts.path.rstrip("/")
        self._headers = {"User-Agent": "mlproject-runner"}
        self._conn = None  # kept alive across the run's few requests
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        user = os.environ.get("MLFLOW_TRACKING_USERNAME") or (parts.username and _unquote(parts.username))
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD") or (parts.password and _unquote(parts.password))
        # The project gets the URL without credentials (MLflow prints it in "View run at")
        # and the credentials as the variables MLflow reads.
        host = f"[{self._host}]" if ":" in self._host else self._host
        netloc = host + (f":{self._port}" if self._port else "")
        self._plain_uri = f"{parts.scheme}://{netloc}{parts.path}".rstrip("/")
        self._credential_env: dict[str, str] = {}
        if parts.username and not os.environ.get("MLFLOW_TRACKING_USERNAME"):
            self._credential_env["MLFLOW_TRACKING_USERNAME"] = _unquote(parts.username)
            if parts.password:
                self._credential_env["MLFLOW_TRACKING_PASSWORD"] = _unquote(parts.password)
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        elif user:
            import base64

            pair = f"{user}:{password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()

    # -- transport ---------------------------------------------------------------
    def _connection(self) -> Connection:
        from runner.tracking.connection import Connection, Endpoint

        endpoint = Endpoint(
            self._host, self._port, tls=self._scheme == "https",
            insecure=os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true",
            ca_file=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None,
        )
        return Connection(endpoint, self._timeout)

    def _call(self, method: str, endpoint: str, body: dict | None = None, query: dict | None = None,
              raw: bytes | None = None, content_type: str = "application/json", transient_retry: bool = True) -> dict:
        """One call, answered. A busy or overloaded server (429, 5xx) is asked again with backoff
        for a bounded time, as MLflow's own client does; every call sent this way is idempotent."""
        if not transient_retry:
            return self._request(method, endpoint, body, query, raw, content_type)
        return retry(lambda: self._request(method, endpoint, body, query, raw, content_type), endpoint,
                     when=_transient)

    def _request(self, method: str, endpoint: str, body: dict | None = None, query: dict | None = None,
                 raw: bytes | None = None, content_type: str = "application/json") -> dict:
        """One call sent and its JSON answer read."""
        from runner.tracking.connection import TransportError

        conn, path, data, headers = self._prepared(endpoint, body, query, raw, content_type)
        try:
            return self._answer(endpoint, conn.request(method, path, data, headers))
        except TransportError as exc:
            raise self._unreachable(exc, sent=False) from None

    def _send(self, method: str, endpoint: str, body: dict | None = None) -> Callable[[], dict]:
        """Send a call now; returns the function that waits for its JSON answer."""
        from runner.tracking.connection import TransportError

        conn, path, data, headers = self._prepared(endpoint, body, None, None, "application/json")
        try:
            conn.send(method, path, data, headers)
        except TransportError as exc:
            raise self._unreachable(exc, sent=False) from None

        def answer() -> dict:
            try:
                response = conn.receive()
            except TransportError as exc:
                raise self._unreachable(exc, sent=True) from None
            return self._answer(endpoint, response)

        return answer

    def _prepared(self, endpoint: str, body: dict | None, query: dict | None, raw: bytes | None,
                  content_type: str) -> tuple[Connection, str, bytes | None, dict[str, str]]:
        path = self._base + endpoint + (f"?{urlencode(query)}" if query else "")
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = dict(self._headers)
        if data is not None:
            headers["Content-Type"] = content_type
        if self._conn is None:
            self._conn = self._connection()
        return self._conn, path, data, headers

    def _unreachable(self, exc: Exception, sent: bool) -> TrackingError:
        reason = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
        tls = type(exc).__module__ == "ssl"
        if tls:
            reason = reason.split(" (_ssl.c:", 1)[0]
        error = TrackingError(
            f"cannot reach the MLflow tracking server at {redact(self.uri)}: {reason}",
            hint="trust its certificate with MLFLOW_TRACKING_SERVER_CERT_PATH=<ca.pem> "
                 "(or, unverified, MLFLOW_TRACKING_INSECURE_TLS=true)" if tls
            else "is the server running? check MLFLOW_TRACKING_URI"
            + (" (or record the run offline: --tracking offline)" if sent is False else ""),
        )
        # Sent but unanswered: the server may have acted on it (a run may exist).
        error.outcome_unknown = sent  # type: ignore[attr-defined]
        # Not even connected: the server saw nothing (a run may be recorded offline instead).
        from runner.tracking.connection import NotConnected

        error.unreachable = isinstance(exc, NotConnected)  # type: ignore[attr-defined]
        return error

    def _answer(self, endpoint: str, response) -> dict:
        payload = response.body
        if response.status >= 400:
            try:
                detail = json.loads(payload)
                message = detail.get("message") or detail.get("error_code") or str(detail)
                code = detail.get("error_code", "")
            except (ValueError, AttributeError):
                message, code = payload[:200].decode(errors="replace"), ""
            message = " ".join(str(message).split())[:300]  # one line, even from an HTML error page
            error = TrackingError(
                f"MLflow tracking server at {redact(self.uri)} refused {endpoint} (HTTP {response.status})"
                + (f": {message}" if message.strip() else ""),
                hint="check the tracking credentials" if response.status in (401, 403) else None,
            )
            error.error_code = code  # type: ignore[attr-defined]
            error.status = response.status  # type: ignore[attr-defined]
            raise error
        try:
            return json.loads(payload) if payload else {}
        except ValueError:
            raise TrackingError(
                f"the MLflow tracking server at {redact(self.uri)} answered {endpoint} with something other than JSON",
                hint="is MLFLOW_TRACKING_URI the tracking server's address?",
            ) from None

    def clone(self) -> RestTracker:
        """The same server and credentials on a connection of its own (for parallel requests)."""
        twin = RestTracker.__new__(RestTracker)
        twin.__dict__.update(self.__dict__)
        twin._conn = None
        return twin

    # -- tracker API ---------------------------------------------------------------
    def _experiment_id(self, name: str | None, experiment_id: str | None) -> str:
        name, experiment_id = experiment_choice(name, experiment_id)
        if experiment_id is not None:
            return str(experiment_id)
        assert name is not None  # (experiment_choice names one whenever it gives no ID)
        found = self._find_experiment(name)
        if found is not None:
            return found
        try:
            created = self._call("POST", "/api/2.0/mlflow/experiments/create", {"name": name})
        except TrackingError as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS" and "already exists" not in exc.message:
                raise
            # Another run created it between our lookup and our creation: use theirs.
            theirs = self._find_experiment(name)
            if theirs is None:
                raise
            return theirs
        return str(created["experiment_id"])

    def _find_experiment(self, name: str) -> str | None:
        try:
            found = self._call("GET", "/api/2.0/mlflow/experiments/get-by-name", query={"experiment_name": name})
        except TrackingError as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return str(found["experiment"]["experiment_id"])

    def start(self, request: StartRequest) -> RunContext:
        return self.begin(request)()

    def begin(self, request: StartRequest) -> Callable[[], RunContext]:
        """Send the run's creation and return a function that completes the start.

        The server creates the run while the caller prepares the rest of the
        launch; only then is its answer read. The parameters follow in
        record_start, once the ledger has the run."""
        if request.existing_run_id:
            run = self._call("GET", "/api/2.0/mlflow/runs/get", query={"run_id": request.existing_run_id})["run"]
            info = run["info"]
            existing = {p["key"]: p.get("value", "") for p in run.get("data", {}).get("params", [])}
            refuse_changed_params(info["run_id"], existing, request.params)
            self._call("POST", "/api/2.0/mlflow/runs/update", {"run_id": info["run_id"], "status": RunStatus.RUNNING})
            return lambda: self._context(info)
        experiment_id = self._experiment_id(request.experiment_name, request.experiment_id)
        body = {"experiment_id": experiment_id, "start_time": now_ms(),
                "tags": [{"key": k, "value": v} for k, v in request.tags.items()]}
        if request.run_name:
            body["run_name"] = request.run_name
        answer = self._send("POST", "/api/2.0/mlflow/runs/create", body)
        attempt = request.tags.get(ATTEMPT_TAG)

        def created() -> dict:
            try:
                return answer()["run"]["info"]
            except TrackingError as exc:
                if not _transient(exc):
                    raise
            # The server failed under load. Unless the run exists after all (found by this
            # attempt's tag), create it again, with backoff, for a bounded time.
            def again() -> dict:
                found = self.find_running(None, experiment_id, ATTEMPT_TAG, attempt) if attempt else []
                if found:
                    return self._call("GET", "/api/2.0/mlflow/runs/get", query={"run_id": found[0]})["run"]["info"]
                return self._call("POST", "/api/2.0/mlflow/runs/create", {**body, "start_time": now_ms()},
                                  transient_retry=False)["run"]["info"]

            time.sleep(0.25)
            return retry(again, "creating the run", when=_transient)

        return lambda: self._context(created())

    def _context(self, info: dict) -> RunContext:
        return RunContext(info["run_id"], str(info["experiment_id"]), self._plain_uri, info.get("artifact_uri", ""),
                          self._credential_env)

    def record_start(self, request: StartRequest, run_id: str) -> None:
        """Log the parameters (and a continued run's tags: a new run got them at creation)."""
        params = [{"key": k, "value": v} for k, v in request.params.items()]
        tags = request.tags_for_existing_run() if request.existing_run_id else {}
        tag_list = [{"key": k, "value": v} for k, v in tags.items()]
        for i in range(0, max(len(params), len(tag_list), 1), 100):
            chunk = {"run_id": run_id, "params": params[i:i + 100], "tags": tag_list[i:i + 100]}
            if chunk["params"] or chunk["tags"]:
                self._call("POST", "/api/2.0/mlflow/runs/log-batch", chunk)

    def find_running(self, experiment_name: str | None, experiment_id: str | None, key: str, value: str) -> list[str]:
        """IDs of the RUNNING runs tagged key=value (a run whose creation's answer was lost)."""
        name, experiment_id = experiment_choice(experiment_name, experiment_id)
        if experiment_id is None:
            assert name is not None  # (experiment_choice names one whenever it gives no ID)
            experiment_id = self._find_experiment(name)
            if experiment_id is None:
                return []
        answer = self._call("POST", "/api/2.0/mlflow/runs/search", {
            "experiment_ids": [experiment_id], "filter": tag_filter(key, value), "max_results": 50})
        return [run["info"]["run_id"] for run in answer.get("runs", []) if run["info"].get("status") == RunStatus.RUNNING]

    def end(self, run_id: str, status: str, end_time_ms: int | None = None, tags: dict[str, str] | None = None) -> None:
        # The caller retries the end as a whole (any failure, for its own budget).
        if tags:
            self.set_tags(run_id, tags)
        self._call("POST", "/api/2.0/mlflow/runs/update", {"run_id": run_id, "status": status, "end_time": end_time_ms or now_ms()},
                   transient_retry=False)

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        stamp = now_ms()
        self._call("POST", "/api/2.0/mlflow/runs/log-batch",
                   {"run_id": run_id, "metrics": [{"key": k, "value": v, "timestamp": stamp, "step": 0} for k, v in metrics.items()]})

    def set_status(self, run_id: str, status: str) -> None:
        """A status that is not an end (SCHEDULED while a cluster job waits in its queue)."""
        self._call("POST", "/api/2.0/mlflow/runs/update", {"run_id": run_id, "status": status})

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self._call("POST", "/api/2.0/mlflow/runs/log-batch",
                   {"run_id": run_id, "tags": [{"key": k, "value": v} for k, v in tags.items()]})

    def results(self, run_id: str) -> tuple[dict[str, str], dict[str, float]]:
        """The run's parameters and the last value of each metric."""
        data = self._call("GET", "/api/2.0/mlflow/runs/get", query={"run_id": run_id})["run"].get("data", {})
        return ({p["key"]: p.get("value", "") for p in data.get("params", [])},
                {m["key"]: m.get("value") for m in data.get("metrics", [])})

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of each value the run logged under `key`, by step (a step's last value)."""
        values: dict[int, tuple[int, float]] = {}
        token = None
        while True:
            query = {"run_id": run_id, "metric_key": key, "max_results": "25000"}
            if token:
                query["page_token"] = token
            page = self._call("GET", "/api/2.0/mlflow/metrics/get-history", query=query)
            for metric in page.get("metrics", []):
                step, stamp = int(metric.get("step", 0)), int(metric.get("timestamp", 0))
                if step not in values or values[step][0] <= stamp:
                    values[step] = (stamp, float(metric["value"]))
            token = page.get("next_page_token")
            if not token:
                return sorted((step, value) for step, (_, value) in values.items())

    def recorded_run(self, run_id: str):
        from runner.tracking import RecordedRunData

        run = self._call("GET", "/api/2.0/mlflow/runs/get", query={"run_id": run_id})["run"]
        info, data = run["info"], run.get("data", {})
        return RecordedRunData(run_id, str(info["experiment_id"]), info.get("status", ""), info.get("artifact_uri", ""),
                               {t["key"]: t.get("value", "") for t in data.get("tags", [])},
                               {p["key"]: p.get("value", "") for p in data.get("params", [])})

    def read_artifact(self, run, path: str) -> bytes | None:
        if not run.artifact_uri.startswith("mlflow-artifacts:"):
            from runner.tracking import read_local_artifact

            return read_local_artifact(run.artifact_uri, path)
        location = urlsplit(run.artifact_uri).path.lstrip("/")
        endpoint = f"/api/2.0/mlflow-artifacts/artifacts/{quote(location)}/{quote(path)}"
        from runner.tracking.connection import TransportError

        if self._conn is None:
            self._conn = self._connection()
        try:
            response = self._conn.request("GET", self._base + endpoint, None, dict(self._headers))
        except TransportError as exc:
            raise self._unreachable(exc, sent=True) from None
        if response.status == 404:
            return None
        if response.status >= 400:
            self._answer(endpoint, response)  # raises the server's error
        return response.body

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None, artifact_uri: str = "") -> None:
        name = path.name if artifact_path is None else f"{artifact_path.strip('/')}/{path.name}"
        if artifact_uri.startswith("mlflow-artifacts:"):
            location = urlsplit(artifact_uri).path.lstrip("/")
            endpoint = f"/api/2.0/mlflow-artifacts/artifacts/{quote(location)}/{quote(name)}"
            self._call("PUT", endpoint, raw=path.read_bytes(), content_type="application/octet-stream")
            return
        from runner.tracking.artifacts import copy_local

        copy_local(artifact_uri, path, name)


def _unquote(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text)


_TRANSIENT_STATUSES = (429, 500, 502, 503, 504)


# MLflow's server answers 400 BAD_REQUEST when its own database is overloaded (a sqlite
# store with many writers: its connection pool times out, or the file stays locked).
_OVERLOADED = re.compile(r"QueuePool limit|database is locked|connection timed out", re.IGNORECASE)


def _transient(exc: TrackingError) -> bool:
    status = getattr(exc, "status", None)
    return status in _TRANSIENT_STATUSES or (status == 400 and bool(_OVERLOADED.search(exc.message)))
