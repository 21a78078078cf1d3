"""The engine's health checks (``pktlb.daemon.health.monitor``) for the proxy's backends, on the asyncio loop.

The one place the proxy touches the health subsystem: checkers, rise/fall state machines and
their counters are the engine's, fed the proxy's part of the config.  Each state change calls
``on_state(service, backend, "up" | "down", reason)``; each successful check's RTT calls
``on_rtt(service, backend, seconds)`` (the ``lrt`` scheduler reads it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pktlb.core.config import BackendConfig, Config, ServiceConfig
from pktlb.core.health import HealthEvent, backend_health, forwarding_state
from pktlb.daemon.health.monitor import HealthMonitor
from pktlb.daemon.proxy.loop_adapter import AsyncioReactor

StateCallback = Callable[[str, str, str, str], None]
RttCallback = Callable[[str, str, float], None]


class ProxyHealth:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop, on_state: StateCallback,
                 on_rtt: RttCallback | None = None) -> None:
        self.reactor = AsyncioReactor(loop)
        self.on_state = on_state
        self.on_rtt = on_rtt
        self.monitor: HealthMonitor | None = None
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        """Check what ``config`` asks for from now on (every backend starts again at ``init``, served)."""
        self.close()
        self.config = config
        if any(backend_health(svc, be).checks for svc in config.services for be in svc.backends):
            self.monitor = HealthMonitor(config, now=self.reactor.clock(), on_event=self._on_event,
                                         on_rtt=self.on_rtt)
            self.monitor.attach(self.reactor)

    def _on_event(self, event: HealthEvent) -> None:
        self.on_state(event.service, event.backend, forwarding_state(event.new), event.reason)

    def add_backend(self, service: ServiceConfig, backend: BackendConfig) -> None:
        if self.monitor is not None:
            self.monitor.add_backend(service, backend, self.config.lb.address, self.reactor.clock())

    def remove_backend(self, service: str, backend: str) -> None:
        if self.monitor is not None:
            self.monitor.remove_backend(service, backend)

    def summaries(self) -> dict[tuple[str, str], dict[str, object]]:
        rows = self.monitor.summaries() if self.monitor is not None else []
        return {(str(r["service"]), str(r["backend"])): r for r in rows}

    def counters(self) -> dict[str, dict[str, int]]:
        return self.monitor.counters() if self.monitor is not None else {}

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
