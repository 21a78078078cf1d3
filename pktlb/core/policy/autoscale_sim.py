"""Run the scaling policy over a series of samples with a simulated fleet (pure).

This is what ``pktlb autoscale --replay`` and the policy's unit tests do: every sample is one
policy period; a scale-out adds backends named ``<prefix>1``, ``<prefix>2`` ... that start at the
sample's time (so they warm up); a scale-in marks backends draining, and they leave the fleet
``drain_time`` seconds later (0: at once).  The samples are taken as they are: their values do not
react to the simulated backend count, which is right for demand metrics (new flows per second,
packets per second, which the number of backends does not change) and an approximation for the
others.  Per-backend values are dropped (the simulated fleet's names are not the recorded ones):
the policy spreads each total evenly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from pktlb.core.policy.autoscale import (
    SCALE_IN,
    SCALE_OUT,
    BackendView,
    Decision,
    PolicyState,
    Sample,
    ScalingConfig,
    decide,
)


@dataclass(frozen=True)
class SimStep:
    sample: Sample
    decision: Decision
    backends: tuple[BackendView, ...]  # the fleet after the decision (draining ones included)


def simulate(config: ScalingConfig, samples: Iterable[Sample], initial: Sequence[BackendView], *,
             prefix: str = "sim", drain_time: float = 0.0) -> list[SimStep]:
    """The decision at each sample and the fleet after it."""
    fleet = list(initial)
    state = PolicyState()
    drain_ends: dict[str, float] = {}
    added = 0
    steps = []
    for sample in samples:
        now = sample.time
        fleet = [b for b in fleet if not (b.draining and drain_ends.get(b.name, now) <= now)]
        decision, state = decide(config, state, Sample(now, sample.value), fleet, now)
        if decision.action == SCALE_OUT:
            for _ in range(decision.add):
                added += 1
                fleet.append(BackendView(f"{prefix}{added}", now))
        elif decision.action == SCALE_IN:
            gone = set(decision.remove)
            fleet = [replace(b, draining=True) if b.name in gone else b for b in fleet]
            drain_ends.update((name, now + drain_time) for name in gone)
            if drain_time <= 0:
                fleet = [b for b in fleet if b.name not in gone]
        steps.append(SimStep(sample, decision, tuple(fleet)))
    return steps


def actions(steps: Sequence[SimStep]) -> list[tuple[float, str, int | tuple[str, ...]]]:
    """The scaling actions only, as (time, action, added count or removed names): what tests compare."""
    out: list[tuple[float, str, int | tuple[str, ...]]] = []
    for step in steps:
        d = step.decision
        if d.action == SCALE_OUT:
            out.append((d.time, SCALE_OUT, d.add))
        elif d.action == SCALE_IN:
            out.append((d.time, SCALE_IN, d.remove))
    return out


__all__ = ["SimStep", "simulate", "actions"]
