"""A lab backend's capacity: a per-request service time and a concurrency cap with a FIFO queue.

Real servers have a capacity: N worker threads, each busy for some time per request.  The lab's
backends run on the same two CPUs, so without a limit of their own one backend is as fast as ten
and adding backends changes nothing a student can measure.  With a capacity it does:

* ``--service-time MS``: every request holds a slot for MS milliseconds before it is answered (a
  sleep: a server waiting on a database or a disk, not burning CPU, so ten such backends do not
  fight over the two cores);
* ``--max-concurrent N``: at most N requests hold a slot at once; the others wait, first come first
  served, for a free one (a queue in front of N workers).

One backend then serves at most ``N / service time`` requests per second, and a request's latency
is its wait in the queue plus the service time: past that rate the queue, and the latency, grow;
a second backend halves the arrival rate each one sees.  ``/health`` and ``/capacity`` are never
queued or delayed (a health check must not fail because the backend is busy).  Answers carry
``X-Queue-Ms`` and ``X-Service-Ms`` (time waited for a slot, time held); ``GET /capacity`` returns
the settings and counters as JSON.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

EXEMPT_PATHS = ("/health", "/capacity")


@dataclass
class SlotTiming:
    queued: float = 0.0  # seconds waited for a slot
    held: float = 0.0  # seconds of service time


class Capacity:
    """A FIFO gate of ``max_concurrent`` slots (0: unlimited) and a service time per request."""

    def __init__(self, max_concurrent: int = 0, service_time: float = 0.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if max_concurrent < 0:
            raise ValueError(f"max_concurrent {max_concurrent}: expected 0 (unlimited) or more")
        if not service_time >= 0:
            raise ValueError(f"service_time {service_time}: expected seconds >= 0")
        self.max_concurrent, self.service_time, self._sleep = max_concurrent, service_time, sleep
        self._lock = threading.Lock()
        self._queue: deque[threading.Event] = deque()
        self.in_service = self.served = self.peak_in_service = self.peak_waiting = 0

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def _acquire(self) -> None:
        with self._lock:
            if self.max_concurrent == 0 or (self.in_service < self.max_concurrent and not self._queue):
                self.in_service += 1
                self.peak_in_service = max(self.peak_in_service, self.in_service)
                return
            turn = threading.Event()
            self._queue.append(turn)
            self.peak_waiting = max(self.peak_waiting, len(self._queue))
        turn.wait()  # _release hands its slot over: in_service stays the same

    def _release(self) -> None:
        with self._lock:
            self.served += 1
            if self._queue:
                self._queue.popleft().set()
            else:
                self.in_service -= 1

    @contextmanager
    def slot(self) -> Iterator[SlotTiming]:
        """Wait for a slot, hold it for the service time, keep it while the body runs, then free it."""
        timing = SlotTiming()
        begin = time.monotonic()
        self._acquire()
        timing.queued = time.monotonic() - begin
        try:
            if self.service_time:
                self._sleep(self.service_time)
            timing.held = time.monotonic() - begin - timing.queued
            yield timing
        finally:
            self._release()

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"max_concurrent": self.max_concurrent, "service_time_ms": self.service_time * 1000,
                    "in_service": self.in_service, "waiting": len(self._queue), "served": self.served,
                    "peak_in_service": self.peak_in_service, "peak_waiting": self.peak_waiting}


def capacity_args(service_time_ms: float, max_concurrent: int) -> list[str]:
    """The ``pktlb.lab.httpd`` options for a capacity (none for 0 and 0: no capacity, as before)."""
    args = []
    if service_time_ms:
        args += ["--service-time", f"{service_time_ms:g}"]
    if max_concurrent:
        args += ["--max-concurrent", str(max_concurrent)]
    return args


class CapacityMixin(BaseHTTPRequestHandler):
    """Put before the HTTP handler class: every request but ``EXEMPT_PATHS`` goes through ``capacity``.

    The do_* methods wrap the next handler class's (``super()`` in the composed class); the type checker
    sees only BaseHTTPRequestHandler, which has none, hence the ``misc`` ignores on those four calls."""

    capacity: Capacity | None = None
    _timing: SlotTiming | None = None

    def _through_capacity(self, handler: Callable[[], None]) -> None:
        if self.capacity is None or self._timing is not None or urlsplit(self.path).path in EXEMPT_PATHS:
            handler()  # also a handler calling another (HEAD -> GET): one slot per request
            return
        with self.capacity.slot() as timing:
            self._timing = timing
            try:
                handler()
            finally:
                self._timing = None

    def end_headers(self) -> None:
        if self._timing is not None:
            self.send_header("X-Queue-Ms", f"{self._timing.queued * 1000:.1f}")
            self.send_header("X-Service-Ms", f"{self._timing.held * 1000:.1f}")
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.capacity is not None and urlsplit(self.path).path == "/capacity":
            body = (json.dumps(self.capacity.as_dict()) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._through_capacity(super().do_GET)  # type: ignore[misc]  # the composed handler's

    def do_HEAD(self) -> None:  # noqa: N802
        self._through_capacity(super().do_HEAD)  # type: ignore[misc]  # the composed handler's

    def do_POST(self) -> None:  # noqa: N802
        self._through_capacity(super().do_POST)  # type: ignore[misc]  # the composed handler's

    def do_PUT(self) -> None:  # noqa: N802
        self._through_capacity(super().do_PUT)  # type: ignore[misc]  # the composed handler's


__all__ = ["Capacity", "CapacityMixin", "SlotTiming", "EXEMPT_PATHS", "capacity_args"]
