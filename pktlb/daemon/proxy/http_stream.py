"""One HTTP/1.1 connection: an h11 state machine over an asyncio stream.

h11 (https://h11.readthedocs.io) does the parsing and framing: request and status lines, headers,
``Content-Length`` and chunked bodies, which messages have no body (HEAD, 204, 304), the keep-alive
rules of HTTP/1.0 and 1.1, and pipelining (the next request waits in its buffer until the current
exchange is over).  It does no I/O; this class feeds it the bytes read from the socket and writes
the bytes it produces, so every read has a deadline and every write waits for the socket to drain
(bounded memory whatever the peer does).

    stream = HttpStream(h11.Connection(h11.SERVER), reader, writer)
    event = await stream.next_event(deadline)      # h11.Request, Data, EndOfMessage, ConnectionClosed...
    stream.queue(h11.Response(status_code=200, headers=[...]))
    stream.queue(h11.Data(data=b"..."))             # queued events leave together:
    await stream.flush(deadline)                    # one write (one segment) for a small message

``next_event`` raises ``TimeoutError`` at the deadline (loop time), ``h11.RemoteProtocolError`` on
bytes that are not HTTP, ``ConnectionError`` when the socket fails.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11

READ_SIZE = 64 * 1024  # at most this much is read (and so buffered) per socket read


class HttpStream:
    __slots__ = ("conn", "reader", "writer", "bytes_in", "bytes_out", "pending", "pending_bytes")

    def __init__(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.bytes_in = 0
        self.bytes_out = 0
        self.pending: list[bytes] = []  # queued output, written by the next flush
        self.pending_bytes = 0

    async def next_event(self, deadline: float) -> Any:
        """The next h11 event, reading from the socket as needed until ``deadline``."""
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            async with asyncio.timeout_at(deadline):
                data = await self.reader.read(READ_SIZE)
            self.bytes_in += len(data)
            conn.receive_data(data)  # b"" tells h11 the peer closed its side

    @property
    def consumed(self) -> int:
        """Bytes h11 has parsed so far (read, minus what still waits in its buffer)."""
        return self.bytes_in - len(self.conn.trailing_data[0])

    def has_buffered_data(self) -> bool:
        """True when bytes of a next message already wait (a pipelined request, for example)."""
        return bool(self.conn.trailing_data[0])

    async def wait_readable(self, deadline: float) -> bool:
        """Wait until the peer sends something (or closes); False at ``deadline``."""
        if self.has_buffered_data():
            return True
        try:
            async with asyncio.timeout_at(deadline):
                data = await self.reader.read(READ_SIZE)
        except TimeoutError:
            return False
        except (ConnectionError, OSError):
            data = b""  # a reset while idle: for h11, the peer closed
        self.bytes_in += len(data)
        self.conn.receive_data(data)
        return True

    def queue(self, event: Any) -> None:
        """Frame one event (h11 checks it fits the message) and keep its bytes for the next ``flush``."""
        data = self.conn.send(event)
        if data:
            self.pending.append(data)
            self.pending_bytes += len(data)

    async def flush(self, deadline: float) -> None:
        """Write what is queued in one write; wait (until ``deadline``) only while the peer is not reading
        fast enough (asyncio's buffer above its high-water mark), so memory stays bounded."""
        if self.pending:
            data = self.pending[0] if len(self.pending) == 1 else b"".join(self.pending)
            self.pending.clear()
            self.pending_bytes = 0
            self.bytes_out += len(data)
            self.writer.write(data)
        transport = self.writer.transport
        if transport.get_write_buffer_size() or transport.is_closing():
            async with asyncio.timeout_at(deadline):
                await self.writer.drain()

    async def send_within(self, event: Any, deadline: float) -> None:
        """Queue one event and flush."""
        self.queue(event)
        await self.flush(deadline)

    @property
    def reusable(self) -> bool:
        """Both sides finished their message and neither asked to close: the next exchange may start."""
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE

    def close(self) -> None:
        """Close now, without waiting for unsent data (the connection is abandoned)."""
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()

    async def close_gracefully(self, linger: float = 1.0, max_discard: int = 256 * 1024) -> None:
        """Send what is buffered and close, so that the peer gets the whole of the last answer.

        A peer still sending (a body the proxy refused) would get a reset if the socket closed with
        unread bytes, and a reset can destroy the answer before the peer reads it.  So the proxy half
        closes (FIN after the answer), reads and discards what comes for up to ``linger`` seconds or
        ``max_discard`` bytes, then closes (the "lingering close" of Apache and nginx).
        """
        writer = self.writer
        if writer.transport.is_closing():
            return
        try:
            async with asyncio.timeout(linger):
                await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()
                discarded = 0
                while discarded < max_discard:
                    data = await self.reader.read(READ_SIZE)
                    if not data:
                        break
                    discarded += len(data)
        except (TimeoutError, ConnectionError, OSError):
            pass
        self.close()
