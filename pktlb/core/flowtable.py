"""The flow table: 5-tuple -> backend, bounded, LRU-evicted, with per-state idle timeouts.

An ``OrderedDict`` keeps entries in least-recently-used order.  A hit refreshes an entry's
position at most once a second (``REFRESH``), so LRU order is exact to a second and a busy flow
costs one ``move_to_end`` per second instead of per packet.  Because the order follows last use,
``expire`` only walks the old end and stops at the first entry younger than the shortest timeout.

Full-NAT flows also own a source port from the service's SNAT range; the reverse index maps
(proto, SNAT address, port) back to the flow for replies.  With several workers each worker owns
a disjoint slice of the range, so a reply's port says which worker's table holds its flow.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pktlb.core.config import FlowConfig
from pktlb.core.flowkey import FlowKey
from pktlb.core.sched.base import BackendLoad

if TYPE_CHECKING:
    from pktlb.core.decision import Decision
    from pktlb.core.snapshot import BackendView

SYN, EST, FIN, CLOSED, UDP = "syn", "est", "fin", "closed", "udp"
REFRESH = 1.0


class FlowEntry:
    __slots__ = ("key", "service", "backend", "state", "created", "last_seen", "packets_in", "bytes_in",
                 "packets_out", "bytes_out", "snat_addr", "snat_port", "nat_deltas", "syn_time", "load", "decision",
                 "reply_decision")

    def __init__(self, key: FlowKey, service: str, backend: str, state: str, now: float, load: BackendLoad) -> None:
        self.key = key
        self.service = service
        self.backend = backend
        self.state = state
        self.created = now
        self.last_seen = now
        self.packets_in = self.bytes_in = self.packets_out = self.bytes_out = 0
        self.snat_addr = 0
        self.snat_port = 0
        # full-NAT: in ip, in l4, in pseudo-header, out ip, out l4, out pseudo-header (set per flow)
        self.nat_deltas: tuple[int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0)
        self.syn_time: float | None = now if state == SYN else None
        self.load = load
        # The engine's decision for this flow's hits, reused while backend and checksum state stay the same:
        # (BackendView, partial, Decision).  Saves an allocation per forwarded packet.
        self.decision: tuple[BackendView, bool, Decision] | None = None
        self.reply_decision: tuple[BackendView, bool, Decision] | None = None  # the same for its replies

    def as_dict(self) -> dict[str, object]:
        from pktlb.core.packet.addr import int_to_ip
        from pktlb.core.packet.ipv4 import PROTO_NAMES

        proto, src, dst, sport, dport = self.key
        row: dict[str, object] = {
            "proto": PROTO_NAMES.get(proto, str(proto)), "client": f"{int_to_ip(src)}:{sport}",
            "vip": f"{int_to_ip(dst)}:{dport}", "service": self.service, "backend": self.backend,
            "state": self.state, "age": None, "packets_in": self.packets_in, "bytes_in": self.bytes_in,
            "packets_out": self.packets_out, "bytes_out": self.bytes_out,
        }
        if self.snat_port:
            row["snat"] = f"{int_to_ip(self.snat_addr)}:{self.snat_port}"
        return row


class SnatPorts:
    """Free source ports of one SNAT address, for one worker's slice of the configured range."""

    def __init__(self, first: int, last: int, worker: int = 0, workers: int = 1) -> None:
        span = (last - first + 1) // workers
        lo = first + worker * span
        hi = last if worker == workers - 1 else lo + span - 1
        self.range = (lo, hi)
        self.free: deque[int] = deque(range(lo, hi + 1))

    def take(self) -> int:
        return self.free.popleft() if self.free else 0

    def give(self, port: int) -> None:
        self.free.append(port)


class FlowTable:
    def __init__(self, config: FlowConfig, worker: int = 0, workers: int = 1) -> None:
        self.config = config
        self.max_entries = config.max_entries
        self.worker, self.workers = worker, workers
        self.entries: OrderedDict[FlowKey, FlowEntry] = OrderedDict()
        self.snat_index: dict[tuple[int, int, int], FlowEntry] = {}
        self.snat_pools: dict[tuple[int, int, int], SnatPorts] = {}
        self.loads: dict[str, dict[str, BackendLoad]] = {}
        self.timeouts = {SYN: config.syn_timeout, EST: config.tcp_timeout, FIN: config.fin_timeout,
                         CLOSED: config.fin_timeout, UDP: config.udp_timeout}
        self.min_timeout = min(self.timeouts.values())
        self.evicted = 0
        self.expired = 0
        self.inserted = 0

    def reconfigure(self, config: FlowConfig) -> dict[str, object]:
        """Apply a reloaded ``[flows]`` section in place: new idle timeouts (the next lookup or
        ``expire`` uses them) and a new bound (the least recently used entries beyond it are
        evicted now).  The entries that stay keep their backends.  Returns what changed."""
        changed: dict[str, object] = {}
        for name in ("max_entries", "syn_timeout", "tcp_timeout", "fin_timeout", "udp_timeout"):
            old, new = getattr(self.config, name), getattr(config, name)
            if old != new:
                changed[name] = [old, new]
        self.config = config
        self.max_entries = config.max_entries
        self.timeouts = {SYN: config.syn_timeout, EST: config.tcp_timeout, FIN: config.fin_timeout,
                         CLOSED: config.fin_timeout, UDP: config.udp_timeout}
        self.min_timeout = min(self.timeouts.values())
        evicted = 0
        while len(self.entries) > self.max_entries:
            self.remove(next(iter(self.entries.values())))
            evicted += 1
        self.evicted += evicted
        if evicted:
            changed["evicted"] = evicted
        return changed

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[FlowEntry]:
        return iter(list(self.entries.values()))

    def loads_for(self, service: str) -> dict[str, BackendLoad]:
        loads = self.loads.get(service)
        if loads is None:
            loads = self.loads[service] = {}
        return loads

    def load(self, service: str, backend: str) -> BackendLoad:
        loads = self.loads_for(service)
        load = loads.get(backend)
        if load is None:
            load = loads[backend] = BackendLoad()
        return load

    def lookup(self, key: FlowKey, now: float) -> FlowEntry | None:
        """The live entry for ``key``, refreshed; an idle-expired entry is removed and None returned."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        idle = now - entry.last_seen
        if idle > self.timeouts[entry.state]:
            self.remove(entry)
            self.expired += 1
            return None
        if idle >= REFRESH:
            self.entries.move_to_end(key)
        entry.last_seen = now
        return entry

    def insert(self, key: FlowKey, service: str, backend: str, state: str, now: float) -> FlowEntry:
        old = self.entries.get(key)
        if old is not None:
            self.remove(old)
        while len(self.entries) >= self.max_entries:
            self.remove(next(iter(self.entries.values())))
            self.evicted += 1
        load = self.load(service, backend)
        entry = FlowEntry(key, service, backend, state, now, load)
        self.entries[key] = entry
        load.active_flows += 1
        self.inserted += 1
        return entry

    def rebind(self, entry: FlowEntry, backend: str) -> None:
        """Move an entry to another backend (its backend went down and the policy is reschedule)."""
        entry.load.active_flows -= 1
        entry.backend = backend
        entry.load = self.load(entry.service, backend)
        entry.load.active_flows += 1

    def remove(self, entry: FlowEntry) -> None:
        if self.entries.pop(entry.key, None) is None:
            return
        entry.load.active_flows -= 1
        if entry.snat_port:
            index_key = (entry.key[0], entry.snat_addr, entry.snat_port)
            self.snat_index.pop(index_key, None)
            pool = self.snat_pools.get((entry.key[0], entry.snat_addr, 0))
            if pool is not None:
                pool.give(entry.snat_port)

    def allocate_snat(self, entry: FlowEntry, snat_addr: int, ports: tuple[int, int]) -> int:
        """Give ``entry`` a free source port on ``snat_addr``; 0 when the worker's slice is exhausted."""
        pool_key = (entry.key[0], snat_addr, 0)
        pool = self.snat_pools.get(pool_key)
        if pool is None:
            pool = self.snat_pools[pool_key] = SnatPorts(ports[0], ports[1], self.worker, self.workers)
        port = pool.take()
        if port:
            entry.snat_addr, entry.snat_port = snat_addr, port
            self.snat_index[(entry.key[0], snat_addr, port)] = entry
        return port

    def by_snat(self, proto: int, snat_addr: int, port: int, now: float) -> FlowEntry | None:
        entry = self.snat_index.get((proto, snat_addr, port))
        if entry is None:
            return None
        return self.lookup(entry.key, now)

    def expire(self, now: float, budget: int = 10_000) -> int:
        """Remove idle-expired entries from the old end; at most ``budget`` looked at.  Returns how many."""
        removed = 0
        horizon = now - self.min_timeout
        timeouts = self.timeouts
        for entry in list(self._oldest(budget)):
            if entry.last_seen > horizon:
                break
            if now - entry.last_seen > timeouts[entry.state]:
                self.remove(entry)
                removed += 1
        self.expired += removed
        return removed

    def _oldest(self, budget: int) -> Iterator[FlowEntry]:
        for i, entry in enumerate(self.entries.values()):
            if i >= budget:
                return
            yield entry

    def stats(self) -> dict[str, int]:
        return {"entries": len(self.entries), "max_entries": self.max_entries, "inserted": self.inserted,
                "evicted": self.evicted, "expired": self.expired}
