"""Schedulers: pick a backend for a new flow.  A small interface (``base.Scheduler``) and a registry.

Built-in schedulers (CLI/config names): rr, wrr, sh, hash, maglev, lc, lrt, bw; see ``registry``.
"""

from pktlb.core.sched.base import BackendLoad, Scheduler, load_of, ring_delta
from pktlb.core.sched.registry import REGISTRY, make_scheduler, scheduler_names

__all__ = ["REGISTRY", "BackendLoad", "Scheduler", "load_of", "make_scheduler", "ring_delta", "scheduler_names"]
