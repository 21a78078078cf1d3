"""HTTP clients the l7 lab tests run inside the client namespace (``python -m tests.lab.l7_clients ...``).

Standard library only; every client is bounded in requests, connections and seconds, and prints
one JSON document on stdout (progress lines start with ``#``):

* ``keepalive URL N [HOST]``: N requests on one kept-alive connection; per request the backend that answered.
* ``steady URL THREADS COUNT``: THREADS kept-alive clients (reconnecting after an error) sending
  COUNT requests each; prints ``# half`` once half of all requests are answered, then per thread the
  list of outcomes in order ("be1", ... or "error: ..."), so a test can kill a backend mid-run.
* ``slow URL CONNECTIONS SECONDS``: slowloris: CONNECTIONS connections each sending a request head
  one byte a second, never finishing it; per connection how it ended (the proxy's answer or close),
  or "open" if it was still open after SECONDS.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
import time
from urllib.parse import urlsplit


def _target(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or 80, parts.path or "/"


def keepalive(url: str, n: int, host: str | None = None) -> dict[str, object]:
    address, port, path = _target(url)
    conn = http.client.HTTPConnection(address, port, timeout=5)
    answers, sockets = [], set()
    for _ in range(n):
        conn.request("GET", path, headers={"Host": host} if host else {})
        response = conn.getresponse()
        body = response.read()
        sockets.add(conn.sock.getsockname() if conn.sock else None)
        answers.append({"status": response.status, "backend": response.getheader("X-Backend"),
                        "json": json.loads(body) if response.getheader("Content-Type") == "application/json" else None})
    conn.close()
    return {"answers": answers, "client_connections": len(sockets)}


def steady(url: str, threads: int, count: int) -> dict[str, object]:
    address, port, path = _target(url)
    outcomes: list[list[str]] = [[] for _ in range(threads)]
    answered = [0]
    lock = threading.Lock()
    half = threads * count // 2

    def run(index: int) -> None:
        conn = None
        for _ in range(count):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(address, port, timeout=10)
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                outcome = response.getheader("X-Backend") or f"status {response.status}"
                if response.status != 200:
                    outcome = f"error: status {response.status}"
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                outcome = f"error: {type(exc).__name__}"
                if conn is not None:
                    conn.close()
                conn = None
            outcomes[index].append(outcome)
            with lock:
                answered[0] += 1
                if answered[0] == half:
                    print("# half", flush=True)
        if conn is not None:
            conn.close()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    return {"outcomes": outcomes}


def slow(url: str, connections: int, seconds: float) -> dict[str, object]:
    address, port, _ = _target(url)
    head = b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 1000
    socks = []
    for _ in range(connections):
        sock = socket.create_connection((address, port), timeout=5)
        sock.setblocking(False)
        socks.append(sock)
    ended: dict[int, str] = {}
    deadline = time.monotonic() + seconds
    sent = 0
    while len(ended) < len(socks) and time.monotonic() < deadline and sent < len(head):
        for i, sock in enumerate(socks):
            if i in ended:
                continue
            try:
                data = sock.recv(4096)
                ended[i] = data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "closed"
                continue
            except BlockingIOError:
                pass
            except OSError as exc:
                ended[i] = type(exc).__name__
                continue
            try:
                sock.send(head[sent:sent + 1])
            except OSError as exc:
                ended[i] = type(exc).__name__
        sent += 1
        time.sleep(1.0)  # the point of a slowloris client: one byte a second
    for sock in socks:
        sock.close()
    return {"ended": [ended.get(i, "open") for i in range(len(socks))], "bytes_sent": sent}


def main(argv: list[str]) -> int:
    kind, url, *rest = argv
    if kind == "keepalive":
        result = keepalive(url, int(rest[0]), rest[1] if len(rest) > 1 else None)
    elif kind == "steady":
        result = steady(url, int(rest[0]), int(rest[1]))
    elif kind == "slow":
        result = slow(url, int(rest[0]), float(rest[1]))
    else:
        print(f"unknown client {kind!r}", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
