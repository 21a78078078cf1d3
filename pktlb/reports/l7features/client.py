"""The client side of ``pktlb l7-report``: bounded HTTP(S) workloads run inside the lab's client namespace.

    python -m pktlb.reports.l7features.client tls --host VIP --port 443 --cafile CA --pattern resumed --requests 300
    python -m pktlb.reports.l7features.client sessions --url http://VIP/ --addresses A1,B1,A2,B2 [--cookie]
    python -m pktlb.reports.l7features.client repeat --url http://VIP/cacheable/ --urls 20 --requests 1000
    python -m pktlb.reports.l7features.client load --url http://VIP/ --requests 500 [--source ADDR] [--keepalive]
    python -m pktlb.reports.l7features.client cookies --url http://VIP/ --cookies SRVID=be1,SRVID=be2

Each prints one JSON object.  Standard library only (``ssl``, ``http.client``), so what is measured is
the balancer, not a client library; every run is bounded in requests and every socket has a timeout.

TLS patterns: ``new`` (a new TCP connection and a full handshake per request), ``resumed`` (a new
connection per request offering the session of the previous one: an abbreviated handshake),
``keepalive`` (one connection per worker, the handshake once), ``plain`` / ``plain-keepalive`` (no
TLS at all, the baseline).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import ssl
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

TIMEOUT = 10.0
TLS_PATTERNS = ("new", "resumed", "keepalive", "plain", "plain-keepalive")


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)
    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "mean": round(sum(ordered) / len(ordered), 3)}


class BodyResponse(http.client.HTTPResponse):
    """A response whose body ``get`` has already read (``body``)."""

    body: bytes = b""


class Conn:
    """One client connection (TLS or not) that sends GETs and reads whole answers."""

    def __init__(self, host: str, port: int, *, context: ssl.SSLContext | None = None, server_name: str | None = None,
                 session: ssl.SSLSession | None = None, source: str | None = None) -> None:
        raw = socket.create_connection((host, port), timeout=TIMEOUT, source_address=(source, 0) if source else None)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = raw
        if context is not None:
            self.sock = context.wrap_socket(raw, server_hostname=server_name or host, session=session)

    def get(self, host: str, path: str, headers: dict[str, str] | None = None,
            close: bool = False) -> BodyResponse:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        if close:
            lines.append("Connection: close")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = BodyResponse(self.sock)
        response.begin()
        response.body = response.read()
        return response

    @property
    def session(self) -> ssl.SSLSession | None:
        return getattr(self.sock, "session", None)

    @property
    def reused(self) -> bool:
        return bool(getattr(self.sock, "session_reused", False))

    def close(self) -> None:
        self.sock.close()


def run_workers(count: int, requests: int, work: Any) -> tuple[list[float], int, int, float]:
    """``work(share, latencies)`` in ``count`` threads sharing ``requests``; (latencies ms, ok, errors, seconds)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def worker(share: int) -> None:
        mine: list[float] = []
        failed = work(share, mine)
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    shares = [requests // count + (1 if i < requests % count else 0) for i in range(count)]
    threads = [threading.Thread(target=worker, args=(s,)) for s in shares if s]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, len(latencies), errors[0], time.perf_counter() - started


def tls_workload(args: argparse.Namespace) -> dict[str, Any]:
    tls = not args.pattern.startswith("plain")
    context = None
    if tls:
        context = ssl.create_default_context(cafile=args.cafile)
        if args.tls_version:
            version = ssl.TLSVersion.TLSv1_3 if args.tls_version == "1.3" else ssl.TLSVersion.TLSv1_2
            context.minimum_version = context.maximum_version = version
    keepalive = args.pattern in ("keepalive", "plain-keepalive")
    resumed = [0]

    def work(share: int, latencies: list[float]) -> int:
        failed = 0
        session = None
        conn: Conn | None = None
        for _ in range(share):
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = Conn(args.host, args.port, context=context, server_name=args.server_name,
                                session=session if args.pattern == "resumed" else None)
                    resumed[0] += conn.reused
                response = conn.get(args.host, args.path, close=not keepalive)
                ok = response.status == 200
                if args.pattern == "resumed":
                    session = conn.session  # after the answer: TLS 1.3 tickets come after the handshake
                if not keepalive:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                ok = False
                if conn is not None:
                    conn.close()
                conn = None
            if ok:
                latencies.append((time.perf_counter() - t0) * 1000)
            else:
                failed += 1
        if conn is not None:
            conn.close()
        return failed

    latencies, ok, errors, seconds = run_workers(args.concurrency, args.requests, work)
    return {"pattern": args.pattern, "requests": ok, "errors": errors, "seconds": round(seconds, 3),
            "requests_per_s": round(ok / seconds, 1) if seconds else None, "resumed_handshakes": resumed[0],
            "latency_ms": percentiles(latencies)}


def backend_of(response: BodyResponse) -> str | None:
    name = response.getheader("X-Backend")
    if name:
        return name
    try:
        return json.loads(response.body).get("backend")
    except (ValueError, AttributeError):
        return None


def sessions(args: argparse.Namespace) -> dict[str, Any]:
    """Sessions of two requests: the first from address A, the second from address B (the client moved)."""
    url = urlsplit(args.url)
    host, port = url.hostname or "", url.port or 80
    addresses = args.addresses.split(",")
    rows = []
    for a, b in zip(addresses[0::2], addresses[1::2], strict=False):
        cookie = None
        seen = []
        for source in (a, b):
            conn = Conn(host, port, source=source)
            try:
                headers: dict[str, str] | None = {"Cookie": cookie} if (cookie and args.cookie) else None
                response = conn.get(host, url.path or "/", headers, close=True)
                seen.append(backend_of(response) if response.status == 200 else f"status {response.status}")
                set_cookie = response.getheader("Set-Cookie")
                if set_cookie:
                    cookie = set_cookie.split(";", 1)[0]
            except (OSError, http.client.HTTPException) as exc:
                seen.append(f"error {exc.__class__.__name__}")
            finally:
                conn.close()
        rows.append({"first_address": a, "second_address": b, "first_backend": seen[0], "second_backend": seen[1],
                     "cookie": cookie})
    moved = sum(1 for r in rows if r["first_backend"] != r["second_backend"])
    return {"sessions": len(rows), "moved": moved, "kept": len(rows) - moved, "rows": rows}


def cookies(args: argparse.Namespace) -> dict[str, Any]:
    """One GET per cookie (each on a new connection): which backend answered, or what went wrong."""
    url = urlsplit(args.url)
    host, port = url.hostname or "", url.port or 80
    rows = []
    for cookie in args.cookies.split(","):
        conn = Conn(host, port)
        try:
            response = conn.get(host, url.path or "/", {"Cookie": cookie}, close=True)
            seen = backend_of(response) if response.status == 200 else f"status {response.status}"
            set_cookie = response.getheader("Set-Cookie")
        except (OSError, http.client.HTTPException) as exc:
            seen, set_cookie = f"error {exc.__class__.__name__}", None
        finally:
            conn.close()
        rows.append({"cookie": cookie, "backend": seen, "set_cookie": set_cookie})
    return {"rows": rows}


def repeat(args: argparse.Namespace) -> dict[str, Any]:
    """``--requests`` GETs cycling over ``--urls`` distinct URLs on one kept-alive connection."""
    url = urlsplit(args.url)
    host, port = url.hostname or "", url.port or 80
    hit_ms: list[float] = []
    miss_ms: list[float] = []
    errors = 0
    conn: Conn | None = None
    for i in range(args.requests):
        path = f"{url.path.rstrip('/')}/u{i % args.urls}?max_age={args.max_age}&n={args.size}"
        t0 = time.perf_counter()
        try:
            conn = conn or Conn(host, port)
            response = conn.get(host, path)
        except (OSError, http.client.HTTPException):
            errors += 1
            if conn is not None:
                conn.close()
            conn = None
            continue
        elapsed = (time.perf_counter() - t0) * 1000
        if response.status != 200:
            errors += 1
        hit = response.getheader("Pktlb-Cache") == "hit" or response.getheader("Age") is not None  # HAProxy: Age
        (hit_ms if hit else miss_ms).append(elapsed)
    if conn is not None:
        conn.close()
    return {"requests": args.requests, "urls": args.urls, "errors": errors, "hits_seen": len(hit_ms),
            "hit_latency_ms": percentiles(hit_ms), "miss_latency_ms": percentiles(miss_ms)}


def load(args: argparse.Namespace) -> dict[str, Any]:
    """``--requests`` GETs (kept alive or one connection each) from ``--source``: answers by status."""
    url = urlsplit(args.url)
    host, port = url.hostname or "", url.port or 80
    statuses: dict[str, int] = {}
    lock = threading.Lock()

    def work(share: int, latencies: list[float]) -> int:
        conn: Conn | None = None
        failed = 0
        for _ in range(share):
            t0 = time.perf_counter()
            try:
                conn = conn or Conn(host, port, source=args.source)
                response = conn.get(host, url.path or "/", close=not args.keepalive)
                key = str(response.status)
                if not args.keepalive or response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                key = f"error {exc.__class__.__name__}"
                failed += 1
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                statuses[key] = statuses.get(key, 0) + 1
            if key == "200":
                latencies.append((time.perf_counter() - t0) * 1000)
            if args.interval:
                time.sleep(args.interval)  # a paced client: the workload, not a wait for an event
        if conn is not None:
            conn.close()
        return failed

    latencies, ok, errors, seconds = run_workers(args.concurrency, args.requests, work)
    return {"requests": args.requests, "statuses": dict(sorted(statuses.items())), "seconds": round(seconds, 3),
            "ok_latency_ms": percentiles(latencies)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tls")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=443)
    p.add_argument("--server-name")
    p.add_argument("--cafile")
    p.add_argument("--tls-version", choices=("1.2", "1.3"))
    p.add_argument("--pattern", choices=TLS_PATTERNS, required=True)
    p.add_argument("--path", default="/")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=4)
    p = sub.add_parser("sessions")
    p.add_argument("--url", required=True)
    p.add_argument("--addresses", required=True, help="A1,B1,A2,B2,...: each session moves from Ai to Bi")
    p.add_argument("--cookie", action="store_true", help="send back the cookie the first answer set")
    p = sub.add_parser("repeat")
    p.add_argument("--url", required=True)
    p.add_argument("--urls", type=int, default=20)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--max-age", type=int, default=60)
    p.add_argument("--size", type=int, default=2000)
    p = sub.add_parser("load")
    p.add_argument("--url", required=True)
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--source")
    p.add_argument("--keepalive", action="store_true")
    p.add_argument("--interval", type=float, default=0.0, help="seconds between a worker's requests (a paced client)")
    p = sub.add_parser("cookies")
    p.add_argument("--url", required=True)
    p.add_argument("--cookies", required=True, help="NAME=VALUE,NAME=VALUE,...: one request with each")
    args = parser.parse_args(argv)
    if getattr(args, "requests", 1) > 100_000:
        parser.error("--requests: at most 100000 (every run is bounded)")
    commands = {"tls": tls_workload, "sessions": sessions, "repeat": repeat, "load": load, "cookies": cookies}
    result = commands[args.command](args)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
