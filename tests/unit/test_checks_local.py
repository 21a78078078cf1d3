"""TCP and HTTP checks against servers this test starts on 127.0.0.1 (no root, no namespaces)."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pktlb.core.health import L4CON, L4OK, L4TOUT, L7OK, L7RSP, L7STS, L7TOUT, CheckResult, CheckTarget
from pktlb.daemon.health.base import ScheduledChecker
from pktlb.daemon.health.http import judge_http
from pktlb.daemon.health.registry import REGISTRY, make_checker

TIMEOUT = 0.4


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/garbage":
            self.wfile.write(b"SSH-2.0-OpenSSH_9.2\r\n")
            return
        status, body = {"/ok": (200, b"healthy and well"), "/sick": (503, b"overloaded")}.get(
            self.path, (404, b"no such page"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, then released): connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_listener() -> Iterator[tuple[int, socket.socket]]:
    """A listener that never accepts: the kernel still completes handshakes while its queue has room."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield listener.getsockname()[1], listener
    finally:
        listener.close()


def target(check: str, port: int, **kw: object) -> CheckTarget:
    return CheckTarget("web", "be1", check, "127.0.0.1", port, interval=10.0, timeout=TIMEOUT, **kw)


def run_one(check: str, port: int, **kw: object) -> tuple[CheckResult, float]:
    """Run one attempt of a check through a small select loop; the result and how long it took."""
    results: list[CheckResult] = []
    checker: ScheduledChecker = make_checker(check, lambda s, b, r: results.append(r))
    start = time.monotonic()
    try:
        checker.add_target(target(check, port, **kw), start, count=1)
        while not checker.idle:
            wait = max(0.0, checker.due() - time.monotonic())
            ready, _, _ = select.select([checker.fileno()], [], [], wait)
            now = time.monotonic()
            if ready:
                checker.on_readable(now)
            checker.run_due(now)
            assert now - start < 5 * TIMEOUT, "the check is not bounded by its timeout"
    finally:
        checker.close()
    assert len(results) == 1
    return results[0], time.monotonic() - start


def test_registry_knows_the_config_names() -> None:
    make_checker("tcp", lambda *a: None).close()
    assert {"tcp", "http", "icmp"} <= set(REGISTRY)
    with pytest.raises(ValueError, match="unknown check type 'smtp'"):
        make_checker("smtp", lambda *a: None)


def test_tcp_ok_with_rtt(http_port: int) -> None:
    result, took = run_one("tcp", http_port)
    assert result.status == L4OK and result.ok and 0 < result.rtt < TIMEOUT and took < TIMEOUT


def test_tcp_refused(closed_port: int) -> None:
    result, took = run_one("tcp", closed_port)
    assert (result.status, result.reason) == (L4CON, "connection refused") and took < TIMEOUT


def test_tcp_timeout_when_the_accept_queue_is_full() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # room for one queued connection, which the filler takes
        with socket.create_connection(listener.getsockname(), timeout=2):
            result, took = run_one("tcp", listener.getsockname()[1])
    assert result.status == L4TOUT and "no handshake within 0.4 s" in result.reason
    assert TIMEOUT <= took < TIMEOUT + 1.0  # upper bound loose: the machine may be busy


def test_http_ok_with_status_and_body(http_port: int) -> None:
    result, _ = run_one("http", http_port, http_path="/ok", http_status=200, http_body="healthy")
    assert result.status == L7OK and result.reason == "status 200" and result.rtt > 0


def test_http_bad_status(http_port: int) -> None:
    result, _ = run_one("http", http_port, http_path="/sick", http_status=200)
    assert (result.status, result.reason) == (L7STS, "status 503, expected 200") and not result.ok


def test_http_body_mismatch(http_port: int) -> None:
    result, _ = run_one("http", http_port, http_path="/ok", http_status=200, http_body="ready")
    assert result.status == L7RSP and "does not contain 'ready'" in result.reason


def test_http_answer_that_is_not_http(http_port: int) -> None:
    result, _ = run_one("http", http_port, http_path="/garbage")
    assert result.status == L7RSP and "malformed status line" in result.reason


def test_http_refused(closed_port: int) -> None:
    result, _ = run_one("http", closed_port)
    assert result.status == L4CON


def test_http_timeout_when_the_server_never_answers(silent_listener: tuple[int, socket.socket]) -> None:
    port, _ = silent_listener
    # The handshake succeeds (the kernel answers for the hung application), so a TCP check passes...
    assert run_one("tcp", port)[0].status == L4OK
    # ...while the HTTP check notices that nobody answers.
    result, took = run_one("http", port)
    assert result.status == L7TOUT and TIMEOUT <= took < TIMEOUT + 1.0  # upper bound loose: the machine may be busy


@pytest.mark.parametrize(("raw", "status", "body", "expected"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, "", L7OK),
    (b"HTTP/1.0 200 OK\r\n\r\nall good", 200, "good", L7OK),
    (b"HTTP/1.0 200 OK\r\n\r\nall good", 200, "bad", L7RSP),
    (b"HTTP/1.0 200 OK\r\nX-Note: good\r\n\r\n", 200, "good", L7RSP),  # headers are not the body
    (b"HTTP/1.1 301 Moved\r\n\r\n", 200, "", L7STS),
    (b"HTTP/1.1 2OO OK\r\n\r\n", 200, "", L7RSP),
    (b"", 200, "", L7RSP),
    (b"\x00\xff\r\n", 200, "", L7RSP),
])
def test_judge_http(raw: bytes, status: int, body: str, expected: str) -> None:
    assert judge_http(raw, status, body)[0] == expected
