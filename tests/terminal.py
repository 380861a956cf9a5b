"""The real `mlproject` command on a pseudo-terminal, as a person at a terminal runs it."""
from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class TerminalResult:
    returncode: int
    screen: str  # everything written to the terminal (stdout and stderr), carriage returns kept


def run_on_terminal(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 180,
                    on_output=None, columns: int = 120) -> TerminalResult:
    """`on_output(text_so_far, process)` is called as output arrives (e.g. to press Ctrl-C)."""
    master, slave = os.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))  # 40 rows
    process = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=cwd, env={**os.environ, **(env or {})},
                               stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
                if on_output is not None:
                    on_output(b"".join(chunks).decode(errors="replace"), process)
            elif process.poll() is not None and not ready:
                break
        else:
            process.kill()
            raise AssertionError(f"mlproject {' '.join(args)} did not finish on the terminal in {timeout} s")
        returncode = process.wait(timeout=30)
    finally:
        os.close(master)
    return TerminalResult(returncode, b"".join(chunks).decode(errors="replace"))
