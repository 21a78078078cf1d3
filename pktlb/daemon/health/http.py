"""The L7 health check: ``GET path`` over HTTP/1.0 after the TCP handshake, judged by status and body.

The answer is read up to ``HTTP_RESPONSE_LIMIT`` bytes; it is judged as soon as the status line
(or, with an expected body, the whole body as Content-Length announces it) has arrived.
"""

from __future__ import annotations

import selectors

from pktlb.core.health import L4TOUT, L7OK, L7RSP, L7STS, L7TOUT, CheckResult
from pktlb.daemon.health.tcp import ConnectAttempt, TcpChecker

HTTP_RESPONSE_LIMIT = 64 * 1024  # read at most this much of an answer


def judge_http(raw: bytes, expect_status: int, expect_body: str) -> tuple[str, str]:
    """(status code, reason) for an HTTP answer; ``raw`` is what was read (maybe cut at the limit)."""
    line = raw.partition(b"\r\n")[0]
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit() or len(parts[1]) != 3:
        shown = line[:40].decode("latin-1") if line else "nothing"
        return (L7RSP, f"malformed status line: {shown!r}") if line else (L7RSP, "connection closed without an answer")
    code = int(parts[1])
    if code != expect_status:
        return L7STS, f"status {code}, expected {expect_status}"
    if expect_body:
        _, sep, body = raw.partition(b"\r\n\r\n")
        if not sep or expect_body.encode() not in body:
            return L7RSP, f"status {code} but the body does not contain {expect_body!r}"
    return L7OK, f"status {code}"


class HttpChecker(TcpChecker):
    """L7 check: ``GET path`` over HTTP/1.0, expecting a status code and optionally a body substring."""

    name = "http"

    def _connected(self, key: int, attempt: ConnectAttempt, now: float) -> None:
        target = attempt.target
        attempt.connected = True
        attempt.answer = bytearray()
        attempt.request = (f"GET {target.http_path} HTTP/1.0\r\nHost: {target.address}:{target.port}\r\n"
                           f"User-Agent: pktlb-health\r\nConnection: close\r\n\r\n").encode()
        if attempt.sock in self.selector.get_map():
            self.selector.modify(attempt.sock, selectors.EVENT_WRITE, key)
        else:
            self.selector.register(attempt.sock, selectors.EVENT_WRITE, key)
        self._progress(key, attempt, selectors.EVENT_WRITE, now)  # the request usually fits the send buffer

    def _progress(self, key: int, attempt: ConnectAttempt, mask: int, now: float) -> None:
        target = attempt.target
        try:
            if attempt.request:
                sent = attempt.sock.send(attempt.request)
                attempt.request = attempt.request[sent:]
                if not attempt.request:
                    self.selector.modify(attempt.sock, selectors.EVENT_READ, key)
                return
            chunk = attempt.sock.recv(16384)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(key, CheckResult(self.name, L7RSP, f"connection error while talking HTTP: {exc.strerror}"))
            return
        assert attempt.answer is not None
        attempt.answer += chunk
        complete = not chunk or len(attempt.answer) >= HTTP_RESPONSE_LIMIT or self._answer_complete(
            attempt.answer, bool(target.http_body))
        if complete:
            status, reason = judge_http(bytes(attempt.answer), target.http_status, target.http_body)
            self._finish(key, CheckResult(self.name, status, reason, rtt=now - attempt.started))

    @staticmethod
    def _answer_complete(answer: bytearray, need_body: bool) -> bool:
        """Enough to judge before the server closes: the status line (no body check), or the whole
        body as Content-Length announces it."""
        if not need_body:
            return b"\r\n" in answer
        head, sep, body = bytes(answer).partition(b"\r\n\r\n")
        if not sep:
            return False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                return len(body) >= int(value.strip())
        return False

    def _timeout_result(self, attempt: ConnectAttempt, now: float) -> CheckResult:
        if not attempt.connected:
            return CheckResult(self.name, L4TOUT, f"no handshake within {attempt.target.timeout:g} s")
        return CheckResult(self.name, L7TOUT, f"no complete HTTP answer within {attempt.target.timeout:g} s")
