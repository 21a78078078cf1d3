"""Mod-N hashing: ``hash`` (5-tuple) and ``sh`` (source address).

Both map a stable hash onto a weighted list of backends with ``hash % len(list)``: each backend
appears ``weight / gcd(weights)`` times, so shares follow the weights.  This is the textbook
scheme that consistent hashing improves on: when a backend leaves, the list gets shorter and
almost every flow changes backend (``pktlb simulate --remove`` shows it next to Maglev).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import gcd
from typing import TYPE_CHECKING, ClassVar

from pktlb.core.flowkey import src_hash
from pktlb.core.sched.base import BackendLoad, Scheduler

if TYPE_CHECKING:
    from pktlb.core.flowkey import FlowKey
    from pktlb.core.snapshot import BackendView


def weighted_list(backends: Sequence[BackendView]) -> tuple[BackendView, ...]:
    """Each backend repeated weight/gcd times, backends kept together in the given order."""
    if not backends:
        return ()
    step = 0
    for b in backends:
        step = gcd(step, b.weight)
    return tuple(b for b in backends for _ in range(b.weight // step))


class _ModNScheduler(Scheduler):
    hashed: ClassVar[str] = ""  # what is hashed, for explain()

    def __init__(self, backends: Sequence[BackendView], *, seed: int, table_size: int = 65537) -> None:
        super().__init__(backends, seed=seed, table_size=table_size)
        self._list = weighted_list(self.backends)

    def _hash(self, key: FlowKey, flow_hash: int) -> int:
        raise NotImplementedError

    def lookup_table(self) -> tuple[BackendView, ...]:
        return self._list

    def pick(self, key: FlowKey, flow_hash: int, loads: Mapping[str, BackendLoad]) -> BackendView | None:
        entries = self._list
        return entries[self._hash(key, flow_hash) % len(entries)] if entries else None

    def explain(self, key: FlowKey, flow_hash: int, loads: Mapping[str, BackendLoad]) -> str:
        if not self._list:
            return f"{self.name}: no eligible backend"
        h = self._hash(key, flow_hash)
        index = h % len(self._list)
        return (f"{self.name}: {self.hashed} hash 0x{h:08x} mod {len(self._list)} (weighted entries) "
                f"= {index} -> {self._list[index].name}")


class FlowHashScheduler(_ModNScheduler):
    """``hash``: the 5-tuple flow hash modulo the weighted backend list."""

    name = "hash"
    summary = "5-tuple hash mod N"
    hashed = "5-tuple"
    hash_input = "flow"

    def _hash(self, key: FlowKey, flow_hash: int) -> int:
        return flow_hash

    def pick(self, key: FlowKey, flow_hash: int, loads: Mapping[str, BackendLoad]) -> BackendView | None:
        entries = self._list
        return entries[flow_hash % len(entries)] if entries else None


class SourceHashScheduler(_ModNScheduler):
    """``sh``: the client address's hash modulo the weighted list: one client, one backend."""

    name = "sh"
    summary = "source-address hash mod N"
    hashed = "source"
    hash_input = "source"

    def _hash(self, key: FlowKey, flow_hash: int) -> int:
        return src_hash(key[1], self.seed)
