"""One request through the proxy to a backend and its response back: connect, send, relay, by named outcome.

    pick a backend (the route's scheduler) -> a pooled connection, or a new one
    -> request head, then the body as it arrives (bounded, with a deadline per read)
    -> response head within backend_timeout -> response body to the client -> the connection back to its pool

Retries, where the request is sure not to have been served twice:
- a backend that refuses the connection (or does not accept it within ``connect_timeout``) never saw
  the request: another backend of the pool is tried, up to ``retries`` more;
- a connection that closes before a single byte of response (a pooled connection the backend had
  just closed, or a backend killed with the request in flight) is retried elsewhere only for an
  idempotent request without a body (RFC 9110 section 9.2.2), which can safely run twice.
Everything else ends the request with a named reason: 502 ``backend_reset`` or
``backend_bad_response``, 504 ``backend_timeout``, or, once the response has begun, a cut client
connection (``backend_cut``), since the status line has already gone.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

import h11

from pktlb.core.flowkey import FlowKey
from pktlb.core.l7.headers import response_headers
from pktlb.core.l7.plan import RoutePlan, ServicePlan
from pktlb.core.l7.stats import status_class
from pktlb.core.l7.sticky import sticky_outcome, write_response
from pktlb.core.snapshot import BackendView
from pktlb.daemon.proxy.cache import ResponseCapture
from pktlb.daemon.proxy.http_stream import HttpStream
from pktlb.daemon.proxy.pool import BackendPool, Upstream
from pktlb.daemon.proxy.service import ServiceRuntime

log = logging.getLogger("pktlb.proxy")
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
SOCKET_ERRORS = (ConnectionError, OSError)
FLUSH_BYTES = 64 * 1024  # a response body is written at least every this many bytes


class Rejected(Exception):
    """The request ends with the proxy's own answer (or a closed connection) for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _BackendFailed(Exception):
    def __init__(self, reason: str, empty: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.empty = empty  # no byte of a response arrived: the backend may never have seen the request


@dataclass(slots=True)
class Attempt:
    backend: BackendView
    pool: BackendPool
    upstream: Upstream
    reused: bool


class Exchange:
    """Forwards ``request`` (already read up to its head from ``client``) over ``route``."""

    def __init__(self, rt: ServiceRuntime, plan: ServicePlan, client: HttpStream, request: h11.Request,
                 outbound: h11.Request, route: RoutePlan, request_hash: int, has_body: bool, *,
                 asked: str | None = None, capture: ResponseCapture | None = None,
                 key: FlowKey | None = None) -> None:
        self.key = key or (6, 0, 0, 0, 0)  # the client connection (``sh`` hashes its source address)
        self.rt, self.client, self.request, self.outbound = rt, client, request, outbound
        self.capture = capture  # keeps the answer for the response cache (``cache``), or None
        self.asked = asked  # the backend the request's persistence cookie names (pktlb.core.l7.sticky)
        self.plan, self.route, self.request_hash, self.has_body = plan, route, request_hash, has_body
        self.l7 = plan.l7
        self.refused: list[str] = []  # backends that refused this request's connection
        self.attempts = 0
        self.last_failure = "no_backend"  # the reason given if no backend is left to try
        self.max_attempts = 2 + self.l7.retries

    async def run(self) -> None:
        """Forward and relay; raises ``Rejected`` when the proxy must answer (or cut) instead."""
        while True:
            attempt = await self._connect()
            try:
                response = await self._send_and_read_head(attempt)
            except _BackendFailed as failure:
                self._settle(attempt, ok=False)
                counters = self.rt.stats.backend(self.rt.name, attempt.backend.name)
                counters.failures[failure.reason] += 1
                self.last_failure = failure.reason
                if failure.empty and self._may_repeat():
                    if not attempt.reused:  # a fresh connection failed: that backend is in trouble
                        self.refused.append(attempt.backend.name)
                    continue
                raise Rejected(failure.reason) from None
            except BaseException:  # the client failed (Rejected), or the proxy is stopping
                self._settle(attempt, ok=False)
                raise
            await self._relay(attempt, response)
            return

    def _may_repeat(self) -> bool:
        return self.request.method in IDEMPOTENT and not self.has_body and self.attempts < self.max_attempts

    # -- a connection ---------------------------------------------------------------------------
    async def _connect(self) -> Attempt:
        rt, loop = self.rt, self.rt.loop
        while self.attempts < self.max_attempts:
            backend = self.plan.pick(self.route, self.request_hash, rt.loads, self.refused, self.asked, self.key)
            if backend is None:
                break
            pool = rt.pools.get(backend.name)
            if pool is None:  # removed since the request arrived
                self.refused.append(backend.name)
                continue
            self.attempts += 1
            upstream = pool.take(loop.time())
            if upstream is not None:
                return Attempt(backend, pool, upstream, reused=True)
            try:
                upstream = await pool.connect(loop.time() + self.l7.connect_timeout)
            except TimeoutError:
                self.last_failure = "backend_connect_timeout"
            except ssl.SSLError:
                self.last_failure = "backend_tls_failed"
            except SOCKET_ERRORS:
                self.last_failure = "backend_refused"
            else:
                return Attempt(backend, pool, upstream, reused=False)
            rt.stats.backend(rt.name, backend.name).failures[self.last_failure] += 1
            self.refused.append(backend.name)
            if len(self.refused) > self.l7.retries:
                break
        raise Rejected(self.last_failure)

    def _settle(self, attempt: Attempt, ok: bool) -> None:
        self.rt.load(attempt.backend.name).active_flows -= 1
        if ok:
            attempt.pool.give_back(attempt.upstream, self.rt.loop.time())
        else:
            attempt.pool.discard(attempt.upstream)

    # -- the request out, the response head in --------------------------------------------------
    async def _send_and_read_head(self, attempt: Attempt) -> h11.Response:
        rt, upstream = self.rt, attempt.upstream
        loop = rt.loop
        rt.load(attempt.backend.name).active_flows += 1
        rt.stats.backend(rt.name, attempt.backend.name).requests += 1
        upstream.exchanges += 1
        before = upstream.bytes_in
        started = loop.time()
        try:
            upstream.queue(self.outbound)
            if self.has_body:
                await self._relay_request_body(upstream)
            else:
                upstream.queue(h11.EndOfMessage())  # head and end leave in one write
            await upstream.flush(loop.time() + self.l7.backend_timeout)
        except SOCKET_ERRORS:
            pass  # the backend may have answered early (and closed): its answer is read below
        except TimeoutError:
            raise _BackendFailed("backend_timeout", empty=False) from None
        deadline = loop.time() + self.l7.backend_timeout
        try:
            while True:
                event = await upstream.next_event(deadline)
                if isinstance(event, h11.Response):
                    break
                if not isinstance(event, h11.InformationalResponse):  # 1xx: not relayed (Expect is answered here)
                    raise _BackendFailed("backend_reset", empty=upstream.bytes_in == before)
        except TimeoutError:
            raise _BackendFailed("backend_timeout", empty=False) from None
        except h11.RemoteProtocolError:
            empty = upstream.bytes_in == before
            raise _BackendFailed("backend_reset" if empty else "backend_bad_response", empty) from None
        except SOCKET_ERRORS:
            raise _BackendFailed("backend_reset", empty=upstream.bytes_in == before) from None
        if event.status_code == 101:  # an upgrade nobody asked for (Upgrade is not forwarded)
            raise _BackendFailed("backend_bad_response", empty=False)
        rt.load(attempt.backend.name).observe_rtt(loop.time() - started)
        return event

    async def _relay_request_body(self, upstream: Upstream) -> None:
        """Client body -> backend as it arrives, written whenever the client makes us wait; client faults
        raise ``Rejected`` (the connection is lost).  Ends with the EndOfMessage queued, not flushed."""
        client, l7, loop = self.client, self.l7, self.rt.loop
        if client.conn.they_are_waiting_for_100_continue:
            await upstream.flush(loop.time() + l7.backend_timeout)  # the head first, then "go on" to the client
            await self._to_client(h11.InformationalResponse(status_code=100, headers=[]), flush=True)
        received = 0
        while True:
            try:
                event = client.conn.next_event()
                if event is h11.NEED_DATA:
                    # About to wait for the client: the backend gets what we have (its faults propagate).
                    await upstream.flush(loop.time() + l7.backend_timeout)
                    try:
                        event = await client.next_event(loop.time() + l7.body_timeout)
                    except TimeoutError:
                        raise Rejected("body_timeout") from None
                    except SOCKET_ERRORS:
                        raise Rejected("client_gone") from None
            except h11.RemoteProtocolError:
                raise Rejected("bad_request") from None
            if isinstance(event, h11.Data):
                received += len(event.data)
                if received > l7.max_body_bytes:
                    raise Rejected("body_too_large")
                upstream.queue(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                upstream.queue(h11.EndOfMessage())
                return
            else:  # ConnectionClosed in the middle of the body
                raise Rejected("client_gone")

    # -- the response back --------------------------------------------------------------------
    async def _relay(self, attempt: Attempt, response: h11.Response) -> None:
        """Response head and body to the client; a small response leaves in one write."""
        rt, upstream, l7, loop = self.rt, attempt.upstream, self.l7, self.rt.loop
        klass = status_class(response.status_code)
        rt.stats.backend(rt.name, attempt.backend.name).responses[klass] += 1
        ok = False
        headers = response_headers(response.headers.raw_items())
        if l7.cookie is not None:
            headers = write_response(headers, l7.cookie, attempt.backend.name, self.asked)
            rt.counters.sticky[sticky_outcome(self.asked, attempt.backend.name)] += 1
        capture = self.capture
        if capture is not None:
            capture.start(response.status_code, response.reason, headers)
        try:
            await self._to_client(h11.Response(status_code=response.status_code, reason=response.reason,
                                               headers=headers))
            rt.counters.responses[klass] += 1
            while True:
                try:
                    event = upstream.conn.next_event()
                    if event is h11.NEED_DATA:  # about to wait for the backend: the client gets what we have
                        await self._to_client(None, flush=True)
                        event = await upstream.next_event(loop.time() + l7.backend_timeout)
                except (TimeoutError, h11.RemoteProtocolError, *SOCKET_ERRORS):
                    raise Rejected("backend_cut") from None
                if isinstance(event, h11.Data):
                    if capture is not None:
                        capture.add(event.data)
                    await self._to_client(h11.Data(data=event.data), flush=self.client.pending_bytes > FLUSH_BYTES)
                elif isinstance(event, h11.EndOfMessage):
                    await self._to_client(h11.EndOfMessage(), flush=True)
                    if capture is not None:
                        capture.finish(loop.time())
                    ok = True
                    return
                else:  # ConnectionClosed before the end of the body
                    raise Rejected("backend_cut")
        finally:
            self._settle(attempt, ok)

    async def _to_client(self, event: h11.Event | None, flush: bool = False) -> None:
        """Queue ``event`` for the client, and write if ``flush``; a client that does not read is cut."""
        if event is not None:
            self.client.queue(event)
        if flush:
            try:
                await self.client.flush(self.rt.loop.time() + self.l7.body_timeout)
            except TimeoutError:
                raise Rejected("client_stalled") from None
            except SOCKET_ERRORS:
                raise Rejected("client_gone") from None
