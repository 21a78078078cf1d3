"""What one L7 service holds while it runs: its plan in force, its backends' pools and live loads, its counters.

The control plane installs a new ``ServicePlan`` here on every change; requests read ``plan`` once
when they arrive.  On each install the pools follow the plan: a backend that may take no new
requests (down, draining, weight 0) has its idle connections closed, a removed backend loses its
pool, a backend whose address or port changed gets a new one.  Connections carrying a request
finish their exchange and are closed then, since they no longer belong to a pool.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from pktlb.core.l7.cache_store import CacheStore
from pktlb.core.l7.plan import ServicePlan
from pktlb.core.l7.ratelimit import TokenBuckets
from pktlb.core.l7.stats import ProxyStats, ServiceCounters
from pktlb.core.sched.base import BackendLoad
from pktlb.daemon.proxy.pool import BackendPool

log = logging.getLogger("pktlb.proxy")


class ServiceRuntime:
    def __init__(self, plan: ServicePlan, stats: ProxyStats, loop: asyncio.AbstractEventLoop, *,
                 backend_ssl: ssl.SSLContext | None = None) -> None:
        self.name = plan.config.name
        self.backend_ssl = backend_ssl  # TLS toward the backends ([service.l7.tls] backend = "tls"), or None
        self.plan = plan
        self.stats = stats
        self.counters: ServiceCounters = stats.service(self.name)
        self.loop = loop
        self.pools: dict[str, BackendPool] = {}
        self.loads: dict[str, BackendLoad] = {}  # per backend: requests in flight (lc), response time (lrt)
        self.cache: CacheStore | None = None  # [service.l7.cache]: stored answers (``cache``)
        self.limiter: TokenBuckets | None = None  # [service.l7.filter] rate: a token bucket per client
        self.install(plan)

    def install(self, plan: ServicePlan) -> None:
        self.plan = plan
        l7 = plan.l7
        if l7.cache is None:
            self.cache = None
        elif self.cache is None or self.cache.config != l7.cache:  # new bounds: start afresh
            self.cache = CacheStore(l7.cache)
        limit = l7.filter.rate_limit if l7.filter is not None else None
        if limit is None:
            self.limiter = None
        elif self.limiter is None or self.limiter.limit != limit:
            self.limiter = TokenBuckets(limit)
        for name in list(self.pools):
            if name not in plan.backends:
                self.pools.pop(name).close_idle()
        for be in plan.backends.values():
            pool = self.pools.get(be.name)
            if pool is not None and (pool.address, pool.port) != (be.address, be.port):
                pool.close_idle()
                pool = None
            if pool is None:
                pool = self.pools[be.name] = BackendPool(
                    be.name, be.address, be.port, self.stats.backend(self.name, be.name),
                    max_idle=l7.pool_max_idle, idle_timeout=l7.pool_idle_timeout, ssl_context=self.backend_ssl)
            pool.max_idle, pool.idle_timeout = l7.pool_max_idle, l7.pool_idle_timeout
            if not be.eligible:
                pool.close_idle()
            self.loads.setdefault(be.name, BackendLoad())

    def load(self, backend: str) -> BackendLoad:
        load = self.loads.get(backend)
        if load is None:
            load = self.loads[backend] = BackendLoad()
        return load

    def sweep(self) -> None:
        """Close pooled connections idle for too long (run about once a second)."""
        now = self.loop.time()
        for pool in self.pools.values():
            pool.sweep(now)

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close_idle()
