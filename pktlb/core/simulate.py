"""The hashing lab: where synthetic flows go under each scheduler, and how many move when a backend leaves.

Pure functions behind ``pktlb ring`` and ``pktlb simulate``.  Flows are drawn from a seeded
``random.Random`` (clients in 198.18.0.0/15, random source ports, the service's VIP and port), so
a run is reproducible.  Each scheduler places every flow in turn; after each pick the chosen
backend's load grows by one active flow and by the flow's byte rate (each flow is modelled as a
steady stream, so a backend's ``bytes_rate`` is the sum of its flows' rates), which is what the
load-aware schedulers (lc, lrt, bw) react to.

Removal re-places every flow with a scheduler built without the removed backend, as happens when
the flow table is lost (a restart, or another LB instance taking over).  Flows that were on the
removed backend must move; every other flow that moves is needless churn.  A consistent hash
(maglev) keeps that churn near zero; mod-N hashing (``hash``, ``sh``) moves most flows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pktlb.core.flowkey import FlowKey, flow_hash
from pktlb.core.sched.base import BackendLoad, Scheduler, ring_delta
from pktlb.core.sched.registry import make_scheduler, scheduler_names

if TYPE_CHECKING:
    from pktlb.core.snapshot import BackendView

CLIENT_NET = 0xC6120000  # 198.18.0.0/15, the lab's address space
CLIENT_HOSTS = 1 << 17
MEAN_FLOW_RATE = 50_000.0  # bytes per second; flow rates are Pareto distributed around it
# Teaching order: rotation, load-aware, then mod-N hashing right next to Maglev.
DISPLAY_ORDER = ("rr", "wrr", "lc", "lrt", "bw", "sh", "hash", "maglev")


@dataclass(frozen=True, slots=True)
class SyntheticFlow:
    key: FlowKey
    flow_hash: int
    rate: float  # bytes per second the flow carries


def synthetic_flows(count: int, *, proto: int, vip: int, port: int, hash_seed: int,
                    flow_seed: int = 1) -> list[SyntheticFlow]:
    """``count`` reproducible flows towards (proto, vip, port), hashed as the engine would hash them."""
    rng = random.Random(flow_seed)
    alpha = 1.5  # Pareto shape: a few elephants, many mice; mean = scale * alpha / (alpha - 1)
    scale = MEAN_FLOW_RATE * (alpha - 1) / alpha
    flows = []
    for _ in range(count):
        src = CLIENT_NET + 1 + rng.randrange(CLIENT_HOSTS - 2)
        sport = rng.randrange(1024, 65536)
        key = (proto, src, vip, sport, port)
        flows.append(SyntheticFlow(key, flow_hash(proto, src, vip, sport, port, hash_seed),
                                   scale * rng.paretovariate(alpha)))
    return flows


def place(scheduler: Scheduler, flows: Sequence[SyntheticFlow]) -> list[str | None]:
    """The backend name each flow gets (None when there is no backend), loads growing as flows land."""
    loads = {b.name: BackendLoad() for b in scheduler.backends}
    pick = scheduler.pick
    chosen: list[str | None] = []
    for flow in flows:
        backend = pick(flow.key, flow.flow_hash, loads)
        if backend is None:
            chosen.append(None)
            continue
        load = loads[backend.name]
        load.active_flows += 1
        load.bytes_rate += flow.rate
        chosen.append(backend.name)
    return chosen


def fair_shares(backends: Sequence[BackendView], weighted: bool = True) -> dict[str, float]:
    """Each backend's share by weight (or equal shares when ``weighted`` is False)."""
    if not backends:
        return {}
    total = sum(b.weight for b in backends) if weighted else len(backends)
    return {b.name: (b.weight if weighted else 1) / total for b in backends}


def _counts(names: Sequence[str], chosen: Sequence[str | None]) -> dict[str, int]:
    counts = dict.fromkeys(names, 0)
    for name in chosen:
        if name is not None:
            counts[name] += 1
    return counts


@dataclass
class SchedulerRun:
    """One scheduler's placement of the flows, and (with a removal) what moved."""

    scheduler: str
    summary: str
    consistent: bool
    counts: dict[str, int]
    shares: dict[str, float]
    fair: dict[str, float]
    max_deviation: float  # largest |share - fair share|, as a fraction of all flows
    byte_shares: dict[str, float]  # share of the flows' bytes per second (what bw balances)
    counts_after: dict[str, int] | None = None
    moved: int = 0  # flows whose backend changed, those of the removed backend included
    must_move: int = 0  # flows that were on the removed backend
    needless: int = 0  # moved - must_move: flows that lost their backend for nothing
    moved_fraction: float = 0.0
    needless_fraction: float = 0.0  # of the flows that did not have to move
    slots_moved: int | None = None  # maglev only: table slots that changed owner


@dataclass
class Simulation:
    service: str
    configured: str  # the scheduler the service is configured with
    flows: int
    table_size: int
    backends: list[str]
    removed: str | None
    runs: list[SchedulerRun] = field(default_factory=list)


def run_scheduler(name: str, backends: Sequence[BackendView], flows: Sequence[SyntheticFlow], *, seed: int,
                  table_size: int, remove: str | None = None) -> SchedulerRun:
    """Place ``flows`` with scheduler ``name``; with ``remove``, place them again without that backend."""
    names = [b.name for b in backends]
    before_sched = make_scheduler(name, backends, seed=seed, table_size=table_size)
    before = place(before_sched, flows)
    counts = _counts(names, before)
    total = len(flows) or 1
    shares = {n: c / total for n, c in counts.items()}
    fair = fair_shares(before_sched.backends, weighted=before_sched.weighted)
    rates = dict.fromkeys(names, 0.0)
    for flow, backend in zip(flows, before, strict=True):
        if backend is not None:
            rates[backend] += flow.rate
    total_rate = sum(rates.values()) or 1.0
    run = SchedulerRun(
        scheduler=name, summary=before_sched.summary, consistent=before_sched.consistent, counts=counts,
        shares=shares, fair=fair, max_deviation=max((abs(shares[n] - fair.get(n, 0.0)) for n in names), default=0.0),
        byte_shares={n: r / total_rate for n, r in rates.items()},
    )
    if remove is None:
        return run
    remaining = [b for b in backends if b.name != remove]
    after_sched = make_scheduler(name, remaining, seed=seed, table_size=table_size)
    after = place(after_sched, flows)
    run.counts_after = _counts([n for n in names if n != remove], after)
    run.moved = sum(1 for a, b in zip(before, after, strict=True) if a != b)
    run.must_move = counts.get(remove, 0)
    run.needless = run.moved - run.must_move
    run.moved_fraction = run.moved / total
    stayers = total - run.must_move
    run.needless_fraction = run.needless / stayers if stayers else 0.0
    old_table, new_table = getattr(before_sched, "table", None), getattr(after_sched, "table", None)
    if old_table is not None and new_table is not None:
        run.slots_moved = ring_delta(old_table, new_table)
    return run


def simulate(service: str, configured: str, backends: Sequence[BackendView], flows: Sequence[SyntheticFlow], *,
             seed: int, table_size: int, remove: str | None = None,
             schedulers: Sequence[str] | None = None) -> Simulation:
    """Every scheduler (or those named) over the same flows; ValueError for an unknown ``remove``."""
    names = [b.name for b in backends]
    if remove is not None and remove not in names:
        raise ValueError(f"--remove: got {remove!r}, expected a backend of service {service}: {', '.join(names)}")
    result = Simulation(service=service, configured=configured, flows=len(flows), table_size=table_size,
                        backends=names, removed=remove)
    if schedulers is None:
        known = scheduler_names()
        schedulers = [n for n in DISPLAY_ORDER if n in known] + [n for n in known if n not in DISPLAY_ORDER]
    for name in schedulers:
        result.runs.append(run_scheduler(name, backends, flows, seed=seed, table_size=table_size, remove=remove))
    return result


@dataclass
class RingRow:
    backend: str
    weight: int
    state: str
    slots: int
    share: float
    fair: float


@dataclass
class RingSummary:
    service: str
    configured: str
    table_size: int
    seed: int
    rows: list[RingRow]
    imbalance: float  # largest |share / fair share - 1| over the backends in the table
    peak_to_fair: float  # largest share / fair share


def ring_summary(service: str, configured: str, backends: Sequence[BackendView], table: Sequence[str], *,
                 seed: int) -> RingSummary:
    """Slots per backend of a Maglev ``table`` (names per slot); ineligible ``backends`` get a fair share of 0."""
    size = len(table)
    slots = dict.fromkeys((b.name for b in backends), 0)
    for owner in table:
        slots[owner] = slots.get(owner, 0) + 1
    fair = fair_shares([b for b in backends if b.eligible])
    rows = [RingRow(backend=b.name, weight=b.weight, state=b.state, slots=slots[b.name],
                    share=slots[b.name] / size if size else 0.0, fair=fair.get(b.name, 0.0)) for b in backends]
    ratios = [r.share / r.fair for r in rows if r.fair > 0]
    return RingSummary(service=service, configured=configured, table_size=size, seed=seed, rows=rows,
                       imbalance=max((abs(x - 1) for x in ratios), default=0.0),
                       peak_to_fair=max(ratios, default=0.0))
