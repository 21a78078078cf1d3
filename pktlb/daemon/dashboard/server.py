"""The dashboard's HTTP side: the standard library's ThreadingHTTPServer, read-only.

GET  /              the live page (static/index.html, with dashboard.js and dashboard.css)
GET  /metrics       Prometheus text format (metrics.StatsCollector)
GET  /api/state     what the page draws, as JSON (the latest poll of every source, rates, changes)
GET  /api/history   the chart's last minutes per source
GET  /events        server-sent events: the /api/state JSON after every poll (at most MAX_STREAMS at once)
Nothing changes a backend: every other method is refused.  Requests whose Host is neither the listen
address nor ``localhost`` are refused too, so a web page elsewhere cannot read the stats through a
DNS name rebound to this address.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from pktlb.daemon.dashboard.metrics import make_registry, render_metrics
from pktlb.daemon.dashboard.poller import DashboardState

log = logging.getLogger("pktlb.dashboard.http")
STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
                "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
                "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8")}
MAX_STREAMS = 16  # concurrent /events streams (each holds a thread)
STREAM_SECONDS = 600.0  # a stream ends after this long; EventSource reconnects by itself
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"}


def load_static() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once from the package data."""
    folder = resources.files("pktlb.daemon.dashboard") / "static"
    return {path: ((folder / name).read_bytes(), ctype) for path, (name, ctype) in STATIC_FILES.items()}


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 32

    def __init__(self, host: str, port: int, state: DashboardState) -> None:
        self.address_family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        self.state = state
        self.registry = make_registry(state)
        self.static = load_static()
        self.streams = threading.BoundedSemaphore(MAX_STREAMS)
        self.stopping = threading.Event()
        super().__init__((host, port), DashboardHandler)

    @property
    def host(self) -> str:
        return str(self.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser that closes its connection is no error worth a traceback; anything else is logged."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            log.debug("request from %s ended early", client_address, exc_info=True)
        else:
            log.exception("request from %s failed", client_address)

    def shutdown(self) -> None:
        self.stopping.set()
        super().shutdown()


class DashboardHandler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"
    server_version = "pktlb-dashboard"
    timeout = 30  # seconds a client may take to send its request

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if not self._host_allowed():
            self._send(HTTPStatus.MISDIRECTED_REQUEST, b"unexpected Host header\n", "text/plain; charset=utf-8")
            return
        path = self.path.split("?", 1)[0]
        if path in self.server.static:
            body, ctype = self.server.static[path]
            self._send(HTTPStatus.OK, body, ctype)
        elif path == "/metrics":
            self._send(HTTPStatus.OK, render_metrics(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/api/state":
            self._send_json(self.server.state.view())
        elif path == "/api/history":
            self._send_json(self.server.state.history())
        elif path == "/events":
            self._stream()
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"", "text/plain; charset=utf-8")

    def _refuse(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"the dashboard is read-only: use `pktlb backend` to change backends\n",
                   "text/plain; charset=utf-8", extra={"Allow": "GET"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

    def _host_allowed(self) -> bool:
        host = (self.headers.get("Host") or "").strip()
        name = host[1:].split("]", 1)[0] if host.startswith("[") else host.rsplit(":", 1)[0] if host.count(":") == 1 \
            else host
        if name == "localhost":
            return True
        try:
            return ipaddress.ip_address(name) == ipaddress.ip_address(self.server.host)
        except ValueError:
            return False

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in {**HEADERS, **(extra or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, data: Any) -> None:
        self._send(HTTPStatus.OK, json.dumps(data, default=str).encode(), "application/json")

    def _stream(self) -> None:
        """Server-sent events: one ``data:`` line of state JSON after each poll, until the client leaves."""
        if not self.server.streams.acquire(blocking=False):
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"too many open event streams\n", "text/plain; charset=utf-8",
                       extra={"Retry-After": "5"})
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            for key, value in HEADERS.items():
                self.send_header(key, value)
            self.end_headers()
            self.close_connection = True
            state, seq = self.server.state, -1
            deadline = time.monotonic() + STREAM_SECONDS
            while time.monotonic() < deadline and not self.server.stopping.is_set():
                newer = state.wait_newer(seq, timeout=max(state.interval * 5, 5.0))
                if newer == seq:
                    self.wfile.write(b": keep-alive\n\n")  # a comment line: lets the client see we are alive
                else:
                    seq = newer
                    self.wfile.write(b"data: " + json.dumps(state.view(), default=str).encode() + b"\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the page was closed
        finally:
            self.server.streams.release()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)
