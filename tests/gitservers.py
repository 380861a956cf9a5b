"""Real git servers on loopback for the git tests: git daemon, HTTP with basic auth, sshd.

Each server is a real process or socket server started by a fixture and stopped
by it. Nothing here is mocked: the runner's own git talks to them over TCP.
"""
from __future__ import annotations

import base64
import functools
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
}


def git(*args: str, cwd: Path | None = None) -> str:
    completed = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=False,
    )
    if completed.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {completed.stderr}")
    return completed.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_connections(handle, unix_path: Path | None = None) -> socket.socket:
    """A listener on a free loopback port (or on the Unix socket `unix_path`) whose every
    connection goes to `handle(conn)` in a thread of its own, until the listener is closed."""
    if unix_path is None:
        listener = socket.create_server(("127.0.0.1", 0))
    else:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(unix_path))
        listener.listen(16)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener


def read_http_request(conn: socket.socket, pending: bytes) -> tuple[bytes, bytes, bytes] | None:
    """One HTTP/1.1 request read from `conn`, after the `pending` bytes already read from it: its
    head, its body (by Content-Length) and the bytes read past it; None if the peer closed first."""
    while b"\r\n\r\n" not in pending:
        data = conn.recv(65536)
        if not data:
            return None
        pending += data
    head, _, pending = pending.partition(b"\r\n\r\n")
    declared = re.search(rb"(?im)^content-length: *(\d+)", head)
    length = int(declared.group(1)) if declared else 0
    while len(pending) < length:
        data = conn.recv(65536)
        if not data:
            return None
        pending += data
    return head, pending[:length], pending[length:]


def wait_for_port(port: int, what: str, proc: subprocess.Popen | None = None, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on port {port} within {timeout} s")


def stop_process(proc: subprocess.Popen) -> None:
    """Stop a server started in a session of its own, with every process of its group: `git
    daemon` runs `git-daemon` as a child that outlived a terminated `git` and went on serving
    its port (a test that stopped the server to run offline fetched from it, in CI)."""
    import signal

    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # (what outlived the leader: a connection's child)
    except ProcessLookupError:
        pass


# -- a repository with history to ask for ----------------------------------------
MLPROJECT = """\
name: gitdemo
entry_points:
  main:
    parameters:
      who: {type: string, default: world}
    command: "python say.py {who}"
"""


@dataclass(frozen=True)
class DemoRepo:
    work: Path  # a working copy
    bare: Path  # the same history, bare, as servers export it
    v1: str  # tag v1 (main's first commit)
    main: str  # main's tip
    feature: str  # branch `feature`'s tip


def make_demo_repo(root: Path, name: str = "demo") -> DemoRepo:
    """main: v1 ("version one"), then "version two"; feature: "feature branch".

    Each commit's root project and `sub/` project print which version they are.
    """
    work = root / f"{name}-work"
    work.mkdir(parents=True)
    git("init", "-q", "-b", "main", str(work))

    def commit(text: str, message: str) -> str:
        (work / "MLproject").write_text(MLPROJECT)
        (work / "say.py").write_text(f"import sys\nprint('{text}:', sys.argv[1])\n")
        (work / "sub").mkdir(exist_ok=True)
        (work / "sub" / "MLproject").write_text("entry_points:\n  main:\n    command: python hello.py\n")
        (work / "sub" / "hello.py").write_text(f"print('sub {text}')\n")
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", message, cwd=work)
        return git("rev-parse", "HEAD", cwd=work)

    v1 = commit("version one", "first")
    git("tag", "v1", cwd=work)
    git("checkout", "-q", "-b", "feature", cwd=work)
    feature = commit("feature branch", "feature work")
    git("checkout", "-q", "main", cwd=work)
    main = commit("version two", "second")
    bare = root / "srv" / "org" / f"{name}.git"
    bare.parent.mkdir(parents=True, exist_ok=True)
    git("clone", "-q", "--bare", str(work), str(bare))
    git("update-server-info", cwd=bare)  # for the dumb HTTP server
    return DemoRepo(work, bare, v1, main, feature)


# -- git daemon (git://) -------------------------------------------------------------
@dataclass
class GitDaemon:
    base: Path
    port: int
    log: Path
    proc: subprocess.Popen | None = None

    def url(self, path: str) -> str:
        return f"git://127.0.0.1:{self.port}/{path}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", "--verbose", f"--base-path={self.base}",
             "--listen=127.0.0.1", f"--port={self.port}", str(self.base)],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"),  # noqa: SIM115 (closed with the process)
            start_new_session=True,  # (stopped with its whole group: see stop_process)
        )
        wait_for_port(self.port, "git daemon", self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def upload_requests(self) -> int:
        return self.log.read_text(errors="replace").count("Request upload-pack")


# -- dumb HTTP with basic auth --------------------------------------------------------
class _AuthHandler(SimpleHTTPRequestHandler):
    credentials = ""
    requests_seen: list[str]
    stall: threading.Event | None = None  # when set up, requests wait until it is set

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.stall is not None:
            self.stall.wait(60)
        expected = "Basic " + base64.b64encode(self.credentials.encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.requests_seen.append(self.path)
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@dataclass
class HttpServer:
    root: Path
    username: str
    password: str
    port: int = 0
    server: ThreadingHTTPServer | None = None
    requests_seen: list[str] | None = None
    stall: threading.Event | None = None  # a server that accepts and never answers (until set)

    def start(self) -> None:
        seen: list[str] = []
        handler = type("Handler", (_AuthHandler,), {"credentials": f"{self.username}:{self.password}",
                                                    "requests_seen": seen, "stall": self.stall})
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), functools.partial(handler, directory=str(self.root)))
        self.port = self.server.server_address[1]
        self.requests_seen = seen
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.stall is not None:
            self.stall.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def url(self, path: str, password: str | None = None) -> str:
        return f"http://{self.username}:{password or self.password}@127.0.0.1:{self.port}/{path}"


# -- sshd with a throwaway key, for git@alias:org/repo.git ----------------------------
@dataclass
class SshServer:
    root: Path  # repositories are served relative to it, as GitHub serves org/repo.git
    work: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def client_config(self) -> Path:
        return self.work / "ssh_config"

    def git_ssh_command(self) -> str:
        return f"ssh -F {self.client_config}"

    def start(self) -> None:
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if not os.path.exists(sshd):
            raise AssertionError("sshd is not installed: apt-get install openssh-server (.ci/run does)")
        _ensure_git_account()
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        self.work.mkdir(parents=True, exist_ok=True)
        host_key, user_key = self.work / "host_key", self.work / "user_key"
        for key in (host_key, user_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        authorized = self.work / "authorized_keys"
        shutil.copyfile(f"{user_key}.pub", authorized)
        # Repositories are named relative to `root`, like GitHub's org/repo.git.
        force = f"cd {self.root} && eval \"$SSH_ORIGINAL_COMMAND\""
        (self.work / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {authorized}\n"
            f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            f"PidFile {self.work / 'sshd.pid'}\nAllowUsers git\nForceCommand {force}\n"
        )
        (self.work / "known_hosts").write_text("gitserver " + Path(f"{host_key}.pub").read_text())
        self.client_config.write_text(
            f"Host gitserver\n  HostName 127.0.0.1\n  Port {self.port}\n  IdentityFile {user_key}\n  IdentitiesOnly yes\n"
            f"  HostKeyAlias gitserver\n  UserKnownHostsFile {self.work / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
        )
        self.proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(self.work / "sshd_config")],
            stdout=subprocess.DEVNULL, stderr=open(self.work / "sshd.log", "ab"),  # noqa: SIM115
            start_new_session=True,  # (stopped with its whole group: see stop_process)
        )
        wait_for_port(self.port, "sshd", self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def _ensure_git_account() -> None:
    """The `git` account that `git@host:...` logs in as (created once, like a git server's)."""
    import pwd

    try:
        pwd.getpwnam("git")
    except KeyError:
        if os.geteuid() != 0:
            raise AssertionError("the ssh tests need a `git` account; run them as root or create it") from None
        subprocess.run(["useradd", "--system", "--home-dir", "/nonexistent", "--no-create-home",
                        "--shell", "/bin/sh", "git"], check=True)
    # A locked account ("!") may not log in even with a key when PAM is off; "*" may.
    subprocess.run(["usermod", "-p", "*", "git"], check=True)


# -- a connection that dies mid-transfer ------------------------------------------------
class CuttingRelay:
    """A TCP relay on loopback in front of a server; while `cut_after` is set, each connection
    is closed once that many bytes went from the server to the client: the server "dies"
    in the middle of a transfer. Set `cut_after = None` to let transfers complete."""

    def __init__(self, upstream_port: int, cut_after: int | None):
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cuts = 0
        self.listener = serve_connections(self._relay)
        self.port = self.listener.getsockname()[1]

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        limit = self.cut_after
        threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
        self._pipe(upstream, client, limit)

    def _pipe(self, source, target, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    target.sendall(data[: max(0, limit - sent)])
                    self.cuts += 1
                    break
                target.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.listener.close()
