"""``maglev``: Maglev consistent hashing (Eisenbud et al., NSDI 2016), with weights.

The table has M slots (M prime, default 65537).  Each backend walks its own permutation of the
slots, ``offset = h1(name) % M`` and ``skip = h2(name) % (M - 1) + 1`` (``h1``/``h2`` are
``flowkey.name_hash`` under two seeds derived from the configured seed), and in turn claims the
next slot of its permutation that is still empty, until every slot is taken.  A flow goes to
``table[flow_hash % M]``.

Weights use per-round credits (the scheme of Katran's MaglevHashV2): in every round each backend
earns ``weight / max_weight`` of a slot and claims one slot each time its credit reaches 1.  So
the heaviest backend claims a slot every round, one of half its weight every other round, and the
weights count in every round (not only the first), which keeps each share within a slot or so of
``weight / sum(weights)``.  Credits are kept as integers (add ``weight``, claim at ``max_weight``).

Backends are taken in name order, so the table depends only on the set of (name, weight) pairs,
the seed and M, not on the order of the configuration.  The table is built off the packet path
(by the control plane, when it builds a snapshot) and replaced as a whole; tables are memoised
for the last few backend sets, so a backend that flaps down and up costs one build.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from pktlb.core.flowkey import name_hash
from pktlb.core.sched.base import BackendLoad, Scheduler

if TYPE_CHECKING:
    from pktlb.core.flowkey import FlowKey
    from pktlb.core.snapshot import BackendView

DEFAULT_TABLE_SIZE = 65537
MIN_SLOTS_PER_BACKEND = 100  # below this the shares get coarse and removal moves too much
_SKIP_SEED_SALT = 0x5BD1E995  # makes the skip hash's seed differ from the offset hash's


def is_prime(n: int) -> bool:
    """Deterministic trial division (table sizes are at most a few million)."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def next_prime(n: int) -> int:
    """The smallest prime >= n (used to suggest a table size in error messages)."""
    while not is_prime(n):
        n += 1
    return n


def check_table_size(table_size: int, n_backends: int) -> None:
    """ValueError naming ``maglev_table_size``, its value and what is expected, unless the size is usable."""
    minimum = max(MIN_SLOTS_PER_BACKEND * n_backends, 2)
    if not is_prime(table_size):
        raise ValueError(f"maglev_table_size: got {table_size}, expected a prime number "
                         f"(e.g. {next_prime(max(table_size, minimum))}, or the default {DEFAULT_TABLE_SIZE})")
    if table_size < minimum:
        raise ValueError(f"maglev_table_size: got {table_size}, expected a prime of at least "
                         f"{MIN_SLOTS_PER_BACKEND} x {n_backends} backends = {minimum} "
                         f"(e.g. {next_prime(minimum)})")


def permutation(name: str, seed: int, table_size: int) -> tuple[int, int]:
    """A backend's (offset, skip): its preference list is offset, offset+skip, ... modulo M."""
    offset = name_hash(name, seed & 0xFFFFFFFF) % table_size
    skip = name_hash(name, (seed ^ _SKIP_SEED_SALT) & 0xFFFFFFFF) % (table_size - 1) + 1
    return offset, skip


def build_table(members: Sequence[tuple[str, int]], seed: int, table_size: int) -> tuple[int, ...]:
    """Fill a Maglev table: for each slot the index in ``members`` ((name, weight) pairs) of its owner.

    ``members`` must be non-empty with positive weights; ``table_size`` must be prime.
    """
    count = len(members)
    perms = [permutation(name, seed, table_size) for name, _ in members]
    position = [p[0] for p in perms]  # next slot each backend will try
    skips = [p[1] for p in perms]
    weights = [w for _, w in members]
    credit = [0] * count
    max_weight = max(weights)
    table = [-1] * table_size
    filled = 0
    m = table_size
    while True:
        for i in range(count):
            credit[i] += weights[i]
            if credit[i] < max_weight:
                continue
            credit[i] -= max_weight
            slot, skip = position[i], skips[i]
            while table[slot] >= 0:
                slot += skip
                if slot >= m:
                    slot -= m
            table[slot] = i
            slot += skip
            position[i] = slot - m if slot >= m else slot
            filled += 1
            if filled == m:
                return tuple(table)


@lru_cache(maxsize=8)
def _cached_table(members: tuple[tuple[str, int], ...], seed: int, table_size: int) -> tuple[int, ...]:
    return build_table(members, seed, table_size)


class MaglevScheduler(Scheduler):
    """Maglev consistent hashing: a precomputed table, one index per new flow."""

    name = "maglev"
    summary = "Maglev consistent hash (weighted lookup table)"
    consistent = True
    hash_input = "flow"

    def __init__(self, backends: Sequence[BackendView], *, seed: int, table_size: int = DEFAULT_TABLE_SIZE) -> None:
        super().__init__(backends, seed=seed, table_size=table_size)
        check_table_size(table_size, len(self.backends))
        self.table_size = table_size
        ordered = sorted(self.backends, key=lambda b: b.name)
        members = tuple((b.name, b.weight) for b in ordered)
        owners = _cached_table(members, seed, table_size) if ordered else ()
        # Backend per slot (what ``pick`` indexes) and backend name per slot (what deltas compare).
        self._slots: tuple[BackendView, ...] = tuple(ordered[i] for i in owners)
        self.table: tuple[str, ...] = tuple(members[i][0] for i in owners)

    def pick(self, key: FlowKey, flow_hash: int, loads: Mapping[str, BackendLoad]) -> BackendView | None:
        slots = self._slots
        return slots[flow_hash % self.table_size] if slots else None

    def explain(self, key: FlowKey, flow_hash: int, loads: Mapping[str, BackendLoad]) -> str:
        if not self._slots:
            return "maglev: no eligible backend"
        slot = flow_hash % self.table_size
        return f"maglev: hash 0x{flow_hash:08x} -> slot {slot} of {self.table_size} -> {self._slots[slot].name}"

    def lookup_table(self) -> tuple[BackendView, ...]:
        return self._slots

    def slot_counts(self) -> dict[str, int]:
        """Slots owned per backend name (every eligible backend appears, possibly with 0)."""
        counts = {b.name: 0 for b in self.backends}
        for owner in self.table:
            counts[owner] += 1
        return counts
