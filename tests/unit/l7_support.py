"""Helpers for the L7 proxy tests: backends, a running proxy and clients, all on 127.0.0.1 with ephemeral ports.

``Backend``         an asyncio HTTP/1.1 server (h11) that says who it is and what it received
``running_proxy``   a ``ProxyServer`` on a socket bound to port 0, its control socket in a fresh directory
``read_response``   a small response reader of its own (status, headers, body by any framing), so the
                    tests do not check the proxy's HTTP with the same library the proxy uses
Everything is bounded: every await in a test has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11

from pktlb.core.config import parse_config
from pktlb.daemon.proxy.server import ProxyServer


class Backend:
    """Answers by path:

    GET /             JSON {"backend", "peer": [addr, port], "headers": {name: value}} (names in lower case)
    POST /echo        JSON {"backend", "bytes", "sha256"} of the body, whatever its framing; ?chunked=1 answers chunked
    GET /chunked?n=K  "part 0\\n" ... "part K-1\\n", chunked
    GET /bytes?n=N    N bytes in 64 KiB pieces (Content-Length), written as the socket drains
    GET /status/N     status N (no body for 204 and 304; "status N\\n" otherwise)
    GET /hang         no answer until ``release`` is set
    GET /close        no answer: the connection is reset
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections = 0  # connections accepted
        self.requests: list[h11.Request] = []
        self.release = asyncio.Event()
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def kill(self) -> None:
        """As if the process died: the listener closes and every connection is reset."""
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await _next(conn, reader)
                if not isinstance(request, h11.Request):
                    return
                body = bytearray()
                while True:
                    event = await _next(conn, reader)
                    if isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                self.requests.append(request)
                await self._answer(conn, writer, request, bytes(body))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.CancelledError):
            pass  # killed, or the test is over
        finally:
            self.writers.discard(writer)
            writer.transport.abort()

    async def _answer(self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request,
                      body: bytes) -> None:
        url = urlsplit(request.target.decode())
        query = parse_qs(url.query)
        status, chunks, chunked = 200, [b""], False
        if url.path == "/echo":
            chunks = [json.dumps({"backend": self.name, "bytes": len(body),
                                  "sha256": hashlib.sha256(body).hexdigest()}).encode()]
            chunked = "chunked" in query
        elif url.path == "/chunked":
            chunks, chunked = [f"part {i}\n".encode() for i in range(int(query["n"][0]))], True
        elif url.path == "/bytes":
            n = int(query["n"][0])
            chunks = [bytes(min(65536, n - i)) for i in range(0, n, 65536)]
        elif url.path.startswith("/status/"):
            status = int(url.path.rsplit("/", 1)[1])
            chunks = [b""] if status in (204, 304) else [f"status {status}\n".encode()]
        elif url.path == "/close":
            raise ConnectionResetError("the test asked for a reset")
        elif url.path == "/hang":
            await self.release.wait()
            chunks = [b"released\n"]
        else:
            peer = writer.get_extra_info("peername")
            chunks = [json.dumps({"backend": self.name, "peer": list(peer[:2]),
                                  "headers": {n.decode(): v.decode() for n, v in request.headers}}).encode()]
        headers = [("Content-Type", "text/plain")]
        if status not in (204, 304):
            headers.append(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(sum(map(len, chunks)))))
        else:
            headers.append(("ETag", '"v1"'))
        if request.method == b"HEAD":
            chunks = []  # the headers of a GET, no body
        for event in [h11.Response(status_code=status, headers=headers)] + [h11.Data(data=c) for c in chunks if c] \
                + [h11.EndOfMessage()]:
            data = conn.send(event)
            if data:
                writer.write(data)
                await writer.drain()


async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(65536))


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_head: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


async def read_response(reader: asyncio.StreamReader, *, head: bool = False, timeout: float = 5.0) -> Answer:
    """One response off a client connection, framed by Content-Length, chunked coding, or the close."""
    async with asyncio.timeout(timeout):
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, value = line.split(":", 1)
                key = name.strip().lower()
                headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        if head or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", ""):
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    break
                body += (await reader.readexactly(size + 2))[:-2]
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body = await reader.read()  # until the server closes
    return Answer(status, headers, body, raw)


def get(path: str, host: str = "web.example", extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


async def request(port: int, raw: bytes, *, head: bool = False) -> Answer:
    """One request on a connection of its own."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        return await read_response(reader, head=head)
    finally:
        writer.close()


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything the peer sends until it closes (ConnectionResetError counts as closed)."""
    data = b""
    async with asyncio.timeout(timeout):
        try:
            while chunk := await reader.read(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return data


@dataclass
class ProxyUnderTest:
    server: ProxyServer
    port: int
    control_socket: str
    backends: dict[str, Backend] = field(default_factory=dict)


def config_text(port: int, backends: list[Backend], control_socket: str, *, scheduler: str = "rr",
                l7: str = "", routes: str = "", health: str = "") -> str:
    text = (f'[lb]\ncontrol_socket = "{control_socket}"\n\n[[service]]\nname = "web"\nvip = "127.0.0.1"\n'
            f'port = {port}\nmode = "l7"\nscheduler = "{scheduler}"\n')
    if l7:
        text += f"\n  [service.l7]\n{l7}\n"
    if health:
        text += f"\n  [service.health]\n{health}\n"
    text += routes
    for be in backends:
        text += f'\n  [[service.backend]]\n  name = "{be.name}"\n  address = "127.0.0.1"\n  port = {be.port}\n'
    return text


@contextlib.asynccontextmanager
async def running_proxy(names: tuple[str, ...] = ("be1", "be2"), extra_backends: tuple[Backend, ...] | list[Backend] = (),
                        **options: str) -> AsyncIterator[ProxyUnderTest]:
    """Backends ``names`` (and ``extra_backends``, already started) and a proxy balancing over them;
    options go to ``config_text``."""
    backends = [await Backend(name).start() for name in names] + list(extra_backends)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="pktlb-l7-")
    control_socket = f"{directory}/ctl.sock"
    text = config_text(port, backends, control_socket, **options)
    server = ProxyServer(parse_config(text), health="checks" in options.get("health", ""))
    try:
        await server.start({"web": listener})
        yield ProxyUnderTest(server, port, control_socket, {b.name: b for b in backends})
    finally:
        await server.close()
        listener.close()
        for be in backends:
            be.release.set()
            if be.server is not None and be.server.is_serving():
                await be.kill()
        shutil.rmtree(directory, ignore_errors=True)


def run(coro: Any, timeout: float = 60.0) -> Any:
    """Run a test's coroutine with a bound on its whole duration."""
    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await coro
    return asyncio.run(bounded())
