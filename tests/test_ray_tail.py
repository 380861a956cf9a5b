"""A Ray carrier's log as its stream sends it (runner.backends.ray_tail): each trial's part into
its own log, its start and end learned, whatever the message boundaries; and a follower taking
over from one that died mid-way (a SIGKILLed driver) leaves each trial's log as one reading
would have. The stream itself, from a real cluster, is in tests/test_ray.py."""
from __future__ import annotations

import json
import random

import pytest

from runner.backends.ray_tail import CarrierTail, TrialEnd, _Saved

MARK = "a1b2c3d4e5f6a1b2c3d4e5f6"
OUTPUTS = [
    "",
    "one line\n",
    "no newline at its end",
    "two\nlines\n\n",
    f"{MARK}x looks like a framing line, is not one\n{MARK} start 99 out of range\n",
    "x" * 70_000 + "\n",  # (longer than a message: its line comes in pieces)
    "héllo ✓ ünïcode\r\n",
    f"{MARK[:10]}\n",
]
ENDS = [TrialEnd("FINISHED", 0, None), TrialEnd("FAILED", 3, "its command exited with 3"), TrialEnd("KILLED", None, None)]


def _frame(index: int, what: str, end: TrialEnd | None = None) -> str:
    """As runner.cli.carry._frame writes it."""
    line = f"{MARK} {what} {index}"
    if end is not None:
        line += f" {end.status} {'-' if end.exit_code is None else end.exit_code} {json.dumps(end.reason)}"
    return f"\n{line}\n"


def _carrier_log(unended: bool = False) -> str:
    text = "Ray's preamble\nRunning entrypoint for job mlproject-carrier-x: exec python -m runner job\n"
    for index, output in enumerate(OUTPUTS):
        text += f"carrier: run {index} ({index + 1}/{len(OUTPUTS)})\n" + _frame(index, "start") + output
        if not (unended and index == len(OUTPUTS) - 1):
            text += _frame(index, "end", ENDS[index % len(ENDS)])
    return text


def _tail(tmp_path) -> CarrierTail:
    logs = [tmp_path / f"run{index}" / "output.log" for index in range(len(OUTPUTS))]
    for log in logs:
        log.parent.mkdir(exist_ok=True)
    return CarrierTail("http://127.0.0.1:1", "mlproject-carrier-x", MARK, logs, tmp_path / "carrier")


def _messages(text: str, rng: random.Random) -> list[str]:
    """The text cut at random places, as a stream's messages of at most ~20,000 characters."""
    cuts = sorted(rng.sample(range(1, len(text)), 60))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


def _read_whole(tail: CarrierTail, text: str, rng: random.Random) -> None:
    tail._restart()
    for message in _messages(text, rng):
        tail._feed(message)
    tail._end_of_log()


@pytest.mark.parametrize("seed", range(6))
def test_each_trial_gets_its_own_output_whatever_the_message_boundaries(tmp_path, seed):
    tail = _tail(tmp_path)
    _read_whole(tail, _carrier_log(), random.Random(seed))
    for index, output in enumerate(OUTPUTS):
        assert tail.trial_logs[index].read_bytes().decode() == output, index
    log = tail.view()
    assert log.started == set(range(len(OUTPUTS))) and log.complete
    assert log.ends == {index: ENDS[index % len(ENDS)] for index in range(len(OUTPUTS))}
    assert _Saved.read(tail.directory / "tail.json").log == log  # (what another process reads)


@pytest.mark.parametrize("seed", range(6))
def test_a_follower_that_takes_over_mid_way_leaves_the_logs_as_one_reading_would(tmp_path, seed):
    """The first follower dies after a random part of the stream (its last message half written
    to a trial's log, as a SIGKILL leaves it); the next starts the stream from the beginning."""
    rng = random.Random(seed)
    text = _carrier_log(unended=True)
    first = _tail(tmp_path)
    first._restart()
    stop_at = rng.randrange(len(text))
    for message in _messages(text[:stop_at], rng):
        first._feed(message)
    if first._file is not None:  # (killed while writing its last message: half of it in the file)
        first._file.flush()
        first._file.truncate(max(0, first._file.tell() - rng.randrange(5)))
    first._close_trial()

    second = _tail(tmp_path)
    second._saved = _Saved.read(second.directory / "tail.json")
    _read_whole(second, text, rng)
    for index, output in enumerate(OUTPUTS):
        assert second.trial_logs[index].read_bytes().decode() == output, (index, stop_at)
    log = second.view()
    assert log.started == set(range(len(OUTPUTS))) and log.complete
    assert set(log.ends) == set(range(len(OUTPUTS) - 1))  # (the last trial's carrier was stopped under it)
