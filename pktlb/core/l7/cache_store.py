"""The proxy's response cache: stored answers by URL, bounded in bytes and in entries, least recently used out first.

    store = CacheStore(max_bytes=16 << 20, max_entries=1000, max_object_bytes=1 << 20)
    entry = store.get(key, now)             # a fresh entry, or None (a miss; a stale entry is dropped)
    store.put(key, entry)                   # evicts the least recently used until it fits

The key is what makes two requests "the same": the host and the target (path and query) of a GET.
An entry's size counts its body and its headers, so a flood of tiny answers cannot grow the store
past ``max_bytes`` either.  The counters say what the cache did: ``hits`` (each one a request no
backend saw), ``misses``, ``stored``, ``evicted`` (pushed out for room), ``expired`` (found stale),
``too_big`` (answers over ``max_object_bytes``, never kept), and ``bypass`` by reason (requests the
cache may not answer, answers it may not keep).  Pure: no clock of its own, the caller passes ``now``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

from pktlb.core.l7.headers import Header

CacheKey = tuple[str, bytes]  # (host, target)


@dataclass(frozen=True)
class CacheConfig:
    max_bytes: int = 16 * 1024 * 1024
    max_entries: int = 1000
    max_object_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CacheEntry:
    status: int
    reason: bytes
    headers: tuple[Header, ...]
    body: bytes
    stored_at: float
    lifetime: float  # seconds it may be served from stored_at

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(n) + len(v) + 4 for n, v in self.headers) + 64

    def age(self, now: float) -> int:
        return max(0, int(now - self.stored_at))

    def fresh(self, now: float) -> bool:
        return now - self.stored_at < self.lifetime


class CacheStore:
    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.entries: OrderedDict[CacheKey, CacheEntry] = OrderedDict()  # least recently used first
        self.bytes = 0
        self.counters: Counter[str] = Counter()
        self.bypass: Counter[str] = Counter()

    def get(self, key: CacheKey, now: float) -> CacheEntry | None:
        entry = self.entries.get(key)
        if entry is not None and not entry.fresh(now):
            self._drop(key)
            self.counters["expired"] += 1
            entry = None
        if entry is None:
            self.counters["misses"] += 1
            return None
        self.entries.move_to_end(key)
        self.counters["hits"] += 1
        return entry

    def put(self, key: CacheKey, entry: CacheEntry) -> bool:
        """Keep ``entry`` (replacing any under ``key``); False when it is too big to keep at all."""
        if key in self.entries:
            self._drop(key)
        if len(entry.body) > self.config.max_object_bytes or entry.size > self.config.max_bytes:
            self.counters["too_big"] += 1
            return False
        while self.entries and (self.bytes + entry.size > self.config.max_bytes
                                or len(self.entries) >= self.config.max_entries):
            self._drop(next(iter(self.entries)))
            self.counters["evicted"] += 1
        self.entries[key] = entry
        self.bytes += entry.size
        self.counters["stored"] += 1
        return True

    def forget(self, key: CacheKey) -> None:
        if key in self.entries:
            self._drop(key)

    def _drop(self, key: CacheKey) -> None:
        self.bytes -= self.entries.pop(key).size

    def figures(self) -> dict[str, object]:
        hits, misses = self.counters["hits"], self.counters["misses"]
        looked_up = hits + misses
        return {"entries": len(self.entries), "bytes": self.bytes, "max_bytes": self.config.max_bytes,
                "max_entries": self.config.max_entries, "hits": hits, "misses": misses,
                "hit_ratio": round(hits / looked_up, 4) if looked_up else None,
                "backend_requests_saved": hits, "stored": self.counters["stored"],
                "evicted": self.counters["evicted"], "expired": self.counters["expired"],
                "too_big": self.counters["too_big"], "bypass": dict(sorted(self.bypass.items()))}
