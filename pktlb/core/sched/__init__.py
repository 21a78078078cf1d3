"""Schedulers: pick a backend for a new flow.  A small interface (``base.Scheduler``) and a registry.

Built-in schedulers (CLI/config names): rr, wrr, sh, hash, maglev, lc, lrt, bw; see ``catalog``.
"""

from pktlb.core.sched.base import (
    REGISTRY,
    BackendLoad,
    Scheduler,
    load_of,
    make_scheduler,
    register,
    ring_delta,
    scheduler_names,
)

__all__ = ["REGISTRY", "BackendLoad", "Scheduler", "load_of", "make_scheduler", "register", "ring_delta",
           "scheduler_names"]
