"""A proxy in front of a real `mlflow server` that injects faults, optionally over TLS."""
from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key, made with the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


# What MLflow's sqlite-backed server answered when 50 parallel runs exhausted its connection pool.
POOL_EXHAUSTED = (400, b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "(sqlalchemy.exc.TimeoutError) '
                       b'QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00"}')


class FaultyProxy:
    """Forwards to a real `mlflow server`; answers 503 (or `failure`: a status and body) to the
    first `fail[endpoint]` calls of an endpoint, and delays every call of `delay[endpoint]` by that many seconds. `lose[endpoint]`
    calls are forwarded (the server acts on them) but answered 503: the answer is lost. With
    `tls` (a certificate and key file), it serves HTTPS."""

    def __init__(self, upstream: str, fail: dict[str, int] | None = None, delay: dict[str, float] | None = None,
                 tls: tuple[Path, Path] | None = None, lose: dict[str, int] | None = None,
                 failure: tuple[int, bytes] = (503, b"")):
        import http.client
        import threading
        import time
        from http.server import BaseHTTPRequestHandler
        from urllib.parse import urlparse

        target = urlparse(upstream)
        remaining = self.fail = dict(fail or {})  # change it to change what fails from now on
        delays = dict(delay or {})
        losing = dict(lose or {})
        lock = threading.Lock()
        self.seen: list[tuple[str, int]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                endpoint = self.path.split("?", 1)[0].rsplit("/mlflow/", 1)[-1]
                time.sleep(delays.get(endpoint, 0))
                with lock:
                    failing = remaining.get(endpoint, 0) > 0
                    if failing:
                        remaining[endpoint] -= 1
                if failing:
                    seen.append((endpoint, failure[0]))
                    self.send_response(failure[0])
                    self.send_header("Content-Length", str(len(failure[1])))
                    self.end_headers()
                    self.wfile.write(failure[1])
                    return
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                with lock:
                    lost = losing.get(endpoint, 0) > 0
                    if lost:
                        losing[endpoint] -= 1
                if lost:
                    seen.append((endpoint, -response.status))  # done upstream, answered 503
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                seen.append((endpoint, response.status))
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815 (http.server's naming; MLflow uses all five)

            def log_message(self, *args) -> None:
                pass

        self._handler, self._tls = Handler, tls
        self._switch, self._stopped = threading.Lock(), False
        self._serve(0)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    def _serve(self, port: int) -> None:
        import threading
        from http.server import ThreadingHTTPServer

        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler)
        if self._tls is not None:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self._tls[0]), str(self._tls[1]))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """As a stopped server: connections to its address are refused until `restart()`."""
        with self._switch:
            if not self._stopped:
                self._port = self.server.server_address[1]
                self.close()
                self._stopped = True

    def restart(self) -> None:
        self.restart_if_stopped()

    def restart_if_stopped(self) -> None:
        with self._switch:
            if self._stopped:
                self._serve(self._port)
                self._stopped = False

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
