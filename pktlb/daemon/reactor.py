"""One event loop: readable file descriptors, timers, and signals that only set flags.

Signal handlers do nothing but record the signal's name (and wake the loop through
``signal.set_wakeup_fd``); the loop notices the flag and does the work — reload, stop — at a safe
point, as ExaBGP does.
"""

from __future__ import annotations

import heapq
import itertools
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from typing import Protocol


class HasFileno(Protocol):
    def fileno(self) -> int: ...


FileLike = int | HasFileno  # what a selector watches: a descriptor or an object with fileno()


class Reactor:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.selector = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.counter = itertools.count()
        self.flags: set[str] = set()
        self.running = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wakeup)
        self._old_wakeup: int | None = None

    def add_reader(self, fileobj: FileLike, callback: Callable[[], object]) -> None:
        """Call ``callback`` (its result is ignored) whenever ``fileobj`` is readable."""
        self.selector.register(fileobj, selectors.EVENT_READ, callback)

    def watch_writable(self, fileobj: FileLike, callback: Callable[[], object]) -> None:
        """Call ``callback`` when ``fileobj`` can be written (instead of any read watch on it)."""
        try:
            self.selector.modify(fileobj, selectors.EVENT_WRITE, callback)
        except KeyError:
            self.selector.register(fileobj, selectors.EVENT_WRITE, callback)

    def remove_reader(self, fileobj: FileLike) -> None:
        try:
            self.selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self.timers, (when, next(self.counter), callback))

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.call_at(self.clock() + delay, callback)

    def every(self, interval: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` every ``interval`` seconds (drift-free: the next run is planned from the last plan)."""
        def tick(planned: float = self.clock() + interval) -> None:
            callback()
            nxt = planned + interval
            now = self.clock()
            if nxt < now:
                nxt = now + interval
            self.call_at(nxt, lambda: tick(nxt))
        self.call_later(interval, tick)

    def flag_on_signal(self, signum: int, name: str) -> None:
        """The handler only records ``name``; the loop acts on it."""
        signal.signal(signum, lambda _s, _f: self.flags.add(name))
        if self._old_wakeup is None:
            self._old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)

    def take_flag(self, name: str) -> bool:
        if name in self.flags:
            self.flags.discard(name)
            return True
        return False

    def _drain_wakeup(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except BlockingIOError:
            pass

    def run_once(self, max_wait: float = 1.0) -> None:
        now = self.clock()
        timeout = max_wait
        if self.timers:
            timeout = max(0.0, min(timeout, self.timers[0][0] - now))
        if self.flags:
            timeout = 0.0
        for key, _ in self.selector.select(timeout):
            key.data()
        now = self.clock()
        while self.timers and self.timers[0][0] <= now:
            _, _, callback = heapq.heappop(self.timers)
            callback()

    def run(self, on_flags: Callable[[], None], until: Callable[[], bool] | None = None) -> None:
        self.running = True
        while self.running:
            if self.flags:
                on_flags()
            if until is not None and until():
                break
            self.run_once()
        self.running = False

    def stop(self) -> None:
        self.running = False

    def close(self) -> None:
        if self._old_wakeup is not None:
            signal.set_wakeup_fd(self._old_wakeup)
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
