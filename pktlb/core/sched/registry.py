"""The scheduler registry: the one module that imports every built-in scheduler, keyed by its CLI name.

rr, wrr (rotation); sh, hash (mod-N hashing); maglev (consistent hashing); lc, lrt, bw (load-aware).
A new scheduler is a ``base.Scheduler`` subclass in its own module, listed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pktlb.core.sched.base import Scheduler
from pktlb.core.sched.hashing import FlowHashScheduler, SourceHashScheduler
from pktlb.core.sched.load import (
    LeastBandwidthScheduler,
    LeastConnectionsScheduler,
    LeastResponseTimeScheduler,
)
from pktlb.core.sched.maglev import MaglevScheduler
from pktlb.core.sched.rotation import RoundRobinScheduler, WeightedRoundRobinScheduler

if TYPE_CHECKING:
    from pktlb.core.snapshot import BackendView

REGISTRY: dict[str, type[Scheduler]] = {cls.name: cls for cls in (
    RoundRobinScheduler, WeightedRoundRobinScheduler, SourceHashScheduler, FlowHashScheduler, MaglevScheduler,
    LeastConnectionsScheduler, LeastResponseTimeScheduler, LeastBandwidthScheduler)}


def make_scheduler(name: str, backends: Sequence[BackendView], *, seed: int, table_size: int = 65537) -> Scheduler:
    """Build a scheduler by its CLI name.

    ValueError for an unknown name (naming the choices) and for a bad parameter (for ``maglev``:
    a ``maglev_table_size`` that is not prime or is under 100 x the number of backends).
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown scheduler {name!r}: expected one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](backends, seed=seed, table_size=table_size)


def scheduler_names() -> list[str]:
    """Every registered scheduler's CLI name, sorted."""
    return sorted(REGISTRY)
