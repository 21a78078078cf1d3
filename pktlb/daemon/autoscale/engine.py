"""One service of a running engine, over its control socket(s), for the auto-scaler.

With ``pktlb run --workers N`` every worker has its own socket, snapshot and counters: changes go to
every worker, counters are added up (as ``pktlb stats`` does).  Errors become ``AutoscaleError``
with the engine's own message.  ``EngineActuator`` joins this to a ``BackendProvider``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pktlb.daemon.autoscale.interfaces import AutoscaleError, BackendProvider
from pktlb.daemon.ctlsock import ControlClientError, request, worker_sockets

SUMMED = ("new_flows", "packets_in", "active_flows")


@dataclass(frozen=True)
class BackendCounters:
    state: str  # up, drain or down (the engine's effective state, worker 0's view)
    new_flows: int
    packets_in: int
    active_flows: int


@dataclass(frozen=True)
class EngineCounters:
    workers: int
    cpu_seconds: float | None  # None: an engine that does not report it
    backends: dict[str, BackendCounters]


class EngineControl:
    def __init__(self, socket_path: str, service: str, *, timeout: float = 5.0) -> None:
        self.socket_path, self.service, self.timeout = socket_path, service, timeout

    def _all(self, payload: dict[str, Any]) -> list[Any]:
        try:
            return [request(path, payload, self.timeout) for path in worker_sockets(self.socket_path)]
        except ControlClientError as exc:
            raise AutoscaleError(f"engine: {exc}") from None

    def counters(self) -> EngineCounters:
        """The service's counters, added up over the workers; AutoscaleError for an unknown service."""
        parts = self._all({"cmd": "stats"})
        rows: dict[str, dict[str, Any]] = {}
        for part in parts:
            services = {s["name"]: s for s in part.get("services", [])}
            if self.service not in services:
                raise AutoscaleError(f"the engine has no service {self.service!r}; it has "
                                     f"{', '.join(sorted(services)) or 'none'}")
            for be in services[self.service]["backends"]:
                row = rows.setdefault(be["name"], {"state": be.get("state", "up"), **dict.fromkeys(SUMMED, 0)})
                for key in SUMMED:
                    row[key] += int(be.get(key) or 0)
        cpus = [p.get("cpu_seconds") for p in parts]
        cpu = None if any(c is None for c in cpus) else float(sum(cpus))
        return EngineCounters(len(parts), cpu, {name: BackendCounters(**row) for name, row in rows.items()})

    def add(self, name: str, address: str, port: int | None = None, mac: str | None = None) -> None:
        payload: dict[str, Any] = {"cmd": "backend", "action": "add", "service": self.service, "backend": name,
                                   "address": address}
        if port is not None:
            payload["port"] = port
        if mac is not None:
            payload["mac"] = mac
        self._all(payload)

    def drain(self, name: str) -> None:
        self._all({"cmd": "backend", "action": "drain", "service": self.service, "backend": name})

    def remove(self, name: str) -> None:
        self._all({"cmd": "backend", "action": "remove", "service": self.service, "backend": name})

    def active_flows(self, name: str) -> int:
        """The backend's flows in the engine's flow tables (0 once it is gone from the engine)."""
        row = self.counters().backends.get(name)
        return row.active_flows if row else 0


class EngineActuator:
    """Scale out: the provider creates a backend, the engine gets it.  Scale in: the engine drains and
    then removes it, the provider destroys it.  A backend the engine refuses is destroyed again."""

    def __init__(self, engine: EngineControl, provider: BackendProvider) -> None:
        self.engine, self.provider = engine, provider

    def add_backend(self) -> str:
        new = self.provider.create()
        try:
            self.engine.add(new.name, new.address, new.port, new.mac)
        except AutoscaleError:
            self.provider.destroy(new.name)
            raise
        return new.name

    def drain_backend(self, name: str) -> None:
        self.engine.drain(name)

    def active_flows(self, name: str) -> int:
        return self.engine.active_flows(name)

    def remove_backend(self, name: str) -> None:
        self.engine.remove(name)
        self.provider.destroy(name)


__all__ = ["EngineControl", "EngineActuator", "EngineCounters", "BackendCounters"]
