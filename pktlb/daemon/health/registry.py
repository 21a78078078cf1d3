"""The health checks by the name the config uses ("icmp", "tcp", "http"): the one place that lists them.

This module imports every implementation and fills ``REGISTRY``; nothing else registers a check,
and no checker module imports this one (so the family has no import cycle).
"""

from __future__ import annotations

from typing import Any

from pktlb.daemon.health.base import ResultCallback, ScheduledChecker
from pktlb.daemon.health.http import HttpChecker
from pktlb.daemon.health.icmp import IcmpProber
from pktlb.daemon.health.tcp import TcpChecker

REGISTRY: dict[str, type[ScheduledChecker]] = {cls.name: cls for cls in (IcmpProber, TcpChecker, HttpChecker)}


def make_checker(name: str, on_result: ResultCallback, **options: Any) -> ScheduledChecker:
    """Build a checker by its config name; ValueError naming the choices for an unknown one."""
    if name not in REGISTRY:
        raise ValueError(f"unknown check type {name!r}: expected one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](on_result, **options)
