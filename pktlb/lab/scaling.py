"""Backends in and out of a running lab *and its engine*: `pktlb lab backend add|remove`, and the
auto-scaler's lab provider.

* ``add_backend``: a new host (``pktlb.lab.backends.create_backend``), then, with the pktlb engine,
  the backend goes into every service of the engine (web and iperf, as `lab up` does), through the
  control socket (every worker's).  If the engine refuses it, the host is removed again.
* ``remove_backend``: drain it in every engine service that has it, wait until its flows have ended
  or ``drain_timeout`` has passed, remove it from the engine, then remove the host.
* ``LabBackendProvider``: the auto-scaler's ``BackendProvider`` for a lab.  It lends the lab's
  standby backends first (hosts that run but are not in the engine; they stay when given back),
  then creates new hosts, which it removes again when the auto-scaler is done with them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pktlb.daemon.autoscale.engine import EngineControl
from pktlb.daemon.autoscale.interfaces import AutoscaleError, NewBackend
from pktlb.daemon.ctlsock import ControlClientError, request
from pktlb.lab.backends import BackendHost, create_backend, destroy_backend, lab_options, running_lab
from pktlb.lab.paths import LabPaths
from pktlb.lab.topology import LabError

FLOWS_POLL = 0.2  # seconds between two looks at a draining backend's flows


def engine_services(paths: LabPaths) -> list[str]:
    """The engine's service names (LabError when the lab has no pktlb engine answering)."""
    if not paths.control_socket.exists():
        raise LabError(f"the lab {paths.prefix!r} has no pktlb engine running (no control socket at "
                       f"{paths.control_socket})")
    try:
        stats = request(str(paths.control_socket), {"cmd": "stats"})
    except ControlClientError as exc:
        raise LabError(f"the lab's engine does not answer: {exc}") from None
    return [s["name"] for s in stats.get("services", [])]


def _has_engine(recorded: dict[str, Any]) -> bool:
    return lab_options(recorded).engine == "pktlb"


def _controls(paths: LabPaths) -> list[EngineControl]:
    return [EngineControl(str(paths.control_socket), name) for name in engine_services(paths)]


def add_backend(prefix: str, name: str | None = None, *, engine: bool = True) -> dict[str, Any]:
    """Create a backend host and (``engine``, with the pktlb engine) add it to every engine service."""
    paths, recorded = running_lab(prefix)
    controls = _controls(paths) if engine and _has_engine(recorded) else []
    host = create_backend(prefix, name)
    added = []
    try:
        for control in controls:
            control.add(host.name, host.address)  # the engine resolves its MAC (neighbour table)
            added.append(control.service)
    except AutoscaleError as exc:
        for control in controls:
            if control.service in added:
                _quietly(partial(control.remove, host.name))
        destroy_backend(prefix, host.name)
        raise LabError(f"the engine refused backend {host.name} (the host was removed again): {exc}") from None
    return {"backend": host.name, "address": host.address, "mac": host.mac, "namespace": host.namespace,
            "services": list(host.services), "engine_services": added}


def remove_backend(prefix: str, name: str, *, drain_timeout: float = 30.0,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Drain the backend in the engine, wait for its flows (at most ``drain_timeout`` s), remove it
    from the engine, then remove its host.  What happened, with the flows cut (0 after a clean drain)."""
    paths, recorded = running_lab(prefix)
    if name not in [n["name"] for n in recorded["nodes"] if n.get("role") == "backend"]:
        raise LabError(f"no backend {name!r} in the lab {prefix!r}")
    report: dict[str, Any] = {"backend": name, "engine_services": [], "drain_s": 0.0, "flows_cut": 0}
    if _has_engine(recorded) and paths.control_socket.exists():
        try:
            controls = [c for c in _controls(paths) if name in c.counters().backends]
            for control in controls:
                control.drain(name)
            started = time.monotonic()
            if progress and controls:
                progress(f"draining {name} (at most {drain_timeout:g} s)")
            flows = sum(c.active_flows(name) for c in controls)
            while flows and time.monotonic() - started < drain_timeout:
                time.sleep(FLOWS_POLL)  # the engine has no event for "flows ended": look again
                flows = sum(c.active_flows(name) for c in controls)
            for control in controls:
                control.remove(name)
        except AutoscaleError as exc:
            raise LabError(f"backend {name}: {exc} (the host was left as it is)") from None
        report.update(engine_services=[c.service for c in controls], drain_s=round(time.monotonic() - started, 3),
                      flows_cut=flows)
    report["host"] = destroy_backend(prefix, name)
    return report


def _quietly(action: Callable[[], Any]) -> None:
    try:
        action()
    except (AutoscaleError, LabError):
        pass


@dataclass
class LabBackendProvider:
    """``create``: a standby backend of the lab if one is free, else a new host (not yet in the engine:
    the auto-scaler's actuator adds it).  ``destroy``: a standby one goes back to the pool; a created
    one is taken out of every engine service still holding it, and its host is removed."""

    prefix: str
    standby: list[str] = field(default_factory=list)  # the lab's hosts that are not in the engine
    created: set[str] = field(default_factory=set)
    lent: set[str] = field(default_factory=set)
    make: Callable[[str], BackendHost] = create_backend

    def create(self) -> NewBackend:
        try:
            free = [n for n in self.standby if n not in self.lent]
            if free:
                _, recorded = running_lab(self.prefix)
                node = next((n for n in recorded["nodes"] if n["name"] == free[0]), None)
                if node is None:
                    raise LabError(f"standby backend {free[0]} is no longer in the lab")
                self.lent.add(free[0])
                return NewBackend(free[0], node["address"])
            host = self.make(self.prefix)
        except LabError as exc:
            raise AutoscaleError(str(exc)) from None
        self.created.add(host.name)
        return NewBackend(host.name, host.address)

    def destroy(self, name: str) -> None:
        if name in self.lent:
            self.lent.discard(name)
            return
        if name not in self.created:
            return  # not ours (an operator's backend): leave it
        try:
            remove_backend(self.prefix, name, drain_timeout=0.0)
        except LabError as exc:
            raise AutoscaleError(str(exc)) from None
        self.created.discard(name)


__all__ = ["add_backend", "remove_backend", "engine_services", "LabBackendProvider"]
