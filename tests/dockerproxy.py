"""A proxy in front of a real Docker daemon's socket that holds the daemon to instants no test
can hit on its own: it refuses removals, as the daemon does while another removal of the same
container is under way (409, "removal of container ... is already in progress"), and it makes
a container's creation take seconds (it takes a few on the vfs storage driver), so that a signal
lands while the launcher waits for it, and the daemon finishes the creation whatever became of
the one who asked. Everything else is passed through unchanged."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from gitservers import read_http_request, serve_connections

_REFUSAL = b'{"message":"removal of container is already in progress"}'


class DockerProxy:
    """Listens on `socket_path` and forwards to the daemon at `daemon_socket`. The first
    `refusals` container removals (`DELETE /containers/...`) are answered 409 here; a creation
    (`POST /containers/create`) reaches the daemon `hold_creation` seconds after it was asked
    (`creation_asked` is set as it arrives, `creation_answered` once the daemon answers it), even
    if its asker is gone by then."""

    def __init__(self, daemon_socket: str, socket_path: Path, refusals: int = 0, hold_creation: float = 0.0):
        self.daemon_socket = daemon_socket
        self.refusals = refusals
        self.hold_creation = hold_creation
        self.refused = 0
        self.removals_passed = 0
        self.creation_asked = threading.Event()
        self.creation_answered = threading.Event()
        self._lock = threading.Lock()
        self._upstreams: list[socket.socket] = []
        self._listener = serve_connections(self._serve, socket_path)
        self.host = f"unix://{socket_path}"

    def close(self) -> None:
        self._listener.close()
        for upstream in self._upstreams:
            upstream.close()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.daemon_socket)
        except OSError:
            client.close()
            return
        self._upstreams.append(upstream)
        answer_awaited: list[threading.Event] = []  # (set when the daemon's next answer comes)
        threading.Thread(target=_pipe, args=(upstream, client, answer_awaited), daemon=True).start()
        pending = b""
        try:
            while True:
                request = read_http_request(client, pending)
                if request is None:
                    return
                head, body, pending = request
                lines = head.split(b"\r\n")
                method, path = (lines[0].split(b" ") + [b"", b""])[:2]
                headers = {name.strip().lower(): value.strip() for name, _, value in
                           (line.partition(b":") for line in lines[1:])}
                if b"upgrade" in headers or b"chunked" in headers.get(b"transfer-encoding", b""):
                    upstream.sendall(head + b"\r\n\r\n" + body + pending)  # (a stream from here: passed on as it is)
                    _pipe(client, upstream, [])
                    return
                removal = method == b"DELETE" and b"/containers/" in path
                if removal and self._refuse():
                    client.sendall(b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n"
                                   b"Content-Length: %d\r\n\r\n%s" % (len(_REFUSAL), _REFUSAL))
                    continue
                if removal:
                    with self._lock:
                        self.removals_passed += 1
                if method == b"POST" and b"/containers/create" in path and self.hold_creation:
                    self.creation_asked.set()
                    time.sleep(self.hold_creation)
                    answer_awaited.append(self.creation_answered)
                upstream.sendall(head + b"\r\n\r\n" + body)
        except OSError:
            return
        finally:
            # The daemon's side stays open: a request it has is carried out and answered, as when
            # its asker dies mid-request (closed, the daemon would cancel it); see close().
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _refuse(self) -> bool:
        with self._lock:
            if self.refused < self.refusals:
                self.refused += 1
                return True
            return False


def _pipe(source: socket.socket, target: socket.socket, answer_awaited: list[threading.Event]) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            while answer_awaited:
                answer_awaited.pop().set()
            target.sendall(data)
    except OSError:
        pass
    finally:
        try:
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass
