"""The response cache at work: look a request up before it goes to a backend, keep its answer on the way back.

    session: request_verdict -> store.get(key) -> a hit: ``answer_from_cache`` (no backend involved)
                                               -> a miss: ``ResponseCapture`` rides along the exchange
    forward: response head -> capture.start (freshness decides: keep or not) -> capture.add(body pieces)
             -> end of the response -> capture.finish: the answer is stored

The rules (what may be stored and for how long) are pure and live in ``pktlb.core.l7.cache_policy``;
the bounded LRU store in ``pktlb.core.l7.cache_store``.  An answer served from the cache carries
``Age`` (seconds since it was stored) and ``Pktlb-Cache: hit``, so a student sees at once which
requests never reached a backend.
"""

from __future__ import annotations

import time

import h11

from pktlb.core.l7.cache_policy import freshness
from pktlb.core.l7.cache_store import CacheEntry, CacheKey, CacheStore
from pktlb.core.l7.headers import Header
from pktlb.daemon.proxy.http_stream import HttpStream

NOT_KEPT = frozenset({b"age", b"transfer-encoding", b"content-length"})  # re-made when the entry is served


class ResponseCapture:
    """Collects one response as it is relayed, and stores it once it is complete (if it may be)."""

    __slots__ = ("store", "key", "active", "status", "reason", "headers", "body", "lifetime")

    def __init__(self, store: CacheStore, key: CacheKey) -> None:
        self.store, self.key = store, key
        self.active = False
        self.status, self.reason = 0, b""
        self.headers: list[Header] = []
        self.body = bytearray()
        self.lifetime = 0.0

    def start(self, status: int, reason: bytes, headers: list[Header]) -> None:
        """The response head as the client gets it: keep collecting only if it may be stored."""
        self.lifetime, why = freshness(status, headers, time.time())
        if self.lifetime <= 0:
            self.store.bypass[why] += 1
            self.store.forget(self.key)  # a reload that got an uncacheable answer: the old one goes too
            return
        self.active = True
        self.status, self.reason = status, reason
        self.headers = [(n, v) for n, v in headers if n.lower() not in NOT_KEPT]

    def add(self, data: bytes) -> None:
        if not self.active:
            return
        self.body += data
        if len(self.body) > self.store.config.max_object_bytes:
            self.store.counters["too_big"] += 1
            self.active = False
            self.body = bytearray()

    def finish(self, now: float) -> None:
        """The response ended complete: store it (``now`` is the loop's clock, as the store's lookups use)."""
        if self.active:
            body = bytes(self.body)
            headers = tuple(self.headers) + ((b"Content-Length", str(len(body)).encode()),)
            self.store.put(self.key, CacheEntry(status=self.status, reason=self.reason, headers=headers, body=body,
                                                stored_at=now, lifetime=self.lifetime))
        self.active = False


async def answer_from_cache(client: HttpStream, entry: CacheEntry, method: bytes, now: float,
                            deadline: float) -> None:
    """Send a stored answer (the head only for HEAD); socket errors and TimeoutError propagate."""
    headers = list(entry.headers) + [(b"Age", str(entry.age(now)).encode()), (b"Pktlb-Cache", b"hit")]
    client.queue(h11.Response(status_code=entry.status, reason=entry.reason, headers=headers))
    if method != b"HEAD" and entry.body:
        client.queue(h11.Data(data=entry.body))
    client.queue(h11.EndOfMessage())
    await client.flush(deadline)
