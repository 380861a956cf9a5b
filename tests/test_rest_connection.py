"""The REST tracker's kept-alive connection (http.client), against real sockets: scripted
servers for the corner cases it must survive, and HTTPS to a real MLflow server through a TLS proxy."""
from __future__ import annotations

import http.client
import re
import socket

import pytest

from conftest import assert_clean_error
from gitservers import read_http_request, serve_connections
from runner.tracking.connection import Connection, Endpoint, TransportError
from trackingproxy import FaultyProxy, self_signed_certificate


class ScriptedServer:
    """Accepts connections on loopback; answers the n-th request with `answers[n]` (raw bytes).

    An answer of None closes the connection without answering; `close_after` closes it
    after that answer (an idle keep-alive connection the server dropped)."""

    def __init__(self, answers: list[bytes | None], close_after: set[int] = frozenset()):
        self.answers = list(answers)
        self.close_after = set(close_after)
        self.requests: list[bytes] = []
        self.connections = 0
        self.listener = serve_connections(self._handle)
        self.port = self.listener.getsockname()[1]

    def _handle(self, conn: socket.socket) -> None:
        self.connections += 1
        with conn:
            buffer = b""
            while True:
                request = read_http_request(conn, buffer)
                if request is None:
                    return
                head, body, buffer = request
                self.requests.append(head + b"\r\n\r\n" + body)
                index = len(self.requests) - 1
                answer = self.answers[index] if index < len(self.answers) else None
                if answer is None:
                    return
                conn.sendall(answer)
                if index in self.close_after:
                    return

    def connection(self) -> Connection:
        return Connection(Endpoint("127.0.0.1", self.port), timeout=5)

    def close(self) -> None:
        self.listener.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_request_carries_host_and_length():
    server = ScriptedServer([OK])
    response = server.connection().request("POST", "/api/x?a=1", b'{"k": 1}', {"Content-Type": "application/json"})
    assert (response.status, response.body) == (200, b"ok")
    sent = server.requests[0]
    assert sent.startswith(b"POST /api/x?a=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 8\r\n" in sent and sent.endswith(b'\r\n\r\n{"k": 1}')
    server.close()


def test_chunked_and_read_to_close_bodies_and_interim_continue():
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
    continued = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nnew"
    until_close = b"HTTP/1.0 200 OK\r\n\r\nall of it"
    server = ScriptedServer([chunked, continued, until_close], close_after={2})
    connection = server.connection()
    assert connection.request("GET", "/a").body == b"hello world"
    second = connection.request("GET", "/b")
    assert (second.status, second.body) == (201, b"new")
    assert connection.request("GET", "/c").body == b"all of it"
    assert server.connections == 1  # one kept-alive connection for all three
    server.close()


def test_a_dropped_idle_connection_is_reopened_once():
    server = ScriptedServer([OK, OK], close_after={0})
    connection = server.connection()
    connection.request("GET", "/first")
    assert connection.request("GET", "/second").body == b"ok"  # the first socket was closed by the server
    assert server.connections == 2
    server.close()


def test_garbage_and_truncated_answers_are_transport_errors():
    server = ScriptedServer([b"SSH-2.0-OpenSSH_9.2\r\n"])
    with pytest.raises(TransportError):
        server.connection().request("GET", "/")
    server.close()
    server = ScriptedServer([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"], close_after={0})
    with pytest.raises(http.client.IncompleteRead):
        server.connection().request("GET", "/")
    server.close()
    server = ScriptedServer([None])  # a fresh connection closed without an answer: not retried
    with pytest.raises(http.client.RemoteDisconnected):
        server.connection().request("GET", "/")
    assert server.connections == 1
    server.close()


def test_header_injection_is_refused():
    import socket

    with socket.socket() as listening:  # (connected first: the header is refused before it is sent)
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        with pytest.raises(ValueError):
            Connection(Endpoint("127.0.0.1", listening.getsockname()[1]), 1).request(
                "GET", "/", headers={"X": "a\r\nEvil: 1"})


# -- HTTPS to a real tracking server ---------------------------------------------------
@pytest.fixture(scope="module")
def tls_proxy(mlflow_server, tmp_path_factory):
    certificate = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    proxy = FaultyProxy(mlflow_server, tls=certificate)
    yield proxy, certificate[0]
    proxy.close()


def _run_id(result) -> str:
    return re.search(r"run with ID '([0-9a-f]{32})'", result.stderr).group(1)


def test_https_tracking_server_with_its_certificate(make_project, cli, mlflow_server, tls_proxy):
    from mlflow.tracking import MlflowClient

    proxy, certificate = tls_proxy
    project = make_project("name: t\nentry_points:\n  main:\n    parameters: {alpha: float}\n"
                           "    command: 'echo alpha={alpha}'\n")
    env = {"MLFLOW_TRACKING_URI": proxy.url, "MLFLOW_TRACKING_SERVER_CERT_PATH": str(certificate)}
    result = cli("run", str(project), "--env-manager", "local", "-P", "alpha=0.5", env=env)
    assert result.returncode == 0, result.stderr
    run = MlflowClient(mlflow_server).get_run(_run_id(result))
    assert run.info.status == "FINISHED" and run.data.params == {"alpha": "0.5"}
    assert ("runs/create", 200) in proxy.seen and ("runs/update", 200) in proxy.seen


def test_https_certificate_not_trusted_is_a_clear_error(make_project, cli, tls_proxy):
    proxy, _ = tls_proxy
    project = make_project("name: t\nentry_points:\n  main:\n    command: 'echo ran'\n")
    result = cli("run", str(project), "--env-manager", "local", env={"MLFLOW_TRACKING_URI": proxy.url})
    assert_clean_error(result, 2, "cannot reach the MLflow tracking server")
    assert "certificate verify failed" in result.stderr and "MLFLOW_TRACKING_SERVER_CERT_PATH" in result.stderr
    assert "ran" not in result.stdout
    insecure = cli("run", str(project), "--env-manager", "local",
                   env={"MLFLOW_TRACKING_URI": proxy.url, "MLFLOW_TRACKING_INSECURE_TLS": "true"})
    assert insecure.returncode == 0, insecure.stderr
    assert "ran" in insecure.stdout
