"""The lab backends' HTTP service (Python's standard-library ThreadingHTTPServer).

Run in each backend namespace as ``python -m pktlb.lab.httpd --name be1 --port 80``.

* ``GET /`` -> JSON ``{"backend": name, "client": addr, "client_port": port, "server": "addr:port"}``:
  the client address and port this backend saw (the LB's SNAT address in fullnat, the proxy's in l7,
  the client's own otherwise) and the local address the connection reached (the VIP in dsr and tunnel
  modes).  A request that came through a proxy (it carries X-Forwarded-For, Forwarded or Via) also gets
  ``"host"``, ``"x_forwarded_for"``, ``"x_forwarded_proto"``, ``"forwarded"`` and ``"via"``: what the
  proxy says about the real client (null for a header it did not send).  Through an L4 mode there is
  no such header: the backend sees the client (or the SNAT address) as its peer, and nothing more.
* Every answer carries ``X-Backend: <name>``, so a student (or a test) sees who answered any path
  (``curl -si http://VIP/static/x`` in the l7 lab: a 404, but from the static route's backend).
* ``GET /health`` -> ``200 ok``.
* ``GET /cacheable/ANY?max_age=S&n=N`` -> JSON ``{"backend", "path", "served": K}`` padded to N bytes (default
  200), with ``Cache-Control: public, max-age=S`` (default 60): what a cache in front may keep and answer
  for S seconds.  ``served`` counts the requests this backend answered on that path, so a cached
  answer shows the count it had when it was stored.
* ``GET /bytes?n=N`` (or ``/download/N``) -> N bytes (at most 1 GiB) of deterministic content:
  byte ``k`` of the body is ``k % 251``, so a download can be checked with ``expected_sha256(N)``
  or ``python3 -c 'import sys; n=int(sys.argv[1]); sys.stdout.buffer.write(bytes(k % 251 for k in range(n)))' N | sha256sum``.
* ``POST /upload`` (or PUT) with a Content-Length body -> JSON ``{"backend", "bytes", "sha256"}`` of what
  arrived: an upload carries full-size packets from the client toward the backend, which is what
  exercises the tunnel's fragmentation-needed / path MTU discovery.
HTTP/1.1 keep-alive; one thread per connection; idle connections time out after 30 s.
``--tls-cert PEM --tls-key PEM`` serves HTTPS instead (the backend terminates TLS itself: through an L4
mode the LB only ever carries ciphertext); the handshake runs in the connection's thread.
``--service-time MS`` and ``--max-concurrent N`` give the backend a capacity (``pktlb.lab.capacity``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from pktlb.lab.capacity import Capacity, CapacityMixin

MAX_DOWNLOAD = 1 << 30
PATTERN_PERIOD = 251  # prime: a chunk that is off by some bytes shows up as a different checksum
# Request headers GET / echoes (JSON key, header name) when a proxy forwarded the request (PROXY_HEADERS).
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "Via")
ECHOED_HEADERS = (("host", "Host"), ("x_forwarded_for", "X-Forwarded-For"), ("x_forwarded_proto", "X-Forwarded-Proto"),
                  ("forwarded", "Forwarded"), ("via", "Via"))
_SERVED: dict[str, int] = {}  # /cacheable/ paths -> requests answered (this process)
_SERVED_LOCK = threading.Lock()
_BLOCK = bytes(k % PATTERN_PERIOD for k in range(PATTERN_PERIOD * 256))  # 64256 bytes, a whole number of periods


def pattern_bytes(n: int) -> bytes:
    """The first n bytes of the download body (for tests; the server streams it)."""
    whole, rest = divmod(n, len(_BLOCK))
    return _BLOCK * whole + _BLOCK[:rest]


def expected_sha256(n: int) -> str:
    digest = hashlib.sha256()
    whole, rest = divmod(n, len(_BLOCK))
    for _ in range(whole):
        digest.update(_BLOCK)
    digest.update(_BLOCK[:rest])
    return digest.hexdigest()


class BackendHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms) on kept-alive connections.
    disable_nagle_algorithm = True
    server_version = "pktlb-lab-httpd/1"
    timeout = 30  # seconds an idle keep-alive connection may stay open
    backend_name = "backend"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # one line per request would flood the log during benchmarks

    def end_headers(self) -> None:
        self.send_header("X-Backend", self.backend_name)
        super().end_headers()

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if url.path == "/":
            local = self.connection.getsockname()
            body = {"backend": self.backend_name, "client": self.client_address[0],
                    "client_port": self.client_address[1], "server": f"{local[0]}:{local[1]}"}
            if any(name in self.headers for name in PROXY_HEADERS):
                body.update({key: self.headers.get(name) for key, name in ECHOED_HEADERS})
            self._send(200, (json.dumps(body) + "\n").encode(), "application/json")
        elif url.path == "/health":
            self._send(200, b"ok\n", "text/plain")
        elif url.path.startswith("/cacheable/"):
            self._cacheable(url.path, parse_qs(url.query))
        elif url.path == "/bytes" or url.path.startswith("/download/"):
            raw = parse_qs(url.query).get("n", ["0"])[0] if url.path == "/bytes" else url.path.rsplit("/", 1)[1]
            if not raw.isdigit() or int(raw) > MAX_DOWNLOAD:
                self._send(400, f"n must be an integer from 0 to {MAX_DOWNLOAD}\n".encode(), "text/plain")
                return
            self._stream(int(raw))
        else:
            self._send(404, b"not found\n", "text/plain")

    def _cacheable(self, path: str, query: dict[str, list[str]]) -> None:
        max_age, size = query.get("max_age", ["60"])[0], query.get("n", ["200"])[0]
        if not max_age.isdigit() or not size.isdigit() or int(size) > MAX_DOWNLOAD:
            self._send(400, b"max_age and n must be integers\n", "text/plain")
            return
        with _SERVED_LOCK:
            _SERVED[path] = served = _SERVED.get(path, 0) + 1
        body = json.dumps({"backend": self.backend_name, "path": path, "served": served}).encode()
        body += b" " * max(0, int(size) - len(body) - 1) + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", f"public, max-age={max_age}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        if urlsplit(self.path).path != "/upload":
            self._send(404, b"not found\n", "text/plain")
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_DOWNLOAD:
            self._send(411, f"Content-Length from 0 to {MAX_DOWNLOAD} required\n".encode(), "text/plain")
            return
        digest, left = hashlib.sha256(), int(length)
        while left > 0:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        body = {"backend": self.backend_name, "bytes": int(length) - left, "sha256": digest.hexdigest()}
        self._send(200, (json.dumps(body) + "\n").encode(), "application/json")

    do_PUT = do_POST  # noqa: N815 - curl -T sends PUT

    def _stream(self, n: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        if self.command == "HEAD":
            return
        view = memoryview(_BLOCK)
        while n > 0:
            chunk = min(n, len(_BLOCK))
            self.wfile.write(view[:chunk])
            n -= chunk


class BackendServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True


class TlsBackendServer(BackendServer):
    """HTTPS: each accepted connection does its TLS handshake in its own thread (a slow client holds
    only its thread), then is served like a plain one."""

    context: ssl.SSLContext
    handshake_timeout = 10.0

    # override: typeshed's request is a socket or (bytes, socket); a TCP server only ever gets a socket
    def finish_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        request.settimeout(self.handshake_timeout)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # a failed handshake: nothing to serve
        try:
            super().finish_request(tls, client_address)  # the handler serves the TLS socket
        finally:
            tls.close()


def make_server(name: str, host: str, port: int, capacity: Capacity | None = None, *,
                tls_cert: str | None = None, tls_key: str | None = None) -> BackendServer:
    bases: tuple[type, ...] = (CapacityMixin, BackendHandler) if capacity else (BackendHandler,)
    handler = type("Handler", bases, {"backend_name": name, "capacity": capacity})
    if tls_cert is None:
        return BackendServer((host, port), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_cert, tls_key)
    context.set_alpn_protocols(["http/1.1"])
    server = TlsBackendServer((host, port), handler)
    server.context = context
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="backend name reported in the JSON answer")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--host", default="0.0.0.0", help="listen address (0.0.0.0: also the VIP on lo)")
    parser.add_argument("--ready-file", help="created once the server listens")
    parser.add_argument("--service-time", type=float, default=0.0, metavar="MS",
                        help="milliseconds each request holds a slot before it is answered (default 0)")
    parser.add_argument("--max-concurrent", type=int, default=0, metavar="N",
                        help="requests served at once; the others queue (default 0: unlimited)")
    parser.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (needs --tls-key)")
    parser.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    args = parser.parse_args(argv)
    if not args.service_time >= 0 or args.max_concurrent < 0:
        parser.error("--service-time and --max-concurrent must be >= 0")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    capacity = Capacity(args.max_concurrent, args.service_time / 1000) \
        if args.service_time or args.max_concurrent else None
    try:
        server = make_server(args.name, args.host, args.port, capacity, tls_cert=args.tls_cert, tls_key=args.tls_key)
    except (ssl.SSLError, OSError) as exc:
        parser.error(f"cannot serve on {args.host}:{args.port}: {exc}")
    # SIGTERM -> shut the server down from another thread (serve_forever must not call it itself).
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    if args.ready_file:
        Path(args.ready_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.ready_file).write_text(f"{os.getpid()}\n")
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
