"""The auto-scaling loop: every period read the metric, smooth it, ask the policy, carry out its answer.

One ``step()``:

1. finish drains: a backend being drained is removed once it has no flows left, or when
   ``drain_timeout`` has passed since its drain began (its remaining flows are then cut);
2. read the metric source (an error is journaled and the policy holds: no sample this period);
3. follow the engine's view: a backend the engine lost is dropped (``vanished``), one it gained
   without us is adopted as protected (an operator's backend is never removed by the auto-scaler);
   a backend the engine has as ``drain`` or ``down`` is not counted as serving;
4. smooth the metric's total and each backend's value with an EWMA (``smoothing`` = its time constant);
5. ``decide`` (pktlb.core.policy.autoscale) and carry out: scale-out asks the actuator for each new
   backend; scale-in starts a drain (new flows go elsewhere at once, established ones finish).

Every step and action goes to the journal (see ``journal``).  Times in the journal and for the
policy are seconds since the controller started.  Errors from the actuator are journaled and the
loop goes on; anything else is a bug and propagates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

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
from pktlb.core.policy.ewma import Ewma
from pktlb.daemon.autoscale.interfaces import METRICS, Actuator, AutoscaleError, Clock, MetricSource, Reading

Record = dict[str, Any]


@dataclass(frozen=True)
class LoopSettings:
    metric: str
    service: str = "web"
    period: float = 1.0  # seconds between evaluations
    smoothing: float = 5.0  # EWMA time constant, seconds (0: none)
    drain_timeout: float = 30.0  # seconds a drain may take before the backend is removed anyway

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric {self.metric!r}: expected one of {', '.join(METRICS)}")
        for name in ("period", "smoothing", "drain_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0) or (name == "period" and value <= 0):
                raise ValueError(f"{name} = {value!r}: expected a number of seconds "
                                 f"{'> 0' if name == 'period' else '>= 0'}")


class Controller:
    def __init__(self, policy: ScalingConfig, settings: LoopSettings, source: MetricSource, actuator: Actuator,
                 clock: Clock, journal: Callable[[Record], None], *, initial: Sequence[str],
                 protected: Sequence[str] = (), wall: str = "") -> None:
        self.policy, self.settings = policy, settings
        self.source, self.actuator, self.clock, self.journal = source, actuator, clock, journal
        self.t0 = clock.now()
        self.fleet = {name: BackendView(name, -math.inf, protected=name in protected) for name in initial}
        self.drains: dict[str, float] = {}  # backend -> time its drain began
        self.state = PolicyState()
        self.total = Ewma(settings.smoothing)
        self.each: dict[str, Ewma] = {}
        self.samples = 0
        journal({"type": "start", "time": 0.0, "wall": wall, "metric": settings.metric, "target": policy.target,
                 "service": settings.service, "policy": asdict(policy), "period": settings.period,
                 "smoothing": settings.smoothing, "drain_timeout": settings.drain_timeout,
                 "backends": sorted(self.fleet), "protected": sorted(n for n, b in self.fleet.items() if b.protected)})

    def now(self) -> float:
        return round(self.clock.now() - self.t0, 3)  # milliseconds are enough for a period of seconds

    # -- one period ------------------------------------------------------------------------------
    def step(self) -> Decision:
        self.finish_drains()
        now = self.now()
        reading: Reading | None = None
        try:
            reading = self.source.read(now)
        except AutoscaleError as exc:
            self._error(now, "read", exc)
        sample = None
        if reading is not None:
            self._follow_engine(now, reading)
            sample = self._smooth(now, reading)
        decision, self.state = decide(self.policy, self.state, sample, list(self.fleet.values()), now)
        self._record(now, reading, sample, decision)
        self._carry_out(now, decision)
        return decision

    def _smooth(self, now: float, reading: Reading) -> Sample | None:
        metric = self.settings.metric
        raw = reading.values.get(metric)
        if raw is None:
            return None
        self.total = self.total.update(raw, now)
        per_backend = reading.per_backend.get(metric, {})
        self.each = {name: self.each.get(name, Ewma(self.settings.smoothing)).update(value, now)
                     for name, value in per_backend.items()}
        return Sample(now, float(self.total.value or 0.0),
                      {name: float(e.value or 0.0) for name, e in self.each.items()})

    def _follow_engine(self, now: float, reading: Reading) -> None:
        for name in [n for n in self.fleet if n not in reading.backends]:
            del self.fleet[name]
            self.drains.pop(name, None)
            self.journal({"type": "vanished", "time": now, "backend": name})
        for name, state in reading.backends.items():
            view = self.fleet.get(name)
            if view is None:
                view = BackendView(name, now, protected=True)
                self.journal({"type": "adopted", "time": now, "backend": name, "state": state})
            self.fleet[name] = replace(view, draining=name in self.drains or state != "up")

    def _record(self, now: float, reading: Reading | None, sample: Sample | None, decision: Decision) -> None:
        self.samples += 1
        metric = self.settings.metric
        serving = [b for b in self.fleet.values() if not b.draining]
        self.journal({
            "type": "sample", "time": now, "metric": metric,
            "raw": _round(reading.values.get(metric)) if reading else None,
            "value": _round(sample.value) if sample else None,
            "metrics": {k: _round(v) for k, v in reading.values.items()} if reading else {},
            "per_backend": {k: _round(v) for k, v in sample.per_backend.items()} if sample else {},
            "backends": len(serving), "ready": decision.ready,
            "draining": len(self.fleet) - len(serving),
            "p99_ms": reading.p99_ms if reading else None,
            "decision": {k: _round(v) if isinstance(v, float) else v for k, v in decision.as_dict().items()
                         if k not in ("time", "current")},
        })

    # -- actions ---------------------------------------------------------------------------------
    def _carry_out(self, now: float, decision: Decision) -> None:
        if decision.action == SCALE_OUT:
            added, began = [], self.clock.now()
            for _ in range(decision.add):
                try:
                    name = self.actuator.add_backend()
                except AutoscaleError as exc:
                    self._error(now, "scale_out", exc)
                    break
                self.fleet[name] = BackendView(name, now)
                added.append(name)
            self.journal({"type": "scale_out", "time": now, "backends": added, "reason": decision.reason,
                          "took_s": round(self.clock.now() - began, 3)})
        elif decision.action == SCALE_IN:
            started = []
            for name in decision.remove:
                try:
                    self.actuator.drain_backend(name)
                except AutoscaleError as exc:
                    self._error(now, "drain", exc)
                    continue
                self.drains[name] = now
                self.fleet[name] = replace(self.fleet[name], draining=True)
                started.append(name)
            self.journal({"type": "scale_in", "time": now, "backends": started, "reason": decision.reason})

    def finish_drains(self, *, force: bool = False) -> None:
        """Remove each draining backend that has no flows left or whose drain timed out (or all: force)."""
        now = self.now()
        for name, since in list(self.drains.items()):
            timed_out = now - since >= self.settings.drain_timeout
            try:
                flows: int | None = self.actuator.active_flows(name)
            except AutoscaleError as exc:
                self._error(now, "flows", exc)
                flows = None
            if not (flows == 0 or timed_out or force):
                continue
            try:
                self.actuator.remove_backend(name)
            except AutoscaleError as exc:
                self._error(now, "remove", exc)
                continue
            del self.drains[name]
            self.fleet.pop(name, None)
            why = "drained" if flows == 0 else ("drain_timeout" if timed_out else "stopped")
            self.journal({"type": "removed", "time": now, "backend": name, "flows_left": flows, "why": why,
                          "after_s": round(now - since, 3)})

    def _error(self, now: float, what: str, exc: Exception) -> None:
        self.journal({"type": "error", "time": now, "what": what, "error": str(exc)})

    # -- the loop --------------------------------------------------------------------------------
    def run(self, duration: float | None = None, stop: Callable[[], bool] = lambda: False) -> None:
        """Step every period (without drift) until ``duration`` seconds or ``stop()``, then ``close()``."""
        tick = 0
        try:
            while not stop():
                self.step()
                tick += 1
                if duration is not None and tick * self.settings.period > duration:
                    break
                self.clock.sleep(self.t0 + tick * self.settings.period - self.clock.now())
        finally:
            self.close()

    def close(self) -> None:
        """Let drains in progress finish (each at most ``drain_timeout`` from its start), then journal the end."""
        deadline = max(self.drains.values(), default=0.0) + self.settings.drain_timeout
        while self.drains and self.now() < deadline:
            self.finish_drains()
            if self.drains:
                self.clock.sleep(min(self.settings.period, 1.0, max(deadline - self.now(), 0.0)))
        if self.drains:
            self.finish_drains(force=True)  # what still fails is in the journal as an error
        self.journal({"type": "end", "time": self.now(), "backends": sorted(self.fleet), "samples": self.samples})


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


__all__ = ["Controller", "LoopSettings"]
