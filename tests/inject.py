"""The test suite's fault injectors, runnable by hand against any project and server.

    python tests/inject.py tracking-proxy --upstream http://127.0.0.1:5000 --fail runs/update=3 --delay runs/create=1
    python tests/inject.py cut-relay --upstream-port 9418 --after 65536

Each prints where to point the runner (MLFLOW_TRACKING_URI, or the git URL's port)
and serves until Ctrl-C. See docs/reliability.md, "Injecting the faults yourself".
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gitservers import CuttingRelay  # noqa: E402
from trackingproxy import POOL_EXHAUSTED, FaultyProxy, self_signed_certificate  # noqa: E402


def _pairs(items: list[str], kind: type) -> dict:
    result = {}
    for item in items:
        endpoint, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: expected ENDPOINT=VALUE, got {item!r}")
        result[endpoint] = kind(value)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    proxy = sub.add_parser("tracking-proxy", help="a proxy in front of an MLflow server that fails, loses or delays calls")
    proxy.add_argument("--upstream", required=True, help="the real server, e.g. http://127.0.0.1:5000")
    proxy.add_argument("--fail", action="append", default=[], metavar="ENDPOINT=N", help="answer 503 (or see --overloaded) to the first N calls")
    proxy.add_argument("--lose", action="append", default=[], metavar="ENDPOINT=N",
                       help="forward the first N calls, then answer 503 (the server acted; the answer is lost)")
    proxy.add_argument("--delay", action="append", default=[], metavar="ENDPOINT=SECONDS", help="hold every call")
    proxy.add_argument("--overloaded", action="store_true",
                       help="fail with the 400 'QueuePool limit reached' of an overloaded MLflow server, not 503")
    proxy.add_argument("--tls", action="store_true", help="serve HTTPS with a throwaway certificate")
    relay = sub.add_parser("cut-relay", help="a TCP relay that drops each connection after some bytes")
    relay.add_argument("--upstream-port", type=int, required=True)
    relay.add_argument("--after", type=int, default=65536, help="bytes from server to client before the cut")
    args = parser.parse_args()

    if args.what == "tracking-proxy":
        certificate = self_signed_certificate(Path(tempfile.mkdtemp())) if args.tls else None
        server = FaultyProxy(args.upstream, fail=_pairs(args.fail, int), delay=_pairs(args.delay, float),
                             lose=_pairs(args.lose, int), tls=certificate,
                             failure=POOL_EXHAUSTED if args.overloaded else (503, b""))
        print(f"MLFLOW_TRACKING_URI={server.url}")
        if certificate is not None:
            print(f"MLFLOW_TRACKING_SERVER_CERT_PATH={certificate[0]}")
    else:
        server = CuttingRelay(args.upstream_port, args.after)
        print(f"relay on 127.0.0.1:{server.port} (cuts after {args.after} bytes)")
    sys.stdout.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        if args.what == "tracking-proxy":
            print("calls seen:", server.seen, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
