"""Target tracking: how many backends a service should have, from its metric (pure, no clock).

The model is Kubernetes' Horizontal Pod Autoscaler (HPA) with AWS target tracking's warm-up rule.
Every period the caller passes the latest (smoothed) metric sample, the backends and the time;
``decide`` returns a ``Decision`` and the new ``PolicyState``, which the caller keeps for the next call.

The metric is a service total measured at the load balancer (new flows per second, active flows,
packets per second, engine CPU).  ``target`` is the value one backend should carry.  Then

    per_backend = metric / backends        ratio = per_backend / target
    recommendation = ceil(backends * ratio)          (HPA's formula; = ceil(metric / target))

clamped to ``[min_backends, max_backends]``.  Rules, in the order they apply:

* Bounds.  Fewer backends than ``min_backends``: add up to the minimum at once; more than
  ``max_backends``: remove down to it (neither waits for the cool-down nor needs a sample).
* Tolerance band.  ``|ratio - 1| <= tolerance`` (HPA's default 0.1): no change, the fleet is close
  enough to the target; this keeps small fluctuations from moving backends.
* Scale out promptly: as soon as the recommendation is above the current count, up to a rate cap
  per action: at most ``max(scale_out_step, ceil(current * scale_out_percent / 100))`` backends
  (HPA's default scale-up policy: 4 pods or 100 %, whichever is more, per 15 s).
* Scale in slowly: on the *highest* recommendation of the last ``scale_in_window`` seconds (HPA's
  stabilization window, 300 s by default), so a dip must last the whole window before a backend
  goes, and at most ``scale_in_step`` backends per action.  The first scale-in comes one whole window
  after the first evaluation at the earliest (before that the window is not full: it counts as
  holding the current count).  ``scale_in_enabled=False`` disables scale-in.
* Cool-down: no scaling action within ``cooldown`` seconds of the previous one.
* Warm-up (AWS target tracking's rule).  A backend added less than ``warmup`` seconds ago is
  *warming*.  It counts in the current capacity when deciding to scale out (so a scale-out is not
  repeated for the capacity already on its way), but not in the metric: when the sample carries
  per-backend values, ``per_backend`` is the mean over the *ready* backends only, which is what the
  warming ones will carry once they are ready (a new backend starts with no active flows; averaging
  its zero in would make the fleet look less loaded than it is: the reason the HPA sets not-ready
  pods aside).  Without per-backend values (the engine's CPU) the total is spread over all
  serving backends.  While any backend warms up, no scale-in happens (AWS blocks scale-in during
  warm-up); with no ready backend at all there is nothing to measure and the policy holds.
* Protection.  A backend marked ``protected`` is never picked for removal.
* Which backend goes: ``removal="newest"`` (default) removes the most recently added unprotected
  backend (last in, first out, as a Kubernetes ReplicaSet prefers the youngest pods: the original
  fleet stays put and a replay gives the same names); ``removal="least_loaded"`` removes the one
  with the lowest per-backend value in the sample (with active flows: the quickest to drain), newest
  first on ties.

Draining backends (being removed) are neither counted nor candidates.  Times are seconds on any
clock, the same for samples, backends and ``now``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

HOLD, SCALE_OUT, SCALE_IN = "hold", "scale_out", "scale_in"
REMOVAL_ORDERS = ("newest", "least_loaded")

# Why a decision was taken (Decision.reason); the keys are stable names for logs and tests.
REASONS = {
    "below_min": "fewer backends than the minimum",
    "above_max": "more backends than the maximum",
    "above_target": "the metric per backend is above the target (beyond the tolerance)",
    "rate_capped": "above the target; fewer added than recommended (scale-out rate cap)",
    "below_target": "the highest recommendation of the scale-in window is below the current count",
    "within_tolerance": "the metric per backend is within the tolerance band around the target",
    "no_change": "the recommendation rounds to the current count",
    "at_max": "above the target, but already at the maximum",
    "at_min": "below the target, but already at the minimum",
    "stabilizing": "below the target, but a higher recommendation is still in the scale-in window",
    "cooldown": "a scaling action was taken less than the cool-down ago",
    "warming_up": "a backend is still warming up: no scale-in",
    "scale_in_disabled": "scale-in is switched off",
    "all_protected": "every backend that could be removed is protected",
    "no_sample": "no metric sample yet",
    "no_ready_backend": "every backend is still warming up: nothing to measure",
}
EPSILON = 1e-9  # floating-point slack: ceil(3 * 2.0000000000000004) is 6, and 220/200 - 1 is within 0.1


@dataclass(frozen=True)
class ScalingConfig:
    target: float  # metric value per backend to keep
    min_backends: int = 1
    max_backends: int = 10
    tolerance: float = 0.1
    scale_out_step: int = 4
    scale_out_percent: float = 100.0
    scale_in_step: int = 1
    scale_in_window: float = 300.0
    warmup: float = 30.0
    cooldown: float = 30.0
    scale_in_enabled: bool = True
    removal: str = "newest"

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"{name} = {getattr(self, name)!r}: expected {expected}")

        if not (math.isfinite(self.target) and self.target > 0):
            raise bad("target", "a number > 0")
        if self.min_backends < 1:
            raise bad("min_backends", "an integer >= 1")
        if self.max_backends < self.min_backends:
            raise ValueError(f"min_backends = {self.min_backends} > max_backends = {self.max_backends}: "
                             "expected min <= max")
        if not 0 <= self.tolerance < 1:
            raise bad("tolerance", "a fraction from 0 to below 1 (0.1 = 10 %)")
        if self.scale_out_step < 1:
            raise bad("scale_out_step", "an integer >= 1")
        if not self.scale_out_percent >= 0:
            raise bad("scale_out_percent", "a percentage >= 0")
        if self.scale_in_step < 1:
            raise bad("scale_in_step", "an integer >= 1")
        for name in ("scale_in_window", "warmup", "cooldown"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise bad(name, "a number of seconds >= 0")
        if self.removal not in REMOVAL_ORDERS:
            raise bad("removal", f"one of {', '.join(REMOVAL_ORDERS)}")


@dataclass(frozen=True)
class BackendView:
    name: str
    started: float  # when it was added; -math.inf for a backend that was there before (ready)
    protected: bool = False
    draining: bool = False


@dataclass(frozen=True)
class Sample:
    time: float
    value: float  # the service total (new flows/s, active flows, pps, CPU seconds/s)
    per_backend: Mapping[str, float] = field(default_factory=dict)  # the same metric per backend, if known


@dataclass(frozen=True)
class PolicyState:
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, recommendation) inside the scale-in window
    last_action: float | None = None
    started: float | None = None  # time of the first evaluation


@dataclass(frozen=True)
class Decision:
    time: float
    action: str  # HOLD, SCALE_OUT or SCALE_IN
    reason: str  # a key of REASONS
    current: int  # serving backends (ready + warming)
    ready: int
    add: int = 0
    remove: tuple[str, ...] = ()
    per_backend: float | None = None  # metric per backend used
    ratio: float | None = None  # per_backend / target
    recommendation: int | None = None  # ceil(current * ratio), within the bounds
    stabilized: int | None = None  # highest recommendation in the scale-in window

    @property
    def desired(self) -> int:
        return self.current + self.add - len(self.remove)

    def as_dict(self) -> dict[str, object]:
        return {"time": self.time, "action": self.action, "reason": self.reason, "current": self.current,
                "ready": self.ready, "add": self.add, "remove": list(self.remove), "desired": self.desired,
                "per_backend": self.per_backend, "ratio": self.ratio, "recommendation": self.recommendation,
                "stabilized": self.stabilized}


def decide(config: ScalingConfig, state: PolicyState, sample: Sample | None, backends: Sequence[BackendView],
           now: float) -> tuple[Decision, PolicyState]:
    """One evaluation of the policy (see the module docstring); returns the decision and the next state."""
    serving = [b for b in backends if not b.draining]
    ready = [b for b in serving if now - b.started >= config.warmup]
    started = now if state.started is None else state.started
    base = Decision(time=now, action=HOLD, reason="", current=len(serving), ready=len(ready))
    acted = PolicyState(state.recommendations, now, started)  # the state after an action

    if base.current < config.min_backends:
        return replace(base, action=SCALE_OUT, reason="below_min", add=config.min_backends - base.current), acted
    if base.current > config.max_backends:
        if not config.scale_in_enabled:
            return replace(base, reason="scale_in_disabled"), state
        victims = _victims(config, serving, base.current - config.max_backends, sample)
        if not victims:
            return replace(base, reason="all_protected"), state
        return replace(base, action=SCALE_IN, reason="above_max", remove=victims), acted
    if sample is None:
        return replace(base, reason="no_sample"), state
    if not ready:
        return replace(base, reason="no_ready_backend"), PolicyState(state.recommendations, state.last_action,
                                                                     started)
    return _track(config, state, sample, serving, base, started)


def _track(config: ScalingConfig, state: PolicyState, sample: Sample, serving: Sequence[BackendView],
           base: Decision, started: float) -> tuple[Decision, PolicyState]:
    """Target tracking proper, between the bounds, with at least one ready backend."""
    now, current = base.time, base.current
    ready = [b for b in serving if now - b.started >= config.warmup]
    cooling = state.last_action is not None and now - state.last_action < config.cooldown
    per_backend = _per_backend(sample, ready, current)
    ratio = per_backend / config.target
    within = abs(ratio - 1.0) <= config.tolerance + EPSILON
    raw = current if within else math.ceil(current * ratio - EPSILON)
    recommendation = min(max(raw, config.min_backends), config.max_backends)
    window = tuple((t, r) for t, r in state.recommendations if t > now - config.scale_in_window)
    window += ((now, recommendation),)
    stabilized = max(r for _, r in window)
    if now - started < config.scale_in_window:  # a whole window not seen yet: as if it held `current`
        stabilized = max(stabilized, current)
    figures = replace(base, per_backend=per_backend, ratio=ratio, recommendation=recommendation,
                      stabilized=stabilized)
    held, acted = PolicyState(window, state.last_action, started), PolicyState(window, now, started)

    if recommendation > current:
        if cooling:
            return replace(figures, reason="cooldown"), held
        cap = max(config.scale_out_step, math.ceil(current * config.scale_out_percent / 100 - EPSILON))
        add = min(recommendation, current + cap) - current
        reason = "rate_capped" if add < recommendation - current else "above_target"
        return replace(figures, action=SCALE_OUT, reason=reason, add=add), acted
    if stabilized < current:
        if not config.scale_in_enabled:
            reason = "scale_in_disabled"
        elif len(ready) < current:
            reason = "warming_up"
        elif cooling:
            reason = "cooldown"
        else:
            victims = _victims(config, serving, min(current - stabilized, config.scale_in_step), sample)
            if victims:
                return replace(figures, action=SCALE_IN, reason="below_target", remove=victims), acted
            reason = "all_protected"
        return replace(figures, reason=reason), held
    if within:
        reason = "within_tolerance"
    elif recommendation < current:
        reason = "stabilizing"
    elif raw != recommendation:
        reason = "at_max" if raw > recommendation else "at_min"
    else:
        reason = "no_change"
    return replace(figures, reason=reason), held


def _per_backend(sample: Sample, ready: Sequence[BackendView], current: int) -> float:
    """Mean over the ready backends when the sample has a value for each; else the total spread evenly."""
    values = [sample.per_backend.get(b.name) for b in ready]
    if sample.per_backend and all(v is not None for v in values):
        return sum(v for v in values if v is not None) / len(values)
    return sample.value / current


def _victims(config: ScalingConfig, serving: Sequence[BackendView], count: int,
             sample: Sample | None) -> tuple[str, ...]:
    """The ``count`` backends to remove (fewer if protection leaves fewer): see ``removal``."""
    candidates = [b for b in serving if not b.protected]
    newest_first = sorted(candidates, key=lambda b: (b.started, b.name), reverse=True)
    if config.removal == "least_loaded" and sample is not None and sample.per_backend:
        load = sample.per_backend
        order = {b.name: k for k, b in enumerate(newest_first)}
        newest_first.sort(key=lambda b: (load.get(b.name, math.inf), order[b.name]))
    return tuple(b.name for b in newest_first[:count])


__all__ = ["ScalingConfig", "BackendView", "Sample", "PolicyState", "Decision", "decide", "REASONS",
           "HOLD", "SCALE_OUT", "SCALE_IN", "REMOVAL_ORDERS"]
