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
) -> tuple[int, Any, Any]:
    """Run to completion: (return code, stdout, stderr); stderr is "" when merged.
    `text=False`: stdout and stderr as bytes, as written (a binary diff).

    Raises OSError when the program cannot be started.
    """
    proc = subprocess.Popen(
        list(argv),
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
