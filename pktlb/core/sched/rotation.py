"""Rotation schedulers: ``rr`` (round robin) and ``wrr`` (smooth weighted round robin).

Both keep a position that advances with every pick, so they are stateful: a new snapshot starts
a new rotation, and ``explain`` makes a pick (call it instead of ``pick``, not after it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import cycle
from math import gcd
from typing import TYPE_CHECKING

from pktlb.core.sched.base import BackendLoad, Scheduler

if TYPE_CHECKING:
    from pktlb.core.flowkey import FlowKey
    from pktlb.core.snapshot import BackendView

# Above this many (entries x backends) the wrr cycle is not precomputed but stepped live.
_MAX_PRECOMPUTED_WORK = 2_000_000


class RoundRobinScheduler(Scheduler):
    """``rr``: each backend in turn, weights ignored."""

    name = "rr"
    summary = "round robin"
    weighted = False

    def __init__(self, backends: Sequence[BackendView], *, seed: int, table_size: int = 65537) -> None:
        super().__init__(backends, seed=seed, table_size=table_size)
        self._turns = 0
        self._next = cycle(self.backends).__next__ if self.backends else None

    def pick(self, key: FlowKey, flow_hash: int, loads: Mapping[str, BackendLoad]) -> BackendView | None:
        if self._next is None:
            return None
        self._turns += 1
        return self._next()

    def explain(self, key: FlowKey, flow_hash: int, loads: Mapping[str, BackendLoad]) -> str:
        chosen = self.pick(key, flow_hash, loads)
        if chosen is None:
            return "rr: no eligible backend"
        return f"rr: turn {self._turns} of a rotation over {len(self.backends)} backends -> {chosen.name}"


class SmoothWeights:
    """Nginx's smooth weighted round robin, stepped one pick at a time.

    Each step every backend's current value grows by its weight, the largest is picked and the
    total weight subtracted from it.  Over ``sum(weights)`` steps each backend is picked
    ``weight`` times, spread out: weights 5:2 give a a b a a b a, not a a a a a b b.
    """

    def __init__(self, weights: Sequence[int]) -> None:
        self.weights = list(weights)
        self.total = sum(self.weights)
        self.current = [0] * len(self.weights)

    def step(self) -> int:
        current, weights = self.current, self.weights
        best = 0
        for i, w in enumerate(weights):
            current[i] += w
            if current[i] > current[best]:
                best = i
        current[best] -= self.total
        return best


class WeightedRoundRobinScheduler(Scheduler):
    """``wrr``: smooth weighted round robin (weights interleave rather than burst)."""

    name = "wrr"
    summary = "smooth weighted round robin"

    def __init__(self, backends: Sequence[BackendView], *, seed: int, table_size: int = 65537) -> None:
        super().__init__(backends, seed=seed, table_size=table_size)
        step = 0
        for b in self.backends:
            step = gcd(step, b.weight)
        self._smooth = SmoothWeights([b.weight // step for b in self.backends]) if self.backends else None
        self._turns = 0
        self._next = None
        if self._smooth and self._smooth.total * len(self.backends) <= _MAX_PRECOMPUTED_WORK:
            # One full period of the sequence, replayed: a pick is then a single next() call.
            order = tuple(self.backends[self._smooth.step()] for _ in range(self._smooth.total))
            self._next = cycle(order).__next__

    def pick(self, key: FlowKey, flow_hash: int, loads: Mapping[str, BackendLoad]) -> BackendView | None:
        self._turns += 1
        if self._next is not None:
            return self._next()
        if self._smooth is None:
            return None
        return self.backends[self._smooth.step()]

    def explain(self, key: FlowKey, flow_hash: int, loads: Mapping[str, BackendLoad]) -> str:
        chosen = self.pick(key, flow_hash, loads)
        if chosen is None:
            return "wrr: no eligible backend"
        period = self._smooth.total if self._smooth else 0
        weights = ":".join(str(b.weight) for b in self.backends)
        return (f"wrr: turn {self._turns} (position {(self._turns - 1) % period + 1} of a {period}-turn cycle, "
                f"weights {weights}) -> {chosen.name}")
