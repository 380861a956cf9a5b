"""A Ray carrier job's log, followed as Ray writes it: each trial's part into the trial's own log
file here, each trial's start and end kept for its state (runner.backends.ray_carriers).

Ray's Jobs REST API answers `GET /api/jobs/{id}/logs` with the whole log every time: read so
once a poll, a carrier's output so far was held and scanned whole, and the driver's memory and
work grew with what its trials printed. The dashboard also streams a job's log over a websocket,
`/api/jobs/{id}/logs/tail` (the endpoint Ray's own `tail_job_logs` uses): from the log's start,
text messages of at most 10 lines or ~20,000 characters, one more as the log grows (Ray looks
once a second), and the socket closed once the job has ended and its log is read to the end.
Following that stream, this host holds one message and one unfinished line at a time.

One process follows a carrier at a time, the one holding its lock (`tail.lock` in the carrier's
directory): it writes the trials' logs, and at each framing line what it has learned
(`tail.json`: how far into the log that line ends, the trial under way, each trial's start and
end, and whether the log was read to its end). Other processes read that file; one of them
takes the lock when its holder dies (a SIGKILLed driver, resumed) and follows the stream from
the log's start again, skipping what was consumed, and, of the trial under way, what its log
file already holds: the log only grows, the same text on every replay, so each trial's log here
only grows too.
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import BinaryIO

_STATE_FILE = "tail.json"
_LOCK_FILE = "tail.lock"
_QUIET_SECONDS = 0.5  # no message this long after one: the stream has sent all the log so far
_SILENT_SECONDS = 3.0  # no message at all this long: the log is empty so far (Ray reads it once a second)
_CATCH_UP_SECONDS = 10.0  # how long a process that has just taken a carrier over waits to read it
_RETRY_SECONDS = 1.0  # between connections to a stream that closed while its job went on


@dataclass(frozen=True)
class TrialEnd:
    """A trial's end line: `MARK end N STATUS CODE REASON`."""

    status: str
    exit_code: int | None
    reason: str | None


@dataclass
class CarrierLog:
    """What has been learned of a carrier's log: which trials started (a place in `started`), how
    those that ended did, and whether the log was read to its end (its job ended)."""

    started: set[int] = field(default_factory=set)
    ends: dict[int, TrialEnd] = field(default_factory=dict)
    complete: bool = False


@dataclass
class _Saved:
    """tail.json: a CarrierLog and where in the log its last framing line ends."""

    log: CarrierLog = field(default_factory=CarrierLog)
    consumed: int = 0  # characters of the log up to the end of its last framing line
    under_way: int | None = None  # the trial started at that line, not ended yet

    def to_json(self) -> str:
        return json.dumps({"consumed": self.consumed, "under_way": self.under_way, "complete": self.log.complete,
                           "started": sorted(self.log.started),
                           "ends": {str(place): [end.status, end.exit_code, end.reason] for place, end in self.log.ends.items()}})

    @classmethod
    def read(cls, path: Path) -> _Saved:
        try:
            said = json.loads(path.read_text())
            log = CarrierLog({int(place) for place in said["started"]},
                             {int(place): TrialEnd(*end) for place, end in said["ends"].items()}, bool(said["complete"]))
            return cls(log, int(said["consumed"]), said["under_way"])
        except (OSError, ValueError, KeyError, TypeError):
            return cls()


class CarrierTail:
    """One carrier's log, followed by this process while it holds the carrier's lock; else read
    from what its follower saved."""

    def __init__(self, address: str, carrier_id: str, mark: str, trial_logs: list[Path], directory: Path):
        self.address, self.carrier_id, self.mark = address, carrier_id, mark
        self.trial_logs, self.directory = trial_logs, directory
        self._guard = threading.Lock()  # (the loop thread writes what the following threads read)
        self._taking = threading.Lock()
        self._lock_fd: int | None = None
        self._saved = _Saved()
        self.caught_up = threading.Event()
        self.read_whole = threading.Event()  # the log was read to its end (by this process, or before)
        # The stream under way: how far into it, what is skipped, the unfinished line, the trial written.
        self._offset = 0
        self._skip = 0
        self._line: list[str] = []
        self._line_is_output = False  # the unfinished line cannot be a framing line: written as it comes
        self._held_newline = False  # a trial's last newline is the framing's own, not the trial's
        self._file: BinaryIO | None = None
        self._file_skip = 0
        self._heard = False  # a message came on this connection

    # -- seen from the threads that follow the trials --------------------------------------
    def follow(self) -> bool:
        """Take the carrier over when no process follows it and its log was not read to its end:
        True when this call did (its stream then sends the log so far; see `caught_up`)."""
        import fcntl

        with self._taking:
            if self._lock_fd is not None or self._saved.log.complete:
                return False
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False  # (another process follows it: its saved word is read)
            self._lock_fd = fd
            with self._guard:
                self._saved = _Saved.read(self.directory / _STATE_FILE)
            if self._saved.log.complete:  # (read to its end by a follower before)
                self.read_whole.set()
                self._release()
                return False
            self.caught_up.clear()
            asyncio.run_coroutine_threadsafe(self._follow(), _loop())
            return True

    def view(self) -> CarrierLog:
        """What is known of the log now: this process's own word while it follows the carrier (or
        once it read it to the end), else what its follower saved."""
        if self._lock_fd is not None or self._saved.log.complete:
            with self._guard:
                log = self._saved.log
                return CarrierLog(set(log.started), dict(log.ends), log.complete)
        return _Saved.read(self.directory / _STATE_FILE).log

    def _release(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    # -- the stream, in the loop thread ----------------------------------------------------
    async def _follow(self) -> None:
        import aiohttp

        from runner.backends.ray_rest import RayRest

        url = "ws" + RayRest(self.address).base.removeprefix("http") + f"/api/jobs/{self.carrier_id}/logs/tail"
        try:
            while True:
                self._restart()
                try:
                    async with aiohttp.ClientSession(trust_env=True) as session:
                        async with session.ws_connect(url, heartbeat=30.0) as socket:
                            connected = time.monotonic()
                            while True:
                                try:
                                    message = await socket.receive(timeout=_QUIET_SECONDS)
                                except asyncio.TimeoutError:
                                    # (Quiet: caught up once the log so far came, or nothing came for a while.)
                                    if self._heard or time.monotonic() - connected > _SILENT_SECONDS:
                                        self.caught_up.set()
                                    continue
                                if message.type != aiohttp.WSMsgType.TEXT:
                                    break  # closed: the job ended and its log was sent whole, or it broke off
                                self._heard = True
                                with self._guard:
                                    self._feed(message.data)
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    pass  # (refused, or broken off: its job's state says whether to connect again)
                if await asyncio.get_running_loop().run_in_executor(None, self._job_ended):
                    with self._guard:
                        self._end_of_log()
                    return
                await asyncio.sleep(_RETRY_SECONDS)
        finally:
            self._close_trial()
            self.caught_up.set()
            if not self._saved.log.complete:
                self._release()  # (another process, or this one's next view, follows it from what was saved)

    def _job_ended(self) -> bool:
        """Whether the carrier has ended (or Ray forgot it): its log will not grow."""
        from runner.backends.ray_rest import ENDED, RayRest

        try:
            info = RayRest(self.address).job(self.carrier_id)
        except Exception:  # noqa: BLE001 - unreachable a moment: asked again after the next connection
            return False
        return info is None or info.get("status") in ENDED

    def _restart(self) -> None:
        """A new connection sends the log from its start: what was consumed is skipped."""
        self._close_trial()
        saved = self._saved
        self._offset, self._skip = 0, saved.consumed
        self._line, self._line_is_output, self._held_newline = [], False, False
        self._heard = False
        if saved.under_way is not None:
            self._open_trial(saved.under_way)

    def _feed(self, text: str) -> None:
        if self._skip:
            skipped = text[:self._skip]
            text = text[len(skipped):]
            self._skip -= len(skipped)
            self._offset += len(skipped)
        lines = text.split("\n")
        for line in lines[:-1]:
            self._offset += len(line) + 1
            self._end_line(line)
        if lines[-1]:
            self._offset += len(lines[-1])
            self._unfinished(lines[-1])
        if self._file is not None:
            self._file.flush()  # (readers of the trial's log see each message as it comes)

    def _unfinished(self, piece: str) -> None:
        """Part of a line whose end has not come yet: written at once unless it may still be a
        framing line (it starts as one could)."""
        if not self._line_is_output:
            self._line.append(piece)
            so_far = "".join(self._line)
            prefix = self.mark + " "
            if so_far.startswith(prefix) or prefix.startswith(so_far):
                return
            self._line, self._line_is_output, piece = [], True, so_far
        self._write(piece)

    def _end_line(self, piece: str) -> None:
        if self._line_is_output:
            self._write(piece)
            self._line_is_output = False
            self._held_newline = True
            return
        line = "".join(self._line) + piece
        self._line = []
        if line.startswith(self.mark + " ") and self._framing(line[len(self.mark) + 1:]):
            return
        self._write(line)
        self._held_newline = True

    def _write(self, text: str) -> None:
        if self._file is None:
            return  # (the carrier's own output, between its trials)
        data = ("\n" if self._held_newline else "").encode() + text.encode()
        self._held_newline = False
        if self._file_skip:
            skipped = min(self._file_skip, len(data))
            data, self._file_skip = data[skipped:], self._file_skip - skipped
        self._file.write(data)

    def _framing(self, said: str) -> bool:
        """A framing line, `start N` or `end N STATUS CODE REASON` (runner.cli.carry._frame): the
        trial's log opened or closed, and what it says saved. False: not one after all."""
        what, _, rest = said.partition(" ")
        number, _, rest = rest.partition(" ")
        if what not in ("start", "end") or not number.isdigit() or int(number) >= len(self.trial_logs):
            return False
        place = int(number)
        self._held_newline = False  # (the newline before a framing line is the framing's)
        self._close_trial()
        saved = self._saved
        if what == "start":
            saved.log.started.add(place)
            saved.under_way = place
        else:
            status, _, rest = rest.partition(" ")
            code, _, reason = rest.partition(" ")
            try:
                told = json.loads(reason) if reason else None
            except ValueError:
                told = None
            saved.log.ends[place] = TrialEnd(status or "FAILED", int(code) if code.lstrip("-").isdigit() else None,
                                             told if isinstance(told, str) else None)
            saved.under_way = None
        saved.consumed = self._offset
        self._save()
        if what == "start":
            self._open_trial(place)
        return True

    def _open_trial(self, place: int) -> None:
        path = self.trial_logs[place]
        self._file = open(path, "ab")
        self._file_skip = self._file.tell()  # (written by a follower before: the same text again)

    def _close_trial(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._file_skip = None, 0

    def _end_of_log(self) -> None:
        if (self._line and not self._line_is_output) or self._held_newline:
            self._write("".join(self._line))  # (a trial stopped under way: no framing line takes its last newline)
        self._line = []
        self._close_trial()
        self._saved.log.complete = True
        self._save()
        self.read_whole.set()
        self.caught_up.set()
        self._release()

    def _save(self) -> None:
        from runner import home

        home.save_text(self.directory / _STATE_FILE, self._saved.to_json())


# -- one event loop for every carrier this process follows -----------------------------------
_tails_lock = threading.Lock()
_tails: dict[str, CarrierTail] = {}
_event_loop: asyncio.AbstractEventLoop | None = None


def tail(address: str, carrier_id: str, mark: str, trial_logs: list[Path], directory: Path) -> CarrierTail:
    """This process's view of the carrier's log (one per carrier)."""
    with _tails_lock:
        if carrier_id not in _tails:
            _tails[carrier_id] = CarrierTail(address, carrier_id, mark, trial_logs, directory)
            if len(_tails) > 512:  # (carriers read to their ends long ago)
                for old in [key for key, kept in _tails.items() if kept._saved.log.complete][:256]:
                    del _tails[old]
        return _tails[carrier_id]


def _loop() -> asyncio.AbstractEventLoop:
    global _event_loop
    with _tails_lock:
        if _event_loop is None:
            _event_loop = asyncio.new_event_loop()
            threading.Thread(target=_event_loop.run_forever, name="mlproject-ray-logs", daemon=True).start()
        return _event_loop



def views(tails: list[CarrierTail], ended: frozenset[str] = frozenset()) -> list[CarrierLog]:
    """What is known of each carrier's log; those this call took over read up to now first, or
    to their end for carriers whose jobs have `ended` (a few seconds at most, all at once: a
    command that settles a trial, or a driver resumed)."""
    started = [carrier for carrier in tails if carrier.follow()]
    deadline = time.monotonic() + _CATCH_UP_SECONDS
    for carrier in started:
        event = carrier.read_whole if carrier.carrier_id in ended else carrier.caught_up
        event.wait(max(0.0, deadline - time.monotonic()))
    return [carrier.view() for carrier in tails]
