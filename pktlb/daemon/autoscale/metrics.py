"""The auto-scaler's metrics, read from the engine's control socket.

``active_flows`` is a gauge, read as it is.  The others are counters, and a rate is the difference
between two readings over the time between them (as ``ipvsadm --rate`` and Prometheus' ``rate()``
do), per backend, then added up:

* a backend seen for the first time has no rate yet (it counts from its next reading), because
  the engine keeps a removed backend's counters and a re-added name would start from old values;
* a counter that went down means the engine restarted: the new value is what it counted since.

So the first reading gives ``active_flows`` only; the rates come from the second one on.

``cpu`` is the engine's own CPU time (``cpu_seconds`` in its stats, every worker added up) per second
of wall time.  It measures the load balancer, not the backends: it follows the traffic, so it can
drive scaling, but adding backends does not bring it down (a scale-out only helps if the target is
set for the traffic each backend can take).  The other three are measured per backend as well.
"""

from __future__ import annotations

from pktlb.daemon.autoscale.engine import EngineControl, EngineCounters
from pktlb.daemon.autoscale.interfaces import AutoscaleError, Reading

COUNTERS = {"new_flows_per_s": "new_flows", "pps": "packets_in"}


def _delta(before: float, after: float) -> float:
    return after - before if after >= before else after  # went down: restarted, counted from 0 since


def reading_from(prev: EngineCounters | None, cur: EngineCounters, dt: float, now: float) -> Reading:
    """Every metric's total and per-backend values from two readings ``dt`` seconds apart (pure)."""
    values: dict[str, float | None] = {}
    per_backend: dict[str, dict[str, float]] = {}
    gauges = {name: float(be.active_flows) for name, be in cur.backends.items()}
    values["active_flows"], per_backend["active_flows"] = sum(gauges.values()), gauges
    for metric, counter in COUNTERS.items():
        if prev is None or dt <= 0:
            values[metric] = None
            continue
        rates = {name: _delta(getattr(prev.backends[name], counter), getattr(be, counter)) / dt
                 for name, be in cur.backends.items() if name in prev.backends}
        values[metric], per_backend[metric] = sum(rates.values()), rates
    if prev is None or dt <= 0 or prev.cpu_seconds is None or cur.cpu_seconds is None:
        values["cpu"] = None
    else:
        values["cpu"] = _delta(prev.cpu_seconds, cur.cpu_seconds) / dt
    return Reading(now, values, per_backend, {name: be.state for name, be in cur.backends.items()})


class EngineMetrics:
    """A ``MetricSource`` over an engine's control socket (``now`` on the controller's clock)."""

    def __init__(self, engine: EngineControl) -> None:
        self.engine = engine
        self._prev: EngineCounters | None = None
        self._prev_time = 0.0

    def read(self, now: float) -> Reading:
        cur = self.engine.counters()
        reading = reading_from(self._prev, cur, now - self._prev_time, now)
        self._prev, self._prev_time = cur, now
        return reading


def require_cpu(counters: EngineCounters) -> None:
    """AutoscaleError if the engine does not report its CPU time (the ``cpu`` metric needs it)."""
    if counters.cpu_seconds is None:
        raise AutoscaleError("the engine's stats carry no cpu_seconds (an older pktlb run?): "
                             "the cpu metric cannot be measured; restart the engine or pick another metric")


__all__ = ["EngineMetrics", "reading_from", "require_cpu"]
