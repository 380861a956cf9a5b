"""Timing helpers for `make bench`: repeated runs, medians, peak memory, tables.

Speed targets live here, not in timed tests. Each scenario times commands side
by side in one process so the numbers share the machine's state.
"""
from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
MLFLOW_VERSION = "3.17.2"


@dataclass
class Timing:
    label: str
    seconds: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    failure: str | None = None  # set when the command failed (reported, not timed)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def measure(
    label: str, argv: list[str], repeat: int, cwd: Path, env: dict[str, str] | None = None, may_fail: bool = False
) -> Timing:
    """Run `argv` `repeat` times; wall time each, and the peak RSS of any process in it.

    A failing command stops the benchmark, unless `may_fail` (a competitor's
    known shortcoming), where the failure is reported in the table instead."""
    timing = Timing(label)
    for _ in range(repeat):
        # (stderr to a file, not a pipe: a command that says more than a pipe holds, as a sweep
        # of 1,000 trials does, would block on it while this waits for its exit)
        with tempfile.TemporaryFile() as said:
            started = time.perf_counter()
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=said)
            _, status, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
            said.seek(0)
            stderr = said.read().decode(errors="replace")
        if proc.returncode != 0:
            if may_fail:
                last = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
                timing.failure = f"exit {proc.returncode}: {last[0][:160]}"
                return timing
            raise SystemExit(f"benchmark command failed ({label}): {' '.join(argv)}\n{stderr[-2000:]}")
        timing.seconds.append(elapsed)
        # ru_maxrss is in KiB on Linux: the largest single process among the child and what it waited for.
        timing.peak_rss_mb = max(timing.peak_rss_mb, usage.ru_maxrss / 1024)
    return timing


def measure_interleaved(specs: list[tuple[str, list[str], dict[str, str]]], repeat: int, cwd: Path,
                        before: Callable[[], None] | None = None) -> list[Timing]:
    """Like `measure` for several commands, taken in turns (A B C A B C ...).

    When two medians are subtracted, a drift of the machine's load during the
    measurement then moves both the same way instead of favouring one. `before`
    runs (untimed) before each command: e.g. until a cluster is idle again, so no
    command is timed against the work the previous one started."""
    timings = [Timing(label) for label, _, _ in specs]
    for _ in range(repeat):
        for timing, (label, argv, env) in zip(timings, specs):
            if before is not None:
                before()
            one = measure(label, argv, 1, cwd, env)
            timing.seconds.extend(one.seconds)
            timing.peak_rss_mb = max(timing.peak_rss_mb, one.peak_rss_mb)
    return timings


def mlflow_python() -> Path | None:
    """A private virtualenv with mlflow==3.17.2, built once (uv) and reused."""
    venv = BENCH_DIR / ".venv-mlflow"
    python = venv / "bin" / "python"
    if python.exists() and (venv / ".complete").exists():
        return python
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        print("uv not found; cannot build the MLflow comparison environment", file=sys.stderr)
        return None
    print(f"building the comparison environment (mlflow=={MLFLOW_VERSION}) once...", file=sys.stderr)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([uv, "venv", "-q", "--clear", "-p", sys.executable, str(venv)], check=True)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), "--compile-bytecode", f"mlflow=={MLFLOW_VERSION}"],
        check=True,
    )
    (venv / ".complete").write_text("")
    return python


def mlproject_command() -> list[str]:
    script = Path(sys.executable).parent / "mlproject"
    return [str(script)] if script.exists() else [sys.executable, "-m", "runner"]


def table(title: str, rows: list[Timing], baseline: Timing, target_note: str = "", reference: Timing | None = None) -> str:
    """A markdown table; `ratio` compares each other row to `reference` (default: the first mlproject row)."""
    lines = [
        f"### {title}",
        "",
        "| what | median | min | max | over baseline (median) | ratio to mlproject | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    ours = reference or next((r for r in rows if r.label.startswith("mlproject")), None)
    for row in rows:
        if row.failure is not None:
            lines.append(f"| {row.label} | failed ({row.failure.replace('|', '/')}) | | | | | |")
            continue
        over = (row.median - baseline.median) * 1000
        ratio = f"{row.median / ours.median:.1f}x" if ours and row is not ours and row is not baseline else ""
        lines.append(
            f"| {row.label} | {row.median * 1000:.1f} ms | {min(row.seconds) * 1000:.1f} ms | "
            f"{max(row.seconds) * 1000:.1f} ms | {over:+.1f} ms | {ratio} | {row.peak_rss_mb:.1f} MB |"
        )
    if target_note:
        lines += ["", target_note]
    return "\n".join(lines) + "\n"


def peak_rss_self_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def wait_until_idle(session_id: int, quiet_ms: float = 30.0, window: float = 1.0, limit: float = 90.0) -> float:
    """Wait until the processes of a session use under `quiet_ms` of CPU per `window` seconds.

    `mlflow server` starts a uvicorn worker and several job consumers that burn
    both cores for seconds after its port opens; timing requests then measures
    the server's start-up, not its answers. Returns the seconds waited."""
    tick = os.sysconf("SC_CLK_TCK")

    def cpu_ms() -> float:
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == session_id:  # field 6 of stat: the session id
                total += int(fields[11]) + int(fields[12])  # utime + stime, in ticks
        return total * 1000 / tick

    started = time.monotonic()
    before = cpu_ms()
    while time.monotonic() - started < limit:
        time.sleep(window)
        after = cpu_ms()
        if after - before < quiet_ms:
            break
        before = after
    return time.monotonic() - started


def start_mlflow_server(work: Path) -> tuple[subprocess.Popen, str] | None:
    """`mlflow server` (sqlite store, one worker) on a free loopback port, waited for until its
    processes are idle (its job consumers keep both cores busy for seconds after the port opens);
    (process, URL), or None without the comparison environment. Stop it with os.killpg."""
    import socket

    python = mlflow_python()
    if python is None:
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [str(python), "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri",
         f"sqlite:///{work}/server.db", "--artifacts-destination", str(work / "artifacts"), "--workers", "1"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    settled = wait_until_idle(server.pid)
    print(f"   mlflow server idle after {settled:.1f} s", file=sys.stderr)
    return server, f"http://127.0.0.1:{port}"
