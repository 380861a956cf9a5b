"""Ctrl-Cs at random instants of imports: the main thread imports standard modules again and
again while a thread sends it SIGINT at a seeded random instant of each round. Reports whether
any interrupt left the interpreter's global import lock held or was lost ("Exception ignored").

    python tests/import_storm.py guarded|raw SEED SECONDS

`raw` keeps Python's own handler (on 2026-12-05 it left the lock held within 30 s in 2 of 3
seeds); `guarded` has it through `runner.startup.where_safe`, as the project's commands do."""
from __future__ import annotations

import _imp
import json
import os
import random
import signal
import sys
import threading
import time
import warnings


def main(mode: str, seed: int, seconds: float) -> dict:
    from runner import startup

    handler = signal.default_int_handler
    signal.signal(signal.SIGINT, startup.where_safe(handler) if mode == "guarded" else handler)
    lost: list[str] = []
    sys.unraisablehook = lambda unraisable: lost.append(repr(unraisable.exc_value))
    warnings.simplefilter("ignore")  # (deprecated modules among those imported)
    skip = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"}
    names = [name for name in sorted(sys.stdlib_module_names)
             if not name.startswith("_") and name not in skip and name not in sys.modules][:120]
    rng = random.Random(seed)
    round_started = threading.Semaphore(0)
    stopping = threading.Event()

    def striker() -> None:
        while not stopping.is_set():
            round_started.acquire()
            time.sleep(rng.uniform(0, 0.03))
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=striker, daemon=True).start()
    rounds = interrupted = 0
    held = False
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and not held and not lost:
            rounds += 1
            try:
                round_started.release()
                for name in names:
                    for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                        del sys.modules[loaded]
                    try:
                        __import__(name)
                    except Exception:  # noqa: BLE001 - a module that does not import here
                        pass
                time.sleep(0.05)  # (the round's strike lands by now)
            except KeyboardInterrupt:
                interrupted += 1
            held = _imp.lock_held()
    finally:
        stopping.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return {"rounds": rounds, "interrupted": interrupted, "lock_held": held, "lost": lost}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))), flush=True)
    os._exit(0)  # (modules imported half-way may not shut down cleanly)
