"""One client connection: its requests one after the other, each forwarded or answered by the proxy itself.

    accept -> read a request head (deadline: header_timeout; at most max_header_bytes, else 431)
           -> route it (Host, path) -> forward it (``forward.Exchange``) or answer it (404, 413, 503...)
           -> keep-alive? wait up to idle_timeout for the next request -> ...

Requests are served strictly in order, so a client that pipelines (sends its next requests before
the first answer) gets its answers in order: h11 keeps the early bytes in its buffer until the
current exchange ends.  The connection stays open only when h11 says both messages are complete
and neither side asked to close; any answer given before the request body was read closes it
(the unread body would otherwise be taken for the next request).  Nothing a client sends can
crash the loop: every failure ends as a named reason, counted, and a closed connection.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus

import h11

from pktlb.core.l7.cache_policy import request_verdict
from pktlb.core.l7.cache_store import CacheEntry
from pktlb.core.l7.headers import Hop, header, request_headers
from pktlb.core.l7.rejects import REJECTS, raw_answer, reject_answer
from pktlb.core.l7.routing import parse_target
from pktlb.core.l7.rules import RequestHead, first_refusal
from pktlb.core.l7.stats import status_class
from pktlb.core.l7.sticky import read_request
from pktlb.daemon.proxy.cache import ResponseCapture, answer_from_cache
from pktlb.daemon.proxy.forward import SOCKET_ERRORS, Exchange, Rejected
from pktlb.daemon.proxy.http_stream import HttpStream
from pktlb.daemon.proxy.service import ServiceRuntime

log = logging.getLogger("pktlb.proxy")
PROTOCOL_ERRORS = {431: "headers_too_large", 501: "not_implemented"}  # h11's status hints; else bad_request
EXPECT = frozenset({b"expect"})  # 100-continue is answered by the proxy itself, not forwarded


class ClientSession:
    def __init__(self, rt: ServiceRuntime, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.rt = rt
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=rt.plan.l7.max_header_bytes)
        self.client = HttpStream(conn, reader, writer)
        peer = writer.get_extra_info("peername") or ("", 0)
        local = writer.get_extra_info("sockname") or ("", 0)
        self.peer, self.local = (peer[0], peer[1]), (local[0], local[1])
        tls = writer.get_extra_info("ssl_object") is not None  # TLS was terminated here (``tls``)
        self.hop = Hop(client=peer[0], proto="https" if tls else "http", by=local[0])
        self.cut = False  # end with a reset: the client must see its response is incomplete
        self.method = b""  # of the request being served (an answer to HEAD has no body)

    async def run(self) -> None:
        rt, loop = self.rt, self.rt.loop
        rt.counters.connections += 1
        rt.counters.open_connections += 1
        try:
            deadline = loop.time() + rt.plan.l7.header_timeout
            while True:
                request = await self._read_head(deadline)
                if request is None or not await self._serve(request) or not self.client.reusable:
                    break
                self.client.conn.start_next_cycle()
                if not await self.client.wait_readable(loop.time() + rt.plan.l7.idle_timeout):
                    rt.counters.idle_closed += 1
                    break
                deadline = loop.time() + rt.plan.l7.header_timeout
        except asyncio.CancelledError:
            self.cut = True
            raise
        except Exception:  # a bug: this client is dropped, the proxy goes on
            log.exception("client %s:%s: internal error", *self.peer)
            rt.counters.rejects["internal_error"] += 1
            self.cut = True
        finally:
            rt.counters.open_connections -= 1
            if self.cut:
                self.client.close()
            else:
                await self.client.close_gracefully()

    async def _read_head(self, deadline: float) -> h11.Request | None:
        start = self.client.consumed
        try:
            event = await self.client.next_event(deadline)
        except TimeoutError:
            await self._answer("header_timeout")
            return None
        except h11.RemoteProtocolError as exc:
            await self._answer(PROTOCOL_ERRORS.get(exc.error_status_hint, "bad_request"))
            return None
        except SOCKET_ERRORS:
            return None
        if not isinstance(event, h11.Request):
            return None  # ConnectionClosed: the client is done
        if self.client.consumed - start > self.rt.plan.l7.max_header_bytes:
            # h11 refuses an incomplete head past the limit; one that arrived whole in a read is checked here.
            await self._answer("headers_too_large")
            return None
        return event

    async def _serve(self, request: h11.Request) -> bool:
        """Forward one request or answer it; False when the connection must close.

        head -> the service's rules (``pktlb.core.l7.rules``) -> a route -> the cache (``cache``) -> a live pool
        -> ``Exchange``."""
        rt = self.rt
        plan = rt.plan  # one plan for the whole request, whatever changes meanwhile
        rt.counters.requests += 1
        self.method = request.method
        length = header(request.headers, b"content-length")  # h11 checked it is a number
        chunked = header(request.headers, b"transfer-encoding") is not None
        has_body = chunked or length not in (None, b"0")
        if not has_body:
            self.client.conn.next_event()  # its EndOfMessage, which h11 has at once: the request is complete
        target = parse_target(request.target, header(request.headers, b"host"))
        head = RequestHead(method=request.method, target=target, content_length=None if length is None else int(length),
                           chunked=chunked, client=self.peer[0])
        if rt.limiter is not None and not rt.limiter.allow(self.peer[0], rt.loop.time()):
            return await self._answer("rate_limited")  # this client's token bucket is empty
        refused = first_refusal(plan.rules, head, rt.loop.time())
        if refused is not None:
            return await self._answer(refused)
        route = plan.route_for(target)
        if route is None:
            return await self._answer("no_route")
        capture = None
        if rt.cache is not None:  # a fresh stored answer ends the request here; else the answer may be kept
            verdict = request_verdict(request.method, request.headers.raw_items(), has_body)
            key = (target.host, target.origin_form)
            entry = rt.cache.get(key, rt.loop.time()) if verdict.lookup else None
            if entry is not None:
                return await self._answer_from_cache(entry)
            if not verdict.lookup:
                rt.cache.bypass[verdict.reason] += 1
            capture = ResponseCapture(rt.cache, key) if verdict.store else None
        if not route.eligible:
            return await self._answer("no_backend")
        headers, asked = request.headers.raw_items(), None
        if plan.l7.cookie is not None:  # persistence: the backend the cookie names, and the cookie taken out
            sticky = read_request(headers, plan.l7.cookie)
            headers, asked = sticky.headers, sticky.backend
        outbound = h11.Request(method=request.method, target=target.origin_form,
                               headers=request_headers(headers, self.hop, forwarded=plan.l7.forwarded_headers,
                                                       also_drop=EXPECT))
        request_hash = plan.request_hash(self.peer[0], self.peer[1], self.local[0], self.local[1])
        exchange = Exchange(rt, plan, self.client, request, outbound, route, request_hash, has_body, asked=asked,
                            capture=capture, key=plan.request_key(self.peer[0], self.peer[1], self.local[0],
                                                                  self.local[1]))
        try:
            await exchange.run()
        except Rejected as rejected:
            return await self._answer(rejected.reason)
        return True

    async def _answer_from_cache(self, entry: CacheEntry) -> bool:
        rt = self.rt
        try:
            await answer_from_cache(self.client, entry, self.method, rt.loop.time(),
                                    rt.loop.time() + rt.plan.l7.body_timeout)
        except (TimeoutError, *SOCKET_ERRORS):
            self.cut = True
            return False
        rt.counters.responses[status_class(entry.status)] += 1
        return self.client.reusable

    async def _answer(self, reason: str) -> bool:
        """The proxy's own answer for ``reason`` (or a cut connection); True when the connection may go on."""
        rt, client = self.rt, self.client
        rt.counters.rejects[reason] += 1
        if REJECTS[reason].status is None:
            self.cut = True
            return False
        status, headers, body = reject_answer(reason)
        conn = client.conn
        try:
            closing = conn.their_state is not h11.DONE
            if closing:
                headers = headers + [(b"Connection", b"close")]
            client.queue(h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase.encode()))
            if self.method != b"HEAD":
                client.queue(h11.Data(data=body))
            client.queue(h11.EndOfMessage())
            await client.flush(rt.loop.time() + rt.plan.l7.body_timeout)
        except (h11.LocalProtocolError, h11.RemoteProtocolError):  # h11 cannot frame it here: write it raw
            client.writer.write(raw_answer(reason))
            closing = True
        except (TimeoutError, *SOCKET_ERRORS):
            self.cut = True
            return False
        rt.counters.responses[status_class(status)] += 1
        return not closing and client.reusable
