"""What the auto-scaling loop talks to, as small interfaces, so it runs with fakes in unit tests.

* ``MetricSource.read(now)`` -> a ``Reading``: every metric's service total, per-backend values and
  the backends the engine has (name -> state), or raises ``AutoscaleError``.
* ``Actuator``: add a backend (create it and put it in the engine), drain one, count its flows,
  remove it (from the engine, then destroy it).
* ``BackendProvider``: where new backends come from (standby hosts now, lab namespaces later).
* ``Clock``: ``now()`` and ``sleep()``, monotonic seconds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

METRICS = {
    "new_flows_per_s": "new flows per second the engine sent to the service's backends (counter new_flows)",
    "active_flows": "flows in the engine's flow table for the service (a gauge)",
    "pps": "packets per second the engine forwarded from clients to the service's backends (counter packets_in)",
    "cpu": "CPU seconds per second of the engine's processes, all workers (1.0 = one core busy): the LB's own "
           "load, a proxy for the traffic; more backends do not lower it",
}


class AutoscaleError(RuntimeError):
    """A metric that cannot be read or an action that failed; the message says what and why."""


@dataclass(frozen=True)
class Reading:
    time: float
    values: Mapping[str, float | None]  # metric -> service total; None: not known yet (a rate's first reading)
    per_backend: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # metric -> backend -> value
    backends: Mapping[str, str] = field(default_factory=dict)  # name -> state in the engine (up, drain, down)
    p99_ms: float | None = None  # request latency, when the source measures it


@dataclass(frozen=True)
class NewBackend:
    name: str
    address: str
    port: int | None = None  # None: the service's port
    mac: str | None = None  # None: the engine resolves it


class MetricSource(Protocol):
    def read(self, now: float) -> Reading: ...


class Actuator(Protocol):
    def add_backend(self) -> str: ...

    def drain_backend(self, name: str) -> None: ...

    def active_flows(self, name: str) -> int: ...

    def remove_backend(self, name: str) -> None: ...


class BackendProvider(Protocol):
    def create(self) -> NewBackend: ...

    def destroy(self, name: str) -> None: ...


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


__all__ = ["METRICS", "AutoscaleError", "Reading", "NewBackend", "MetricSource", "Actuator", "BackendProvider",
           "Clock", "MonotonicClock"]
