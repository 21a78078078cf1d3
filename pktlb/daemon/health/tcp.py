"""The L4 health check: a non-blocking TCP handshake with the backend's port, then a plain close.

All of a checker's sockets sit in one epoll set, whose own descriptor is what the event loop
watches.  A failed connect is classified as refused (L4CON), unreachable (L3UNR), timed out
(L4TOUT) or another socket error (SOCKERR).
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
from dataclasses import dataclass

from pktlb.adapters.icmp_socket import UNREACHABLE_ERRNOS
from pktlb.core.health import L3UNR, L4CON, L4OK, L4TOUT, SOCKERR, CheckResult, CheckTarget
from pktlb.daemon.health.base import Attempt, ResultCallback, ScheduledChecker


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


@dataclass(slots=True)
class ConnectAttempt(Attempt):
    sock: socket.socket
    connected: bool = False
    request: bytes = b""
    answer: bytearray | None = None


class TcpChecker(ScheduledChecker[ConnectAttempt]):
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
            if not isinstance(attempt, ConnectAttempt):  # gone (None), or not this checker's
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
