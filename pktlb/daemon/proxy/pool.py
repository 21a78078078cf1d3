"""Reused connections to one backend: the reason an L7 proxy opens far fewer connections than it serves requests.

A connection goes back to its pool only after a complete exchange that leaves it open (both sides
finished their message, no ``Connection: close``, HTTP/1.1), so the next request on it can never
read the tail of an earlier response.  The pool keeps at most ``max_idle`` idle connections per
backend, hands out the most recently used first (the others age out sooner), and closes any that
has been idle for ``idle_timeout`` seconds or on which anything arrived while it sat idle: the
backend closed it, or sent bytes no request asked for (a "408 Request Timeout" before closing, say),
which would otherwise be read as the answer to the next request.  ``CountingReader`` counts the
bytes that arrive, so comparing with the bytes the proxy read costs nothing per request.  Backends
close idle connections on their own timers, so ``idle_timeout`` should stay below theirs; a request
that still meets a connection the backend closed at that very moment is retried on a new one (see
``forward``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque

import h11

from pktlb.core.l7.stats import BackendCounters
from pktlb.daemon.proxy.http_stream import HttpStream

log = logging.getLogger("pktlb.proxy")


class CountingReader(asyncio.StreamReader):
    """A stream reader that counts the bytes arriving from the socket (read by anyone or not yet)."""

    def __init__(self) -> None:
        super().__init__()
        self.received = 0

    def feed_data(self, data: bytes) -> None:  # type: ignore[override]  # (typeshed: any iterable)
        self.received += len(data)
        super().feed_data(data)


async def open_counted_connection(address: str, port: int, ssl_context: ssl.SSLContext | None = None
                                  ) -> tuple[CountingReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` with a ``CountingReader`` (the way asyncio's documentation suggests);
    over TLS when ``ssl_context`` is given (the backend's certificate must name ``address``).  With TLS,
    the count is of decrypted bytes, which is what the proxy compares it with."""
    loop = asyncio.get_running_loop()
    reader = CountingReader()
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, address, port, ssl=ssl_context,
                                                server_hostname=address if ssl_context is not None else None)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class Upstream(HttpStream):
    """A connection to a backend, with what the pool needs to know about it."""

    __slots__ = ("backend", "exchanges", "idle_since", "counting")

    def __init__(self, backend: str, reader: CountingReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(h11.Connection(h11.CLIENT), reader, writer)
        self.counting = reader
        self.backend = backend
        self.exchanges = 0  # requests sent on this connection so far
        self.idle_since = 0.0

    def park(self, now: float) -> None:
        self.conn.start_next_cycle()
        self.idle_since = now

    def alive(self) -> bool:
        """Still fit for a request: every byte that arrived was part of an answer (none waits unread,
        in the stream or in h11), the backend has not closed, the proxy is not closing it."""
        return (self.counting.received == self.bytes_in and not self.has_buffered_data()
                and not self.reader.at_eof() and not self.writer.transport.is_closing())


class BackendPool:
    def __init__(self, name: str, address: str, port: int, counters: BackendCounters, *, max_idle: int,
                 idle_timeout: float, ssl_context: ssl.SSLContext | None = None) -> None:
        self.name, self.address, self.port = name, address, port
        self.ssl_context = ssl_context
        self.counters = counters
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.idle: deque[Upstream] = deque()
        self.active = 0  # connections carrying a request now

    async def connect(self, deadline: float) -> Upstream:
        """A new connection (TimeoutError at ``deadline``, OSError when refused or unreachable)."""
        async with asyncio.timeout_at(deadline):
            reader, writer = await open_counted_connection(self.address, self.port, self.ssl_context)
        self.counters.connections_opened += 1
        self.active += 1
        return Upstream(self.name, reader, writer)

    def take(self, now: float) -> Upstream | None:
        """The most recently used idle connection that is still usable, or None."""
        while self.idle:
            upstream = self.idle.pop()
            if upstream.alive() and now - upstream.idle_since < self.idle_timeout:
                self.active += 1
                self.counters.reused += 1
                return upstream
            upstream.close()
        return None

    def give_back(self, upstream: Upstream, now: float) -> None:
        """Return a connection after its exchange: kept if complete, reusable and there is room."""
        self.active -= 1
        if upstream.reusable and upstream.alive() and len(self.idle) < self.max_idle:
            upstream.park(now)
            self.idle.append(upstream)
        else:
            upstream.close()

    def discard(self, upstream: Upstream) -> None:
        """Close a connection whose exchange failed or was cut: it is never reused."""
        self.active -= 1
        upstream.close()

    def sweep(self, now: float) -> int:
        """Close the idle connections past ``idle_timeout`` or closed by the backend; how many were closed."""
        keep: deque[Upstream] = deque()
        for upstream in self.idle:
            if upstream.alive() and now - upstream.idle_since < self.idle_timeout:
                keep.append(upstream)
            else:
                upstream.close()
        closed = len(self.idle) - len(keep)
        self.idle = keep
        return closed

    def close_idle(self) -> None:
        """Close every idle connection (the backend went down, was drained or removed)."""
        while self.idle:
            self.idle.pop().close()

    def figures(self) -> dict[str, int]:
        return {"active": self.active, "idle": len(self.idle)}
