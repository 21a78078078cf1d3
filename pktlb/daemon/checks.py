"""Health checkers driven by the daemon's event loop: the shared scheduler, TCP and HTTP checks, a registry.

Every checker has the same shape, so the reactor treats them alike:

    fileno()          a descriptor to watch for reading (the ICMP socket, or an epoll set of sockets)
    on_readable(now)  read what is ready, deliver finished results
    due(now)          the absolute time of the next probe to send or attempt to time out (None: idle)
    run_due(now)      send what is due, time out what is overdue

Results go to ``on_result(service, backend, CheckResult)``.  Nothing blocks: connects are
non-blocking, and every attempt has a deadline of ``timeout`` seconds, after which it counts as a
timeout.  Attempts start every ``interval`` seconds whether or not the previous one has finished,
so a dead backend is noticed within ``interval * fall + timeout`` (the last of ``fall`` failing
attempts starts at most ``interval * fall`` after the failure and times out ``timeout`` later).
When an attempt finishes, older attempts of the same target still in flight are dropped
(``superseded``), so results reach the state machine in the order the attempts started.

The registry maps the config's check names ("icmp", "tcp", "http") to checker classes.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, ClassVar

from pktlb.adapters.icmp_socket import UNREACHABLE_ERRNOS
from pktlb.core.health import (
    L3UNR,
    L4CON,
    L4OK,
    L4TOUT,
    L7OK,
    L7RSP,
    L7STS,
    L7TOUT,
    SOCKERR,
    CheckResult,
    CheckTarget,
)

ResultCallback = Callable[[str, str, CheckResult], None]
HTTP_RESPONSE_LIMIT = 64 * 1024  # read at most this much of an answer


@dataclass(slots=True)
class Schedule:
    target: CheckTarget
    next_at: float
    remaining: int | None = None  # probes left to send; None: for ever


@dataclass(slots=True)
class Attempt:
    target: CheckTarget
    started: float
    deadline: float


class ScheduledChecker(ABC):
    """Starts an attempt per target every ``interval`` and times attempts out after ``timeout``."""

    name: ClassVar[str]

    def __init__(self, on_result: ResultCallback) -> None:
        self.on_result = on_result
        self.schedules: dict[tuple[str, str], Schedule] = {}
        self.inflight: dict[Hashable, Attempt] = {}
        self.counters: Counter[str] = Counter()

    def add_target(self, target: CheckTarget, now: float, *, first_at: float | None = None,
                   count: int | None = None) -> None:
        """Check ``target`` from ``first_at`` (default: now) every ``target.interval``; ``count`` bounds it."""
        if target.check != self.name:
            raise ValueError(f"a {self.name} checker cannot run a {target.check} check")
        self.schedules[target.key] = Schedule(target, now if first_at is None else first_at, count)

    def remove_target(self, service: str, backend: str) -> None:
        """Stop checking; attempts in flight are abandoned without a result."""
        self.schedules.pop((service, backend), None)
        for key, attempt in list(self.inflight.items()):
            if attempt.target.key == (service, backend):
                self._abandon(self.inflight.pop(key))

    @property
    def idle(self) -> bool:
        return not self.schedules and not self.inflight

    def due(self, now: float | None = None) -> float | None:
        times = [s.next_at for s in self.schedules.values()] + [a.deadline for a in self.inflight.values()]
        return min(times) if times else None

    def run_due(self, now: float) -> None:
        for schedule in list(self.schedules.values()):
            if schedule.next_at > now:
                continue
            self.counters["started"] += 1
            self._launch(schedule.target, now)
            schedule.next_at += schedule.target.interval
            if schedule.next_at <= now:  # the loop fell behind: do not send a burst to catch up
                schedule.next_at = now + schedule.target.interval
            if schedule.remaining is not None:
                schedule.remaining -= 1
                if schedule.remaining <= 0:
                    del self.schedules[schedule.target.key]
        overdue = sorted((a.deadline, i, k) for i, (k, a) in enumerate(self.inflight.items()) if a.deadline <= now)
        for _, _, key in overdue:
            attempt = self.inflight.get(key)
            if attempt is not None:
                del self.inflight[key]
                self._abandon(attempt)
                self.counters["timeouts"] += 1
                self._deliver(attempt.target, self._timeout_result(attempt, now))

    def _deliver(self, target: CheckTarget, result: CheckResult) -> None:
        self.counters[result.status] += 1
        self.on_result(target.service, target.backend, result)

    def _finish(self, key: Hashable, result: CheckResult) -> None:
        attempt = self.inflight.pop(key, None)
        if attempt is None:
            return
        self._abandon(attempt)
        # The newest news wins: older attempts of this target still in flight are dropped, so the
        # state machine sees results in the order the attempts started (a probe lost while the link
        # was down must not time out after a newer one proved the backend back).
        for other_key, other in list(self.inflight.items()):
            if other.target.key == attempt.target.key and other.started < attempt.started:
                del self.inflight[other_key]
                self._abandon(other)
                self.counters["superseded"] += 1
        self._deliver(attempt.target, result)

    @abstractmethod
    def fileno(self) -> int: ...

    @abstractmethod
    def on_readable(self, now: float) -> None: ...

    @abstractmethod
    def _launch(self, target: CheckTarget, now: float) -> None:
        """Start one attempt: put it in ``inflight``, or deliver a result at once if it failed to start."""

    @abstractmethod
    def _timeout_result(self, attempt: Any, now: float) -> CheckResult: ...

    def _abandon(self, attempt: Any) -> None:
        """Release what an attempt holds (its socket)."""
        return None

    def close(self) -> None:
        for attempt in self.inflight.values():
            self._abandon(attempt)
        self.inflight.clear()
        self.schedules.clear()


REGISTRY: dict[str, type[ScheduledChecker]] = {}


def register(cls: type[ScheduledChecker]) -> type[ScheduledChecker]:
    REGISTRY[cls.name] = cls
    return cls


def make_checker(name: str, on_result: ResultCallback, **options: Any) -> ScheduledChecker:
    """Build a checker by its config name; ValueError naming the choices for an unknown one."""
    from pktlb.daemon import prober  # noqa: F401  (registers "icmp")

    if name not in REGISTRY:
        raise ValueError(f"unknown check type {name!r}: expected one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](on_result, **options)


def connect_error_result(check: str, err: int) -> CheckResult:
    """Classify a failed connect: refused, unreachable, timed out, or another socket error."""
    text = os.strerror(err).lower()
    if err == errno.ECONNREFUSED:
        return CheckResult(check, L4CON, "connection refused")
    if err in UNREACHABLE_ERRNOS:
        return CheckResult(check, L3UNR, text)
    if err == errno.ETIMEDOUT:
        return CheckResult(check, L4TOUT, text)
    return CheckResult(check, SOCKERR, f"{errno.errorcode.get(err, err)}: {text}")


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


@dataclass(slots=True)
class ConnectAttempt(Attempt):
    sock: socket.socket
    connected: bool = False
    request: bytes = b""
    answer: bytearray | None = None


@register
class TcpChecker(ScheduledChecker):
    """L4 check: a TCP handshake with the backend's port, then a plain close."""

    name = "tcp"

    def __init__(self, on_result: ResultCallback) -> None:
        super().__init__(on_result)
        self.selector = selectors.DefaultSelector()  # an epoll set: its own fd is readable when any member is

    def fileno(self) -> int:
        return self.selector.fileno()

    def _launch(self, target: CheckTarget, now: float) -> None:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:  # out of descriptors: a failed check, not a crash of the loop
            self._deliver(target, connect_error_result(self.name, exc.errno or 0))
            return
        sock.setblocking(False)
        err = sock.connect_ex((target.address, target.port))
        attempt = ConnectAttempt(target, now, now + target.timeout, sock)
        key = sock.fileno()
        self.inflight[key] = attempt
        if err == 0:
            self._connected(key, attempt, now)
        elif err == errno.EINPROGRESS:
            self.selector.register(sock, selectors.EVENT_WRITE, key)
        else:
            self._finish(key, connect_error_result(self.name, err))

    def on_readable(self, now: float) -> None:
        for selected, mask in self.selector.select(0):
            key = selected.data
            attempt = self.inflight.get(key)
            if attempt is None:
                continue
            if not attempt.connected:
                err = attempt.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._finish(key, connect_error_result(self.name, err))
                else:
                    self._connected(key, attempt, now)
            else:
                self._progress(key, attempt, mask, now)

    def _connected(self, key: int, attempt: ConnectAttempt, now: float) -> None:
        self._finish(key, CheckResult(self.name, L4OK, f"handshake in {(now - attempt.started) * 1e3:.3f} ms",
                                      rtt=now - attempt.started))

    def _progress(self, key: int, attempt: ConnectAttempt, mask: int, now: float) -> None:
        """After the handshake (HTTP only)."""

    def _timeout_result(self, attempt: ConnectAttempt, now: float) -> CheckResult:
        return CheckResult(self.name, L4TOUT, f"no handshake within {attempt.target.timeout:g} s")

    def _abandon(self, attempt: ConnectAttempt) -> None:
        try:
            self.selector.unregister(attempt.sock)
        except (KeyError, ValueError):
            pass
        attempt.sock.close()

    def close(self) -> None:
        super().close()
        self.selector.close()


@register
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
