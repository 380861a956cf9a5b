"""The child process: its own process group, live output tee, signals, SubmittedRun.

The command runs in a new session (its own process group, no controlling
terminal), so the runner decides what reaches it: a cancel sends the signal that
asked for it (SIGINT for Ctrl-C, else SIGTERM) to the whole group, waits a grace
period, then SIGKILLs it. When the command exits, any process it left behind in
its group is stopped the same way: no process outlives its run.

A cluster job's runner can be killed outright (Ray SIGKILLs the job's process group when
the node's supervisor dies) while the command, in its own session, would go on unnoticed:
there a guard process, started with the command, stops the command's group when the
runner's end of a pipe closes without a word, which the kernel does when the runner dies.

A run's processes are its command's process group and every process that carries the run's
marker (`MLPROJECT_RUN_ID=<id>`) in its environment: a descendant that left the group
(`setsid sleep 301 &`, a daemonising server) keeps its environment, so it is found and stopped
with the run. Only a process that empties its own environment escapes that.

Signal handlers (Ctrl-C in the CLI, the keeper, the node-side runner) call `request_cancel`, so it
must never wait for anything the code it interrupted may hold: no lock of the run (an RLock, so
the interrupted thread's own `start()` can be re-entered), and no new thread (`Thread.start` takes
a module-wide lock of `threading`). A cancel asked for while the command is being started is
carried out as soon as its process exists; the grace period's end is watched by the watcher thread.

When the runner's own output is a terminal, the command's is one too: a
pseudo-terminal whose output is teed to the screen and the log, with the
screen's window size, so progress bars and colours behave as under `mlflow run`.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from runner.errors import LaunchError
from runner.processes import start_ticks  # (alive and not a zombie)
from runner.status import RunStatus

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Callable, Mapping, Sequence

    FinishCallback = Callable[["Outcome"], None]

RUNNING, FINISHED, FAILED, KILLED = RunStatus.RUNNING, RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED
DEFAULT_GRACE_SECONDS = 10.0
_DRAIN_SECONDS = 2.0  # output still held open by an escaped process is given up after this


def kill_grace() -> float:
    try:
        return max(0.0, float(os.environ.get("MLPROJECT_KILL_GRACE", DEFAULT_GRACE_SECONDS)))
    except ValueError:
        return DEFAULT_GRACE_SECONDS


@dataclass(frozen=True)
class Outcome:
    status: str  # FINISHED, FAILED or KILLED
    exit_code: int  # shell convention: 128+N for a child killed by signal N




def exit_code_of(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


def group_members(pgid: int) -> list[int]:
    """PIDs of the live (non-zombie) processes in a process group, read from /proc."""
    members = []
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return members
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(pid))
    return members


def group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is in the group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies also answer signal 0; an init that does not reap them would keep us waiting.
    return bool(group_members(pgid))


def stop_group(pgid: int, grace: float) -> None:
    """SIGTERM the group, wait up to `grace`, then SIGKILL whatever is left."""
    if not group_alive(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return
        time.sleep(0.02)
    _signal_group(pgid, signal.SIGKILL)


RUN_MARKER = "MLPROJECT_RUN_ID"  # in the environment of every process a run starts


def marked_processes(run_id: str) -> list[int]:
    """Live processes whose environment carries run `run_id`'s marker, wherever they went
    (another session, another process group): read from /proc (~3 ms for 300 processes)."""
    marker = f"{RUN_MARKER}={run_id}".encode()
    found = []
    own = os.getpid()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        if pid == own:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if marker not in handle.read().split(b"\0"):
                    continue
        except OSError:
            continue
        if start_ticks(pid) is not None:  # (not a zombie)
            found.append(pid)
    return found


def stop_run_processes(run_id: str, pgid: int | None, grace: float) -> None:
    """Stop everything of a run: its command's group, and every marked process that left it
    (TERM, up to `grace`, then KILL)."""
    if pgid is not None:
        stop_group(pgid, grace)
    escaped = marked_processes(run_id)
    if not escaped:
        return
    for pid in escaped:
        _signal_pid(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while escaped and time.monotonic() < deadline:
        time.sleep(0.02)
        escaped = [pid for pid in escaped if start_ticks(pid) is not None]
    for pid in escaped:
        _signal_pid(pid, signal.SIGKILL)


def _signal_pid(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class _Deferred:
    """One thread that runs work handed to it from signal handlers: `queue.SimpleQueue.put` is
    reentrant (safe in a handler that interrupted any code), where starting a thread is not."""

    def __init__(self) -> None:
        import queue

        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def ready(self) -> None:
        """Start the thread; called outside handlers, before one may need it."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, daemon=True, name="mlproject-deferred")
            self._thread.start()

    def call(self, work: Callable[[], None]) -> None:
        self._queue.put(work)

    def _work(self) -> None:
        while True:
            work = self._queue.get()
            try:
                work()
            except Exception:  # noqa: BLE001 - one failed piece of work must not stop the others
                pass


deferred = _Deferred()


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class _Tee(threading.Thread):
    """Copies the child's stdout/stderr to ours (live) and to the run's log."""

    def __init__(self, streams: Mapping[int, int], log_file, echo: bool):
        super().__init__(daemon=True, name="mlproject-tee")
        self._streams = dict(streams)  # child pipe fd -> our fd to echo to
        self._log = log_file
        self._echo = echo
        self._stop_at: float | None = None

    def stop_after(self, seconds: float) -> None:
        self._stop_at = time.monotonic() + seconds

    def _write_log(self, chunk: bytes) -> None:
        if self._log is None:
            return
        try:
            self._log.write(chunk)
            self._log.flush()
        except OSError as exc:  # a full disk: the command goes on, and its output still reaches us
            self._log = None
            os.write(2, f"warning: the run's log is incomplete from here on: {exc.strerror or exc}\n".encode())

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        for fd in self._streams:
            selector.register(fd, selectors.EVENT_READ)
        open_fds = set(self._streams)
        try:
            while open_fds:
                if self._stop_at is not None and time.monotonic() > self._stop_at:
                    break
                for key, _ in selector.select(timeout=0.1):
                    try:
                        chunk = os.read(key.fd, 65536)
                    except OSError:  # EIO: a pseudo-terminal whose every writer has closed it
                        chunk = b""
                    if not chunk:
                        selector.unregister(key.fd)
                        open_fds.discard(key.fd)
                        continue
                    self._write_log(chunk)
                    if self._echo:
                        _write_all(self._streams[key.fd], chunk)
        finally:
            selector.close()
            for fd in self._streams:
                try:
                    os.close(fd)
                except OSError:
                    pass


def _close_quietly(log_file) -> None:
    try:
        log_file.close()
    except OSError:  # (what a full disk kept in its buffer: the tee said the log is incomplete)
        pass


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            written = os.write(fd, data)
            data = data[written:]
    except OSError:
        pass  # our own stdout went away (closed pipe); the log still has everything


class RunHandle:
    """What every submitted run offers, wherever it runs: `wait()`, `get_status()`, `done`,
    `cancel()`, and what is known of it. A subclass keeps `_status` and `_done` and says how to
    `request_cancel()`."""

    run_id: str  # the MLflow run's ID when tracked, else the ledger's
    ledger_id: str
    log_path: Path | None
    tracking_uri: str | None  # where the run is tracked (credentials masked); None: the ledger only
    experiment_id: str | None
    exit_code: int | None
    cancel_signal: int | None
    launching: bool  # its command is (being) started: a cancel now stops the command
    backend: str = "local"
    job_id: str | None = None  # the cluster's ID of its job
    reason: str | None = None  # why it ended so, when the ledger knows (a cluster's word)
    end_error: str | None = None  # the outcome is known but could not be recorded (a full disk)
    _status: str
    _done: threading.Event

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends; True if it FINISHED. Ctrl-C cancels the run."""
        try:
            if timeout is None:
                while not self._done.wait(0.5):
                    pass
            elif not self._done.wait(timeout):
                return False
        except KeyboardInterrupt:
            self.cancel(signal.SIGINT)
            raise
        return self._status == FINISHED

    def get_status(self) -> str:
        return self._status

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self, signum: int = signal.SIGTERM) -> None:
        """Stop the run and wait until its end is recorded."""
        self.request_cancel(signum)
        while not self._done.wait(0.5):
            pass

    def request_cancel(self, signum: int = signal.SIGTERM) -> None:
        raise NotImplementedError

    def sync_window_size(self, from_fd: int = 1) -> None:
        """A resized terminal reaches the command's (where it has one)."""


class SubmittedRun(RunHandle):
    """A launched command: wait for it, ask its status, or cancel it.

    Mirrors mlflow.projects.SubmittedRun (`run_id`, `wait()`, `get_status()`,
    `cancel()`) and adds `exit_code` and `log_path`.
    """

    def __init__(self, run_id: str, log_path: Path | None, tracking_uri: str | None = None,
                 experiment_id: str | None = None):
        self.run_id = run_id
        self.ledger_id = run_id  # the ledger's row (another ID when an MLflow run is continued)
        self.log_path = log_path
        self.tracking_uri = tracking_uri  # where the run is tracked (credentials masked); None: the ledger only
        self.experiment_id = experiment_id
        self.exit_code: int | None = None
        self.cancel_signal: int | None = None
        self._status = RUNNING
        self.launching = False  # set just before the command starts; until then it is preparing
        self._done = threading.Event()
        # Reentrant: a signal handler may interrupt this thread inside start() (see the module).
        self._lock = threading.RLock()
        self._cancels = 0  # cancel requests so far; the first stops the command, the second kills it
        self._delivered = 0  # of those, carried out on the process
        self._kill_at: float | None = None  # the first cancel's grace period ends (the watcher kills then)
        self._process: subprocess.Popen[bytes] | None = None
        self.marker: str | None = None  # the RUN_MARKER value in the command's environment
        self.end_error: str | None = None  # why the run's end could not be recorded, if it could not
        self._terminal: int | None = None  # the pseudo-terminal's master side, when the command has one

    @property
    def started(self) -> bool:
        """Its command's process exists: from then on its watcher ends the run."""
        return self._process is not None

    # -- public API (and wait, get_status, done, cancel: RunHandle's) ----------------
    # cancel() stops the whole process group: TERM (INT for Ctrl-C), a grace period, KILL.
    def request_cancel(self, signum: int = signal.SIGTERM) -> None:
        """Start cancelling without blocking: safe inside a signal handler, even one that
        interrupted this run's own start(). Before the command exists, the request is kept and
        start() either starts nothing or carries it out as soon as the process exists.

        A second request while the first is still in its grace period kills at once.
        """
        with self._lock:
            if self._done.is_set():
                return
            self._cancels += 1
            self.cancel_signal = self.cancel_signal or signum
        self._deliver_cancels()

    def _deliver_cancels(self) -> None:
        """Carry out the cancel requests not carried out yet, if the process exists."""
        with self._lock:
            process = self._process
            if process is None or self._delivered >= self._cancels:
                return
            first = self._delivered == 0
            self._delivered = self._cancels
            if first:
                self._kill_at = time.monotonic() + kill_grace()
        if not first or self._cancels > 1:  # a second request (two Ctrl-C during the start too)
            _signal_group(process.pid, signal.SIGKILL)
            return
        # Ctrl-C reaches the command as Ctrl-C (Python code sees KeyboardInterrupt, as under
        # mlflow run, where the command shares the terminal); anything else as SIGTERM.
        _signal_group(process.pid, signal.SIGINT if self.cancel_signal == signal.SIGINT else signal.SIGTERM)

    def sync_window_size(self, from_fd: int = 1) -> None:
        """Give the command's terminal the size of ours (after a SIGWINCH)."""
        if self._terminal is not None:
            _copy_window_size(from_fd, self._terminal)

    def __repr__(self) -> str:
        return f"SubmittedRun(run_id={self.run_id!r}, status={self._status!r}, exit_code={self.exit_code!r})"

    # -- internals -----------------------------------------------------------
    def _finish(self, outcome: Outcome, on_finish: FinishCallback | None) -> None:
        try:
            if on_finish is not None:
                on_finish(outcome)
        except Exception as exc:  # noqa: BLE001 - (a full disk under the ledger): said by whoever waits
            self.end_error = f"{exc.__class__.__name__}: {exc}"
        finally:
            with self._lock:
                self.exit_code = outcome.exit_code
                self._status = outcome.status
            self._done.set()

    def _fail_before_start(self, on_finish: FinishCallback | None) -> None:
        self._finish(Outcome(FAILED, 1), on_finish)


def start(
    run: SubmittedRun,
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    *,
    echo: bool = True,
    on_started: Callable[[int], None] | None = None,
    on_finish: FinishCallback | None = None,
    guarded: bool = False,
) -> None:
    """Start `argv` for `run`; a watcher thread ends the run when the command exits.

    `guarded`: the command's process group is stopped if this process dies before it
    (see the module's docstring).

    `on_started(pgid)` runs in the caller's thread once the process exists,
    before anything can end the run; `on_finish(outcome)` runs exactly once.

    Raises LaunchError (after ending the run as FAILED) if the command cannot start.
    """
    run.marker = env.get(RUN_MARKER)
    log_file = open(run.log_path, "ab") if run.log_path else open(os.devnull, "wb")
    out_r, out_w, err_r, err_w = _output_channels(echo)
    if out_r == err_r:  # one pseudo-terminal for both, as a terminal is
        run._terminal = out_r
    from runner import faults

    try:
        with run._lock:
            cancelled_early = run.cancel_signal is not None
            if not cancelled_early:
                faults.checkpoint("launch.popen")  # (a signal landing here is handled inside this lock)
                run._process = subprocess.Popen(
                    list(argv),
                    cwd=str(cwd),
                    env=dict(env),
                    stdout=out_w,
                    stderr=err_w,
                    start_new_session=True,
                    close_fds=True,
                )
    except OSError as exc:
        _close_all(out_r, out_w, err_r, err_w)
        log_file.close()
        run._fail_before_start(on_finish)
        raise LaunchError(f"cannot start {argv[0]!r}: {exc.strerror}", hint=_start_hint(exc)) from None
    finally:
        if run._process is not None:
            _close_all(out_w, err_w)
    if cancelled_early:
        _close_all(out_r, out_w, err_r, err_w)
        log_file.close()
        run._finish(Outcome(KILLED, 128 + run.cancel_signal), on_finish)  # type: ignore[operator]
        return

    # Once the process exists its watcher starts, whatever is raised from here on (an
    # interrupt in an API caller's thread, a full ledger in on_started): it ends the run.
    tee = _Tee({out_r: 1} if out_r == err_r else {out_r: 1, err_r: 2}, log_file, echo)
    guard = None
    try:
        faults.checkpoint("launch.started")  # (the process exists; its group is not recorded yet)
        run._deliver_cancels()  # one that came while the process was being started
        if guarded:
            guard = _start_guard(run._process.pid)  # type: ignore[union-attr]
        if on_started is not None:
            on_started(run._process.pid)  # type: ignore[union-attr]
    finally:
        watcher = threading.Thread(
            target=_watch, args=(run, tee, log_file, on_finish, guard), daemon=True, name="mlproject-watch"
        )
        tee.start()
        watcher.start()


def _output_channels(echo: bool) -> tuple[int, int, int, int]:
    """(stdout read, stdout write, stderr read, stderr write) for the command: a pseudo-terminal
    for each of our own streams that is a terminal (one shared when both are), else pipes."""
    out_tty = echo and os.isatty(1)
    err_tty = echo and os.isatty(2)
    if not (out_tty or err_tty):
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        return out_r, out_w, err_r, err_w
    terminal = _open_terminal(1 if out_tty else 2)
    out_r, out_w = terminal if out_tty else os.pipe()
    if err_tty and out_tty:
        return out_r, out_w, out_r, out_w
    err_r, err_w = terminal if err_tty else os.pipe()
    return out_r, out_w, err_r, err_w


def _open_terminal(like_fd: int) -> tuple[int, int]:
    """A pseudo-terminal (master, slave) with the window size of `like_fd`; output is passed as
    written (no \n -> \r\n), since our own terminal does that translation for the screen."""
    import pty
    import termios

    master, slave = pty.openpty()
    attributes = termios.tcgetattr(slave)
    attributes[1] &= ~termios.ONLCR
    termios.tcsetattr(slave, termios.TCSANOW, attributes)
    _copy_window_size(like_fd, slave)
    return master, slave


def _copy_window_size(from_fd: int, to_fd: int) -> None:
    import fcntl
    import termios

    try:
        size = fcntl.ioctl(from_fd, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(to_fd, termios.TIOCSWINSZ, size)
    except OSError:
        pass


def _close_all(*fds: int) -> None:
    for fd in dict.fromkeys(fds):  # a shared pseudo-terminal appears twice
        try:
            os.close(fd)
        except OSError:
            pass


def _start_guard(pgid: int) -> int | None:
    """A process, in a session of its own (out of reach of whatever kills this one's group),
    that waits on a pipe from this one: a line means the command ended here and it goes away;
    end of file without one means this process died, and it stops group `pgid` (TERM, the
    grace period, KILL). Returns our end of the pipe, or None when no guard could start."""
    read_end, write_end = os.pipe()  # (not inheritable: only the guard gets the read end)
    script = 'read -r _ && exit 0; kill -TERM -"$0" 2>/dev/null; sleep "$1"; kill -KILL -"$0" 2>/dev/null'
    try:
        subprocess.Popen(["sh", "-c", script, str(pgid), f"{kill_grace():g}"], stdin=read_end,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    except OSError:
        os.close(write_end)
        return None
    finally:
        os.close(read_end)
    return write_end


def _release_guard(guard: int | None) -> None:
    if guard is not None:
        _write_all(guard, b"ended\n")
        os.close(guard)


def _watch(run: SubmittedRun, tee: _Tee, log_file, on_finish: FinishCallback | None, guard: int | None) -> None:
    process = run._process
    assert process is not None
    while True:
        try:
            returncode = process.wait(timeout=0.05)
            break
        except subprocess.TimeoutExpired:
            if run._kill_at is not None and time.monotonic() >= run._kill_at:  # a cancel's grace is over
                run._kill_at = None
                _signal_group(process.pid, signal.SIGKILL)
    # What the command left behind: in its group, and marked processes that left the group.
    if run.marker is not None:
        stop_run_processes(run.marker, process.pid, kill_grace())
    else:
        stop_group(process.pid, kill_grace())
    _release_guard(guard)
    tee.stop_after(_DRAIN_SECONDS)
    tee.join()
    run._terminal = None  # closed by the tee
    _close_quietly(log_file)
    if run.cancel_signal is not None:
        status = KILLED
    else:
        status = FINISHED if returncode == 0 else FAILED
    run._finish(Outcome(status, exit_code_of(returncode)), on_finish)


def _start_hint(exc: OSError) -> str:
    """What to do about a command that did not start: its reason is rarely a missing program."""
    import errno

    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return "too many open files: raise the limit (`ulimit -n 4096` in the shell that runs mlproject)"
    if exc.errno in (errno.EAGAIN, errno.ENOMEM):
        return "the machine is out of processes or memory: end some, or raise the limits (`ulimit -u`)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "it is not executable by this user: check its permissions"
    return "is it installed and on PATH?"
