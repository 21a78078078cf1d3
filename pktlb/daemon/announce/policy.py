"""Whether an LB should announce its VIPs: a pure decision from the engine's stats and the operator.

An LB announces while its engine answers on the control socket and every VIP it announces has at
least one backend the engine would send new flows to (state ``up``, weight above zero, in any of
the VIP's services).  It withdraws when drained, when stopping, when the engine does not answer,
and when a VIP has no such backend (announcing it would pull flows into a black hole).

``Hysteresis`` turns that per-poll verdict into the announced state with rise/fall counts, as a
health check does: ``fall`` bad polls in a row withdraw, ``rise`` good polls in a row announce.
Drain and stop act at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Verdict:
    announce: bool
    reason: str
    immediate: bool = False  # operator's word (drain, stop): no rise/fall counting


def healthy_backends(stats: dict[str, Any], vip: str) -> list[str]:
    """Names of the backends that would take new flows for ``vip`` (over all its services)."""
    names: list[str] = []
    for svc in stats.get("services", []):
        if svc.get("vip") != vip:
            continue
        for be in svc.get("backends", []):
            if be.get("state") == "up" and be.get("weight", 1) > 0 and be.get("name") not in names:
                names.append(be["name"])
    return names


def decide(stats: dict[str, Any] | None, error: str | None, vips: Iterable[str], *, drained: bool = False,
           stopping: bool = False) -> Verdict:
    """One poll's verdict.  ``stats`` is the engine's ``{"cmd": "stats"}`` result, or None with ``error``."""
    if stopping:
        return Verdict(False, "stopping", immediate=True)
    if drained:
        return Verdict(False, "drained by the operator", immediate=True)
    if stats is None:
        return Verdict(False, f"engine not answering: {error or 'no reply'}")
    if not isinstance(stats.get("services"), list):
        return Verdict(False, "engine stats without a services list")
    wanted = list(vips)
    if not wanted:
        return Verdict(False, "no VIP to announce")
    known = {s.get("vip") for s in stats["services"]}
    for vip in wanted:
        if vip not in known:
            return Verdict(False, f"the engine serves nothing on {vip}")
        if not healthy_backends(stats, vip):
            return Verdict(False, f"no healthy backend for {vip}")
    return Verdict(True, "engine up, every VIP has a healthy backend")


class Hysteresis:
    """The announced state, moved by verdicts with rise/fall counts."""

    def __init__(self, rise: int = 2, fall: int = 1) -> None:
        if rise < 1 or fall < 1:
            raise ValueError(f"rise {rise} and fall {fall} must be at least 1")
        self.rise, self.fall = rise, fall
        self.announced = False
        self.streak = 0  # consecutive verdicts that disagree with the announced state
        self.reason = "starting"

    def feed(self, verdict: Verdict) -> bool:
        """Take one verdict; True when the announced state changed."""
        if verdict.announce == self.announced:
            self.streak = 0
            self.reason = verdict.reason
            return False
        self.streak += 1
        needed = self.rise if verdict.announce else self.fall
        if verdict.immediate or self.streak >= needed:
            self.announced, self.streak, self.reason = verdict.announce, 0, verdict.reason
            return True
        return False
