"""Per-client request rate limiting: one token bucket per client address, the table bounded.

Each client address has a bucket of ``burst`` tokens that refills at ``rate`` tokens per second; a
request takes one token, and a request that finds the bucket empty is refused (429 ``rate_limited``)
before any backend sees it.  So a client may send ``burst`` requests at once, and ``rate`` per
second for ever after; a client that floods is held to ``rate`` while every other client keeps its
own full bucket.  The table keeps at most ``max_clients`` buckets, the least recently seen dropped
first (a dropped client starts again with a full bucket: memory stays bounded whatever the number
of addresses).  Pure: the caller passes the time.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    rate: float  # tokens (requests) per second
    burst: int  # bucket size
    max_clients: int = 10_000


class TokenBuckets:
    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, last seen)
        self.evicted = 0

    def allow(self, client: str, now: float) -> bool:
        """Take a token for a request from ``client`` at ``now``; False when its bucket is empty."""
        limit = self.limit
        tokens, last = self.buckets.pop(client, (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + max(0.0, now - last) * limit.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self.buckets[client] = (tokens, now)
        while len(self.buckets) > limit.max_clients:
            self.buckets.popitem(last=False)
            self.evicted += 1
        return allowed

    def figures(self) -> dict[str, object]:
        return {"rate": self.limit.rate, "burst": self.limit.burst, "clients": len(self.buckets),
                "max_clients": self.limit.max_clients, "evicted": self.evicted}
