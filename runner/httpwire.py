"""A small HTTP/1.1 client on a plain socket: the few requests of the warm path.

`http.client` costs ~15 ms to import (it pulls in `email` and, through it,
`ssl` and OpenSSL's configuration) before a single byte is sent; the runner
makes at most a handful of JSON requests per run, to an MLflow tracking server
or the Docker daemon's socket. This client sends each request in one write on
a socket with TCP_NODELAY, keeps the connection alive, and reads fixed-length,
chunked and read-to-close bodies. TLS (https) wraps the same socket, importing
`ssl` only then.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

_MAX_LINE = 65536
_MAX_HEADERS = 200


class ProtocolError(ConnectionError):
    """The peer's answer was not HTTP/1.x; an OSError, so callers treat it as a transport failure."""


class Disconnected(ConnectionError):
    """The peer closed the connection before answering (a kept-alive connection that timed out)."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes
    version: str = "HTTP/1.1"


@dataclass
class Endpoint:
    """Where to connect: a TCP host and port (optionally TLS), or a unix socket path."""

    host: str
    port: int | None = None
    tls: bool = False
    unix_path: str | None = None
    insecure: bool = False  # TLS without verification (MLFLOW_TRACKING_INSECURE_TLS)
    ca_file: str | None = None

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port in (None, default) else f"{host}:{self.port}"


class Connection:
    """One kept-alive connection; `request` reopens it once if the server closed it while idle."""

    def __init__(self, endpoint: Endpoint, timeout: float):
        self.endpoint = endpoint
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader = None

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._reader = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Response:
        message = _message(self.endpoint, method, path, body, headers)
        for attempt in (1, 2):
            reused = self._sock is not None
            self._send(message)
            try:
                return self.receive(method)
            except (Disconnected, BrokenPipeError, ConnectionResetError):
                if reused and attempt == 1:
                    continue  # the server dropped the idle connection: once more on a new one
                raise
        raise AssertionError("unreachable")

    def send(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> None:
        """Send a request without waiting for the answer (read it later with `receive`).

        The server works on it meanwhile. Raises only if the request could not be
        sent, so the caller knows the server never saw it."""
        self._send(_message(self.endpoint, method, path, body, headers))

    def receive(self, method: str) -> Response:
        """The answer to the request sent last; an error here leaves its outcome unknown."""
        if self._sock is None:
            raise Disconnected("no request is waiting for an answer")
        try:
            response = self._read(method)
        except BaseException:
            self.close()
            raise
        connection = response.headers.get("connection", "").lower()
        if connection == "close" or (response.version == "HTTP/1.0" and connection != "keep-alive"):
            self.close()
        return response

    def _send(self, message: bytes) -> None:
        if self._sock is not None and _dropped(self._sock):
            self.close()  # closed by the server while idle: a new connection, not a lost request
        if self._sock is None:
            self._open()
        try:
            self._sock.sendall(message)  # type: ignore[union-attr]
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        endpoint = self.endpoint
        if endpoint.unix_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(endpoint.unix_path)
            except BaseException:
                sock.close()
                raise
        else:
            # An ASCII host goes as bytes: a str would make getaddrinfo import the idna codec (~1 ms).
            host = endpoint.host.encode("ascii") if endpoint.host.isascii() else endpoint.host
            sock = socket.create_connection((host, endpoint.port or (443 if endpoint.tls else 80)), self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if endpoint.tls:
                sock = _wrap_tls(sock, endpoint)
        self._sock = sock
        self._reader = sock.makefile("rb")

    def _read(self, method: str) -> Response:
        reader = self._reader
        while True:
            line = _line(reader, first=True)
            try:
                version, code, _ = (line.decode("latin-1").rstrip("\r\n") + " ").split(" ", 2)
                status = int(code)
            except ValueError:
                raise ProtocolError(f"not an HTTP response: {line[:80]!r}") from None
            if not version.startswith("HTTP/1."):
                raise ProtocolError(f"not an HTTP/1.x response: {line[:80]!r}")
            headers = _headers(reader)
            if status != 100:  # an interim "100 Continue" precedes the real answer
                break
        if method == "HEAD" or status in (204, 304):
            return Response(status, headers, b"", version)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return Response(status, headers, _chunked(reader), version)
        if "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise ProtocolError("bad Content-Length") from None
            body = reader.read(length)
            if len(body) != length:
                raise Disconnected("the connection closed in the middle of the answer")
            return Response(status, headers, body, version)
        body = reader.read()  # no length given: the body runs until the server closes
        headers["connection"] = "close"
        return Response(status, headers, body, version)


def _dropped(sock: socket.socket) -> bool:
    """Whether an idle connection was closed by the peer.

    An idle HTTP connection has nothing to read, so a readable one was closed,
    unless what arrived is TLS housekeeping (a TLS 1.3 session ticket)."""
    import select

    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        timeout = sock.gettimeout()
        sock.setblocking(False)
        try:
            tls = hasattr(sock, "pending")
            return not (sock.recv(1) if tls else sock.recv(1, socket.MSG_PEEK))
        finally:
            sock.settimeout(timeout)
    except (BlockingIOError, InterruptedError):
        return False  # only TLS records, no data: still open
    except (OSError, ValueError) as exc:
        return "WantRead" not in type(exc).__name__


def _message(endpoint: Endpoint, method: str, path: str, body: bytes | None, headers: dict[str, str] | None) -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: {endpoint.host_header}"]
    for name, value in (headers or {}).items():
        if "\r" in name + value or "\n" in name + value:
            raise ValueError(f"header {name!r} contains a line break")
        head.append(f"{name}: {value}")
    if body is not None or method in ("POST", "PUT", "PATCH"):
        head.append(f"Content-Length: {len(body or b'')}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")


def _line(reader, first: bool = False) -> bytes:
    line = reader.readline(_MAX_LINE + 1)
    if not line:
        raise Disconnected("the server closed the connection without answering") if first else Disconnected(
            "the connection closed in the middle of the answer")
    if len(line) > _MAX_LINE:
        raise ProtocolError("an answer line is too long")
    return line


def _headers(reader) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = _line(reader)
        if line in (b"\r\n", b"\n"):
            return headers
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    raise ProtocolError("too many headers in the answer")


def _chunked(reader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = _line(reader).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise ProtocolError("bad chunk size") from None
        if size == 0:
            _headers(reader)  # trailers, up to the blank line
            return b"".join(parts)
        chunk = reader.read(size)
        if len(chunk) != size:
            raise Disconnected("the connection closed in the middle of the answer")
        parts.append(chunk)
        reader.readline(_MAX_LINE)  # the CRLF after each chunk


def _wrap_tls(sock: socket.socket, endpoint: Endpoint) -> socket.socket:
    import ssl

    if endpoint.insecure:
        context = ssl._create_unverified_context()
    else:
        context = ssl.create_default_context(cafile=endpoint.ca_file or None)
    try:
        return context.wrap_socket(sock, server_hostname=endpoint.host)
    except BaseException:
        sock.close()
        raise


def unix_endpoint(path: str) -> Endpoint:
    return Endpoint("localhost", unix_path=os.fspath(path))
