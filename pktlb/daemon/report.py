"""What the engine tells the control socket: stats, flows, backend changes, reload, history.

Rates are computed once a second from counter differences (as ``ipvsadm --rate`` does).  Drop
logging is rate-limited: one summary line per interval however many frames an attacker sends.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

from pktlb.core.decision import DROP_REASONS
from pktlb.core.packet.addr import int_to_ip
from pktlb.daemon.control import backend_config

log = logging.getLogger("pktlb.engine")
DROP_LOG_INTERVAL = 10.0
MAX_FLOWS_LISTED = 10_000


class Reporter:
    def __init__(self, forwarder: Any) -> None:
        self.fwd = forwarder
        self.rates: dict[tuple[str, str], dict[str, float]] = {}
        self._last: dict[tuple[str, str], tuple[int, int, int, int]] = {}
        self._last_time = time.monotonic()
        self._drops_logged = 0
        self._last_drop_log = time.monotonic()
        self._slots_generation = -1
        self._slots: dict[str, dict[str, int] | None] = {}  # service -> Maglev slots per backend, this generation

    # -- once a second ---------------------------------------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        elapsed = max(now - self._last_time, 1e-6)
        for key, c in self.fwd.datapath.stats.backends.items():
            cur = (c.packets_in, c.bytes_in, c.packets_out, c.bytes_out)
            prev = self._last.get(key, (0, 0, 0, 0))
            self.rates[key] = {"pps_in": (cur[0] - prev[0]) / elapsed, "bps_in": 8 * (cur[1] - prev[1]) / elapsed,
                               "pps_out": (cur[2] - prev[2]) / elapsed, "bps_out": 8 * (cur[3] - prev[3]) / elapsed}
            self._last[key] = cur
        self._last_time = now
        dropped = self.fwd.datapath.stats.dropped
        if dropped > self._drops_logged and now - self._last_drop_log >= DROP_LOG_INTERVAL:
            log.info("dropped %d frames in the last %.0f s (totals by reason: %s)", dropped - self._drops_logged,
                     now - self._last_drop_log, dict(self.fwd.datapath.stats.drops))
            self._drops_logged, self._last_drop_log = dropped, now

    # -- the control protocol --------------------------------------------------------------------
    def handle(self, request: dict[str, Any]) -> Any:
        cmd = request["cmd"]
        handler = getattr(self, f"cmd_{cmd}", None)
        if handler is None:
            raise ValueError(f"unknown command {cmd!r}: expected one of {', '.join(self.commands())}")
        return handler(request)

    def commands(self) -> list[str]:
        return sorted(name[4:] for name in dir(self) if name.startswith("cmd_"))

    def cmd_ping(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "pid": os.getpid(), "generation": self.fwd.control.snapshot.generation}

    def cmd_stats(self, request: dict[str, Any]) -> dict[str, Any]:
        fwd = self.fwd
        for one in fwd.ports:
            one.kernel_stats()
        snap, dp = fwd.control.snapshot, fwd.datapath
        health = {(h["service"], h["backend"]): h for h in (fwd.monitor.summaries() if fwd.monitor else [])}
        services = []
        for row_svc in snap.services.values():
            loads = dp.flows.loads_for(row_svc.name)
            backends = []
            for be in row_svc.backends:
                key = (row_svc.name, be.name)
                counters = dp.stats.backend(*key).as_dict()
                load = loads.get(be.name)
                h = health.get(key)
                backends.append({
                    "name": be.name, "address": be.address, "port": be.port, "state": be.state,
                    "admin": fwd.control.admin.get(key, "up"), "weight": be.weight,
                    "active_flows": load.active_flows if load else 0, **counters,
                    **self.rates.get(key, {"pps_in": 0.0, "bps_in": 0.0, "pps_out": 0.0, "bps_out": 0.0}),
                    "rtt_ms": round(load.rtt * 1000, 3) if load and load.rtt is not None else None,
                    "health": health_row(h),
                })
            slots = self._slot_counts(snap.generation, row_svc.name, row_svc.scheduler)
            services.append({
                "name": row_svc.name, "vip": int_to_ip(row_svc.vip), "port": row_svc.port,
                "protocol": {6: "tcp", 17: "udp"}[row_svc.proto], "mode": row_svc.mode,
                "scheduler": row_svc.config.scheduler, "backends": backends,
                "drops": dict(dp.stats.service_drops.get(row_svc.name, {})),
                "maglev_slots": slots,
                "mtu": row_svc.mtu,  # the service's MTU and the paths toward its backends: the smallest
            })
        port = _port_totals([one.counters for one in [*fwd.ports, *fwd.tx_only.values()]])
        return {
            "kind": "engine",  # the dashboard renders a source by this (the L7 proxy answers "proxy")
            "generation": snap.generation, "uptime": round(time.time() - fwd.started, 1), "worker": fwd.worker,
            "cpu_seconds": round(time.process_time(), 4),  # this process's user + system CPU time so far
            "totals": dp.stats.totals(), "drop_reasons": {r: DROP_REASONS[r] for r in dp.stats.drops},
            "flows": dp.flows.stats(), "services": services, "fastpath": self._fastpath(),
            "port": {"rx": port.rx, "tx": port.tx, "rx_truncated": port.rx_truncated,
                     "rx_partial": port.rx_partial, "rx_gso": port.rx_gso,
                     "tx_errors": dict(port.tx_errors), "kernel_drops": port.kernel_drops,
                     "last_tx_monotonic": fwd.last_tx},
            "changes": [c.as_dict() for c in fwd.control.history[-10:]],
            "interfaces": [{"name": one.ifname, "receives": one in fwd.ports, "rx": one.counters.rx,
                            "tx": one.counters.tx, "tx_errors": dict(one.counters.tx_errors),
                            "kernel_drops": one.counters.kernel_drops}
                           for one in [*fwd.ports, *fwd.tx_only.values()]],
            "routing": {**fwd.netlink.summary(), **fwd.egress.summary()},
        }

    def _slot_counts(self, generation: int, service: str, scheduler: Any) -> dict[str, int] | None:
        """Maglev's slots per backend, counted once per snapshot (a snapshot never changes once built;
        counting its 65537 slots took 20 ms of the packet loop on every stats request)."""
        if self._slots_generation != generation:
            self._slots_generation, self._slots = generation, {}
        if service not in self._slots:
            counter = getattr(scheduler, "slot_counts", None)
            self._slots[service] = counter() if counter else None
        slots = self._slots[service]
        return dict(slots) if slots is not None else None

    def _fastpath(self) -> dict[str, object]:
        sync = getattr(self.fwd, "fastpath", None)
        if sync is None:
            return {"hook": "off", "reason": getattr(self.fwd, "fastpath_reason", "off")}
        return sync.report()

    def cmd_flows(self, request: dict[str, Any]) -> dict[str, Any]:
        now = time.monotonic()
        limit = min(int(request.get("limit", 1000)), MAX_FLOWS_LISTED)
        rows: list[dict[str, object]] = []
        for entry in self.fwd.datapath.flows:
            if len(rows) >= limit:
                break
            row = entry.as_dict()
            row["age"] = round(now - entry.created, 1)
            row["idle"] = round(now - entry.last_seen, 1)
            rows.append(row)
        return {"count": len(self.fwd.datapath.flows), "listed": len(rows), "flows": rows}

    def cmd_backend(self, request: dict[str, Any]) -> dict[str, Any]:
        control = self.fwd.control
        action, service, name = request["action"], request["service"], request["backend"]
        if action == "add":
            be = backend_config(name, request["address"], int(request.get("port") or control.service(service).port),
                                int(request.get("weight", 1)), request.get("mac"))
            if self.fwd.netlink.egress(be.address) is None:  # also asks the kernel to resolve its next hop
                raise ValueError(f"backend {name} address {be.address!r}: no route to it in the engine's namespace")
            change = control.add_backend(service, be)
            self.fwd.set_filter()
            if self.fwd.monitor is not None:
                self.fwd.monitor.add_backend(control.service(service), be, self.fwd.config.lb.address,
                                             self.fwd.reactor.clock())
        elif action == "remove":
            change = control.remove_backend(service, name)
            self.fwd.set_filter()
            if self.fwd.monitor is not None:
                self.fwd.monitor.remove_backend(service, name)
        elif action == "weight":
            change = control.set_weight(service, name, int(request["weight"]))
        elif action in ("drain", "down", "up"):
            change = control.set_admin(service, name, action)
        else:
            raise ValueError(f"unknown backend action {action!r}: expected add, remove, drain, weight, down or up")
        return change.as_dict()

    def cmd_reload(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.fwd.reload()

    def cmd_backends(self, request: dict[str, Any]) -> list[dict[str, object]]:
        return self.fwd.control.describe_backends()


def _port_totals(counters: list[Any]) -> Any:
    """One set of port counters summed over every interface (the shape `pktlb stats` always showed)."""
    total = SimpleNamespace(rx=0, tx=0, rx_truncated=0, rx_partial=0, rx_gso=0, kernel_drops=0, tx_errors=Counter())
    for c in counters:
        for name in ("rx", "tx", "rx_truncated", "rx_partial", "rx_gso", "kernel_drops"):
            setattr(total, name, getattr(total, name) + getattr(c, name))
        total.tx_errors.update(c.tx_errors)
    return total


def health_row(h: dict[str, Any] | None) -> dict[str, Any] | None:
    """A backend's health in `pktlb stats --json`.  ``since_monotonic`` is the engine's time.monotonic()
    when the state last changed, unrounded: CLOCK_MONOTONIC, the same clock for every process on the host
    (network namespaces do not change it), so a test can time a detection from its own cut to the engine's
    decision without its polling delay."""
    if h is None:
        return None
    checks = h.get("checks", [])
    since = h.get("since")
    return {"state": h.get("state"), "since_s": round(time.monotonic() - since, 1) if since is not None else None,
            "since_monotonic": since,
            "reason": h.get("reason"),
            "last_rtt_ms": round(h["last_rtt"] * 1000, 3) if h.get("last_rtt") is not None else None,
            "checks": [{"type": c["check"], "status": c["status"], "verdict": c["verdict"], "detail": c["detail"]}
                       for c in checks]}
