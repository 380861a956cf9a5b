"""Helper processes (installers, git): output captured, never left running.

An interrupted caller stops the helper's whole process group before the
exception propagates, so nothing keeps writing into a directory that is about
to be removed.
"""
from __future__ import annotations

import os
import signal
import subprocess

from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Mapping, Sequence


def capture(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    merge_stderr: bool = True,
    input: str | None = None,
    text: bool = True,
    dies_with_caller: bool = False,
) -> tuple[int, Any, Any]:
    """Run to completion: (return code, stdout, stderr); stderr is "" when merged.
    `text=False`: stdout and stderr as bytes, as written (a binary diff).
    `dies_with_caller`: killed if this process dies first, even by SIGKILL (an installer that
    would go on filling, and locking, a half-made environment no one will use).

    Raises OSError when the program cannot be started.
    """
    proc = subprocess.Popen(
        _dying_with_caller(argv) if dies_with_caller else list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(None if input is None else input.encode())
    except BaseException:
        stop(proc)
        raise
    if not text:
        return proc.returncode, out, err or b""
    return proc.returncode, out.decode(errors="replace"), (err or b"").decode(errors="replace")


def _dying_with_caller(argv: Sequence[str]) -> list[str]:
    """argv started through util-linux's `setpriv --pdeathsig KILL`: Linux kills it when the
    thread that started it ends, and that thread waits for it (capture), so only with this
    process. As it is where there is no setpriv (not Linux; an interrupt still stops it), or
    no such program (so that Popen says so, not setpriv)."""
    import shutil

    if not _setpriv:
        _setpriv.append(shutil.which("setpriv"))
    if _setpriv[0] is None or shutil.which(argv[0]) is None:
        return list(argv)
    return [_setpriv[0], "--pdeathsig", "KILL", "--", *argv]


_setpriv: list[str | None] = []  # its path, once looked for


def stop(proc: subprocess.Popen) -> None:
    for signum, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
