"""The engine's event-loop interface (``pktlb.daemon.reactor.Reactor``) on an asyncio loop.

The health monitor and the control socket server were written for the engine's selector loop; they
only ever call ``clock``, ``add_reader``, ``watch_writable``, ``remove_reader``, ``call_at`` and
``call_later``.  ``AsyncioReactor`` gives them exactly that on the proxy's asyncio loop, so the
proxy reuses both unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class AsyncioReactor:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def clock(self) -> float:
        return self.loop.time()  # time.monotonic(), as the engine's Reactor uses

    def add_reader(self, fileobj: Any, callback: Callable[[], None]) -> None:
        self.loop.add_reader(fileobj, callback)

    def watch_writable(self, fileobj: Any, callback: Callable[[], None]) -> None:
        """Call ``callback`` when ``fileobj`` can be written (instead of any read watch on it)."""
        self.loop.remove_reader(fileobj)
        self.loop.add_writer(fileobj, callback)

    def remove_reader(self, fileobj: Any) -> None:
        """Stop watching ``fileobj`` at all (the Reactor's one watch may be a read or a write one)."""
        self.loop.remove_reader(fileobj)
        self.loop.remove_writer(fileobj)

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        self.loop.call_at(when, callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.loop.call_later(delay, callback)
