"""A steady, bounded request stream, run inside the client namespace by the tier report.

``python -m pktlb.reports.tier.stream --url URL --rate R --duration D``: a new TCP connection per
request (so each request is a new 5-tuple the router hashes afresh), one request every 1/R s for
D s, each with a 1 s timeout; one JSON line per request on stdout: start time (wall clock),
latency, ok, error.  Bounded: at most R x D requests, none longer than the timeout.

``--hold N``: instead, open N keep-alive connections, make one request on each, print
``ready PORT,PORT,...`` (their source ports), wait for a line on stdin, then make a second request on each and print the results:
whether connections that the router moved to another LB survived.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time

TIMEOUT = 1.0


def one(host: str, path: str) -> dict[str, object]:
    started = time.time()
    conn = http.client.HTTPConnection(host, 80, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        body = conn.getresponse().read()
        ok, error = True, ""
        backend = json.loads(body).get("backend", "") if body.startswith(b"{") else ""
    except (OSError, http.client.HTTPException, ValueError) as exc:
        ok, error, backend = False, type(exc).__name__, ""
    finally:
        conn.close()
    return {"t": round(started, 4), "latency": round(time.time() - started, 4), "ok": ok, "error": error,
            "backend": backend}


def stream(host: str, path: str, rate: float, duration: float) -> None:
    lock = threading.Lock()
    threads = []

    def go() -> None:
        row = one(host, path)
        with lock:
            print(json.dumps(row), flush=True)

    start = time.monotonic()
    for i in range(int(rate * duration)):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t = threading.Thread(target=go)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(TIMEOUT + 1)


def hold(host: str, path: str, count: int) -> None:
    conns = []
    for _ in range(count):
        conn = http.client.HTTPConnection(host, 80, timeout=3)
        conn.request("GET", path)
        body = conn.getresponse().read()
        conns.append((conn, conn.sock.getsockname()[1], json.loads(body)["backend"]))
    print("ready " + ",".join(str(port) for _, port, _ in conns), flush=True)
    sys.stdin.readline()
    results = []
    for conn, port, backend in conns:
        try:
            conn.request("GET", path)
            again = json.loads(conn.getresponse().read())["backend"]
            results.append({"port": port, "ok": again == backend, "backend": backend, "again": again})
        except (OSError, http.client.HTTPException, ValueError) as exc:
            results.append({"port": port, "ok": False, "backend": backend, "error": type(exc).__name__})
        conn.close()
    print(json.dumps(results), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--hold", type=int, default=0)
    a = ap.parse_args()
    if not 0 < a.rate <= 500 or not 0 < a.duration <= 60 or not 0 <= a.hold <= 500:
        ap.error("rate 0-500/s, duration 0-60 s, hold 0-500 connections")
    if a.hold:
        hold(a.host, a.path, a.hold)
    else:
        stream(a.host, a.path, a.rate, a.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
