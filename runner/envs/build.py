"""Running installer commands during an environment build.

Output is captured (and kept for the error message and the build log); each
step is shown through runner.progress (live with its elapsed time on a
terminal, start and end lines elsewhere). An interrupted build stops
its installer's whole process group before the error propagates, so the store
can remove the temporary directory with nothing still writing into it.
"""
from __future__ import annotations

import os
from pathlib import Path

from runner.errors import EnvironmentBuildError
from runner.progress import step
from runner.subprocesses import capture

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Callable, Mapping, Sequence


_TAIL_LINES = 40


def run_step(
    argv: Sequence[str],
    label: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> str:
    """Run one build step; return its output, or raise EnvironmentBuildError with it."""
    with step(progress, label):  # a raise in here shows the step as failed
        try:
            returncode, text, _ = capture(argv, env=env, cwd=cwd, dies_with_caller=True)
        except OSError as exc:
            raise EnvironmentBuildError(f"{label}: cannot start {argv[0]}: {exc.strerror}") from None
        if log is not None:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"$ {' '.join(argv)}\n{text}\n")
        if returncode != 0:
            tail = "\n".join(text.rstrip().splitlines()[-_TAIL_LINES:])
            error = EnvironmentBuildError(
                f"environment build failed: {label} (exit code {returncode})",
                hint="the installer's output is shown above",
                details=tail,
            )
            error.output = f"$ {' '.join(argv)}\n{text}"  # type: ignore[attr-defined] - all of it, for the run's log
            raise error
    return text


def relocate(root: Path, old: Path, new: Path) -> None:
    """Rewrite `old` to `new` in the text files of bin/ (shebangs, activate scripts)."""
    bin_dir = root / "bin"
    if not bin_dir.is_dir():
        return
    old_bytes, new_bytes = str(old).encode(), str(new).encode()
    for entry in bin_dir.iterdir():
        if entry.is_symlink() or not entry.is_file():
            continue
        try:
            data = entry.read_bytes()
        except OSError:
            continue
        if old_bytes in data and b"\0" not in data[:1024]:
            mode = entry.stat().st_mode
            entry.write_bytes(relocated_text(data, old_bytes, new_bytes))
            os.chmod(entry, mode)


# pip writes a script's interpreter into a plain shebang up to this length, and through /bin/sh
# beyond it (older kernels cut a shebang at 128 bytes; one with a space cannot be written at all).
_SHEBANG_MAX = 127


def relocated_text(data: bytes, old: bytes, new: bytes) -> bytes:
    """A text file of an environment with its old path `old` replaced by `new`; a Python script's
    shebang that the new path makes too long (or gives a space) is written as pip writes it then:
    `/bin/sh` running the interpreter, in lines Python reads as a string."""
    data = data.replace(old, new)
    line, _, rest = data.partition(b"\n")
    interpreter = line[2:].strip()
    if (not line.startswith(b"#!") or not interpreter.startswith(new + b"/")
            or not os.path.basename(interpreter).startswith(b"python")
            or (len(line) <= _SHEBANG_MAX and b" " not in interpreter)):
        return data
    quoted = b'"' + interpreter + b'"' if b" " in interpreter else interpreter
    return b"#!/bin/sh\n'''exec' " + quoted + b' "$0" "$@"\n' + b"' '''\n" + rest
