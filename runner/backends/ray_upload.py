"""Ray's job SDK in a process of its own: `python -m runner.backends.ray_upload` (JSON in, JSON out).

The SDK is needed only to submit a job whose packages the cluster does not hold yet: it
uploads them (runner.backends.ray_rest speaks the rest of the Jobs API). Imported into the
submitting process, its ~1.9 s were paid once, but its ~60 MB stayed there to the end: a
sweep's driver, ~55 MB over 1,000 carried trials, carried the SDK too whenever its project's
content was new to the cluster. So each upload is a short-lived worker; the job travels on its
stdin (its env_vars may hold credentials: never on a command line).

Request: {"address": ..., "job": {the keyword arguments of JobSubmissionClient.submit_job}}.
Answer: {"ok": true}, or {"error": {"kind": "missing" | "unreachable" | "refused", "text": ...}}.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any


def submit(address: str, job: dict[str, Any]) -> None:
    """Submit `job` through the SDK in a worker. Raises NotAvailableError (no SDK here),
    UsageError (the cluster cannot be reached), or RuntimeError with Ray's refusal as the SDK
    words it (its callers tell "try again later" and a package too large from its text)."""
    from runner.backends.ray import no_sdk, unreachable
    from runner.errors import LaunchError
    from runner.subprocesses import capture

    try:
        code, out, err = capture([sys.executable, "-m", "runner.backends.ray_upload"],
                                 input=json.dumps({"address": address, "job": job}, default=str), merge_stderr=False,
                                 dies_with_caller=True)
    except OSError as exc:
        raise LaunchError(f"cannot start the Ray upload worker: {exc.strerror}") from None
    try:
        answer = json.loads(out)
    except ValueError:
        said = [line for line in err.splitlines() if line.strip()]
        raise LaunchError(f"the Ray upload worker failed (exit code {code}): {said[-1] if said else 'no output'}",
                          hint="check the backend config (-c) and `ray job list` on the cluster") from None
    if "ok" in answer:
        return
    kind, text = answer["error"]["kind"], answer["error"]["text"]
    if kind == "missing":
        raise no_sdk()
    if kind == "unreachable":
        raise unreachable(address, text)
    raise RuntimeError(text)


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    import logging

    from runner.backends.ray import _first_line

    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        return {"error": {"kind": "missing", "text": ""}}
    for name in ("ray", "ray.dashboard.modules.dashboard_sdk", "ray._private.runtime_env.packaging"):
        logging.getLogger(name).setLevel(logging.WARNING)  # its upload notices are not our output
    os.environ.pop("RAY_ADDRESS", None)  # (the SDK takes it over the address it is given: the config's must win)
    try:
        client = JobSubmissionClient(request["address"])
    except Exception as exc:  # noqa: BLE001 - the SDK raises ConnectionError, ValueError, RuntimeError
        return {"error": {"kind": "unreachable", "text": _first_line(exc)}}
    try:
        client.submit_job(**request["job"])
    except Exception as exc:  # noqa: BLE001 - the SDK's errors are RuntimeError, ValueError, HTTP errors
        return {"error": {"kind": "refused", "text": str(exc) or exc.__class__.__name__}}
    return {"ok": True}


def main() -> None:
    answer = _answer(json.loads(sys.stdin.read()))
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    os._exit(0)  # (the SDK's threads are not waited for: the answer is given)


if __name__ == "__main__":
    main()
