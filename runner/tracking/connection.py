"""One kept-alive HTTP connection to a tracking server, on the standard library's `http.client`.

The REST tracker sends a run's creation and reads the answer later, while it
prepares the rest of the launch: `send` and `receive` are `http.client`'s own
`request` and `getresponse`, split. What this module adds is the policy around
them: TLS settings from MLflow's variables, and a connection that the server
closed while idle is reopened before a request is sent on it.
"""
from __future__ import annotations

import http.client
import os
import select
import socket
from dataclasses import dataclass

# What a caller treats as "the server could not be reached or did not answer".
TransportError = (OSError, http.client.HTTPException)
# How long a connection may take to be made; by default the request's own timeout. Not shorter:
# a server whose accept queue is full (fifty runs starting at once) drops the handshake, and the
# client's retransmissions (1 s, 2 s, 4 s, 8 s, ...) connect later; cut short, they would make a
# busy server look unreachable.
_CONNECT_TIMEOUT = os.environ.get("MLPROJECT_CONNECT_TIMEOUT")


def connect_timeout(request_timeout: float) -> float:
    return float(_CONNECT_TIMEOUT) if _CONNECT_TIMEOUT else request_timeout


class NotConnected(ConnectionError):
    """No connection could be made (refused, no route, no such host, timed out): the server
    has seen nothing of the request."""


@dataclass
class Response:
    status: int
    body: bytes


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int | None = None
    tls: bool = False
    insecure: bool = False  # TLS without verification (MLFLOW_TRACKING_INSECURE_TLS)
    ca_file: str | None = None  # MLFLOW_TRACKING_SERVER_CERT_PATH


class Connection:
    def __init__(self, endpoint: Endpoint, timeout: float):
        self.endpoint = endpoint
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Response:
        """Send and wait for the answer. A kept-alive connection that turns out to be closed
        (the server dropped it between the check and the send) is tried once more on a new one."""
        for attempt in (1, 2):
            reused = self._conn is not None and self._conn.sock is not None
            self.send(method, path, body, headers)
            try:
                return self.receive()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if not (reused and attempt == 1):
                    raise
        raise AssertionError("unreachable")

    def send(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> None:
        """Send a request without waiting (read the answer with `receive`). Raises only when the
        request could not be sent, so the caller knows the server never saw it."""
        conn = self._connection()
        try:
            conn.request(method, path, body, headers or {})
        except BaseException:
            self.close()
            raise

    def receive(self) -> Response:
        """The answer to the request sent last; an error here leaves its outcome unknown."""
        if self._conn is None:
            raise http.client.ResponseNotReady("no request is waiting for an answer")
        try:
            response = self._conn.getresponse()
            body = response.read()
        except BaseException:
            self.close()
            raise
        return Response(response.status, body)

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is not None and self._conn.sock is not None and _closed_by_peer(self._conn.sock):
            self.close()  # closed by the server while idle: a new connection, not a lost request
        if self._conn is None:
            endpoint = self.endpoint
            if endpoint.tls:
                self._conn = http.client.HTTPSConnection(endpoint.host, endpoint.port, timeout=self.timeout,
                                                         context=_tls_context(endpoint))
            else:
                self._conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=self.timeout)
            self._connect(self._conn)
        return self._conn

    def _connect(self, conn: http.client.HTTPConnection) -> None:
        """Connect now, so that a server that cannot be reached is told from one that was reached
        and failed (NotConnected). A TLS failure is not the former."""
        import ssl

        conn.timeout = connect_timeout(self.timeout)
        try:
            conn.connect()
        except ssl.SSLError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise NotConnected(getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__) from exc
        conn.timeout = self.timeout
        if conn.sock is not None:
            conn.sock.settimeout(self.timeout)


def _closed_by_peer(sock: socket.socket) -> bool:
    """An idle HTTP connection has nothing to read: readable means the server closed it (or sent
    TLS housekeeping, for which a new connection is just as good)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _tls_context(endpoint: Endpoint):
    import ssl

    if endpoint.insecure:
        return ssl._create_unverified_context()
    return ssl.create_default_context(cafile=endpoint.ca_file or None)
