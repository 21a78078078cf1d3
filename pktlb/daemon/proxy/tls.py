"""TLS termination: the proxy holds the certificate, does the handshakes, and reads every request in clear.

    accept -> wait for the client's first bytes (deadline: handshake_timeout)
           -> not a TLS handshake record (0x16)?  plain HTTP on the TLS port: a 400 in clear, counted
           -> the handshake (the standard ``ssl`` module, OpenSSL) -> a new session or a resumed one
           -> the same ClientSession as plain HTTP, over the decrypted stream

Why not ``asyncio.start_server(ssl=...)``: asyncio then does the handshake out of sight, and a failed
one never reaches the proxy, so it could not be counted.  Here every connection that does not end
in a session is a rejection by named reason (``pktlb.core.l7.rejects``):

- ``plain_http_on_tls``      the client spoke plain HTTP to the TLS port: answered 400 in plain text;
- ``tls_handshake_timeout``  the handshake was not over within ``handshake_timeout`` (a truncated
                             handshake, or a client that connects and stalls): cut;
- ``tls_truncated``          the client closed or reset the connection in the middle of the handshake;
- ``tls_cert_refused``       the client refused the proxy's certificate (unknown CA, wrong name, expired);
- ``tls_handshake_failed``   any other handshake failure (no common version or cipher, garbage).

Session resumption: a returning client presents a session ticket (TLS 1.3, or 1.2 with tickets) or a
session id, and the handshake skips the certificate and the key exchange signature; the counters
``tls_full`` and ``tls_resumed`` tell them apart (``SSLObject.session_reused``).  The certificate is
checked when the proxy starts (``pktlb.adapters.certs.check_certificate``): an expired certificate,
or a key that is not the certificate's, stops it with a sentence naming the file, not a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

from pktlb.adapters.certs import CertificateProblem, check_certificate
from pktlb.core.l7.features import TlsConfig
from pktlb.core.l7.rejects import raw_answer
from pktlb.core.l7.stats import ServiceCounters

log = logging.getLogger("pktlb.proxy")
TLS_HANDSHAKE = 0x16  # the first byte of a TLS record carrying a handshake (ClientHello)
VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
CERT_REFUSED = ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN", "CERTIFICATE_EXPIRED", "BAD_CERTIFICATE")
ClientHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class TlsSetupError(RuntimeError):
    """The TLS settings of a service cannot be used: the message names the service, the file and the fault."""


def server_context(tls: TlsConfig, service: str) -> ssl.SSLContext:
    """The context the proxy terminates a service's TLS with (certificate checked first)."""
    try:
        info = check_certificate(tls.cert, tls.key)
    except CertificateProblem as exc:
        raise TlsSetupError(f"service {service}: {exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = VERSIONS[tls.min_version]
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsSetupError(f"service {service}: OpenSSL refused {tls.cert} with {tls.key}: {exc}") from None
    context.set_alpn_protocols(["http/1.1"])
    if not tls.session_resumption:
        context.options |= ssl.OP_NO_TICKET
        context.num_tickets = 0
    log.info("service %s: TLS with %s (%s), valid until %s", service, tls.cert, info.subject,
             f"{info.not_after:%Y-%m-%d %H:%M} UTC")
    return context


def backend_context(tls: TlsConfig | None, service: str) -> ssl.SSLContext | None:
    """The context the proxy encrypts toward the backends with (None: plain HTTP to them)."""
    if tls is None or not tls.to_backends:
        return None
    try:
        context = ssl.create_default_context(cafile=tls.backend_ca)
    except (ssl.SSLError, OSError) as exc:
        raise TlsSetupError(f"service {service}: backend_ca {tls.backend_ca}: {exc}") from None
    if not tls.backend_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def failure_reason(exc: BaseException) -> str:
    """The rejection reason of a failed server-side handshake."""
    if isinstance(exc, TimeoutError | ConnectionAbortedError):  # ours, or asyncio's ssl_handshake_timeout
        return "tls_handshake_timeout"
    if isinstance(exc, ssl.SSLEOFError | ConnectionResetError | BrokenPipeError | ssl.SSLZeroReturnError):
        return "tls_truncated"
    if isinstance(exc, ssl.SSLError) and any(mark in (exc.reason or "") for mark in CERT_REFUSED):
        return "tls_cert_refused"
    return "tls_handshake_failed"


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


class TlsListener:
    """Accepts on ``sock`` and hands each connection, decrypted, to ``handler`` (an ``AbstractServer`` look-alike)."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, tls: TlsConfig, counters: ServiceCounters,
                 max_pending: int, handler: ClientHandler) -> None:
        sock.setblocking(False)
        self.sock, self.context, self.tls, self.counters = sock, context, tls, counters
        self.max_pending = max_pending  # handshakes in progress at most (each holds a task and a socket)
        self.handler = handler
        self.pending: set[asyncio.Task[None]] = set()
        self.loop = asyncio.get_running_loop()
        self.accepting = self.loop.create_task(self._accept())

    async def _accept(self) -> None:
        while True:
            try:
                conn, _ = await self.loop.sock_accept(self.sock)
            except OSError as exc:  # EMFILE and friends: wait a little rather than spin
                log.warning("accept: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if len(self.pending) >= self.max_pending:
                self.counters.rejects["too_many_connections"] += 1
                conn.close()
                continue
            task = self.loop.create_task(self._handshake(conn))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def _handshake(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = self.loop.time() + self.tls.handshake_timeout
        try:
            async with asyncio.timeout_at(deadline):
                await _readable(conn)
            first = conn.recv(1, socket.MSG_PEEK)
            if not first:  # connected and closed without a byte (a TCP health check, a port scan)
                conn.close()
                return
            if first[0] != TLS_HANDSHAKE:
                self.counters.rejects["plain_http_on_tls"] += 1
                await self._answer_in_clear(conn)
                return
            reader = asyncio.StreamReader(limit=2**16)
            protocol = asyncio.StreamReaderProtocol(reader)
            transport, _ = await self.loop.connect_accepted_socket(
                lambda: protocol, conn, ssl=self.context,
                ssl_handshake_timeout=max(0.001, deadline - self.loop.time()))
        except (TimeoutError, OSError) as exc:
            reason = failure_reason(exc)
            self.counters.rejects[reason] += 1
            log.debug("TLS handshake failed (%s): %r", reason, exc)
            conn.close()
            return
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.session_reused:
            self.counters.tls_resumed += 1
        else:
            self.counters.tls_full += 1
        writer = asyncio.StreamWriter(transport, protocol, reader, self.loop)
        task = asyncio.current_task()
        if task is not None:
            self.pending.discard(task)  # the handshake is over: the session counts as a connection now
        await self.handler(reader, writer)

    async def _answer_in_clear(self, conn: socket.socket) -> None:
        """What nginx does: a plain-text 400 saying the client spoke plain HTTP to the TLS port."""
        try:
            await self.loop.sock_sendall(conn, raw_answer("plain_http_on_tls"))
            conn.shutdown(socket.SHUT_WR)
            async with asyncio.timeout(1.0):  # read what the client still sends, so the answer is not reset away
                while await self.loop.sock_recv(conn, 65536):
                    pass
        except (TimeoutError, OSError):
            pass
        finally:
            conn.close()

    # -- what the server needs of an asyncio.AbstractServer ------------------------------------
    def close(self) -> None:
        self.accepting.cancel()
        for task in list(self.pending):
            task.cancel()
        self.sock.close()

    def is_serving(self) -> bool:
        return not self.accepting.done()

    async def wait_closed(self) -> None:
        tasks = [self.accepting, *self.pending]
        await asyncio.gather(*tasks, return_exceptions=True)
