"""What the proxy tells the control socket: ``stats``, ``backends``, ``backend`` changes, ``ping``.

The same wire protocol and commands as the engine's (``pktlb.daemon.report``), so ``pktlb stats``,
``pktlb backend drain/down/up/weight/add/remove`` work against either; the stats say
``"kind": "l7-proxy"`` and hold what an HTTP proxy counts (requests, responses by class, rejections
by reason, pooled connections) instead of frames and flows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from pktlb.core.l7.rejects import REJECTS
from pktlb.daemon.control import backend_config
from pktlb.daemon.proxy.control import ProxyControl
from pktlb.daemon.proxy.health import ProxyHealth
from pktlb.daemon.proxy.service import ServiceRuntime

STATS_KIND = "l7-proxy"


class ProxyReporter:
    def __init__(self, control: ProxyControl, services: dict[str, ServiceRuntime], health: ProxyHealth | None,
                 started: float, reload: Callable[[], dict[str, Any]] | None = None) -> None:
        self.control = control
        self.services = services
        self.health = health
        self.started = started
        self.reload = reload

    def handle(self, request: dict[str, Any]) -> Any:
        handler = getattr(self, f"cmd_{request['cmd']}", None)
        if handler is None:
            raise ValueError(f"unknown command {request['cmd']!r}: expected one of {', '.join(self.commands())}")
        return handler(request)

    def commands(self) -> list[str]:
        return sorted(name[4:] for name in dir(self) if name.startswith("cmd_"))

    def cmd_ping(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "pid": os.getpid(), "generation": self.control.snapshot.generation,
                "kind": STATS_KIND}

    def cmd_stats(self, request: dict[str, Any]) -> dict[str, Any]:
        health = self.health.summaries() if self.health else {}
        services = [self._service_row(rt, health) for rt in self.services.values()]
        totals: dict[str, Any] = {"connections": 0, "open_connections": 0, "requests": 0, "responses": {},
                                  "rejects": {}, "idle_closed": 0, "tls_full": 0, "tls_resumed": 0}
        for row in services:
            for key in ("connections", "open_connections", "requests", "idle_closed", "tls_full", "tls_resumed"):
                totals[key] += row["counters"][key]
            for key in ("responses", "rejects"):
                for name, n in row["counters"][key].items():
                    totals[key][name] = totals[key].get(name, 0) + n
        return {
            "kind": STATS_KIND, "generation": self.control.snapshot.generation, "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 1), "totals": totals,
            "reject_reasons": {r: REJECTS[r].meaning for r in totals["rejects"]},
            "services": services, "health_checks": self.health.counters() if self.health else {},
            "changes": [c.as_dict() for c in self.control.history[-10:]],
        }

    def _service_row(self, rt: ServiceRuntime, health: dict[tuple[str, str], dict[str, object]]) -> dict[str, Any]:
        plan, control = rt.plan, self.control
        backends = []
        for be in plan.backends.values():
            key = (rt.name, be.name)
            load = rt.loads.get(be.name)
            pool = rt.pools.get(be.name)
            backends.append({
                "name": be.name, "address": be.address, "port": be.port, "state": be.state,
                "admin": control.admin.get(key, "up"), "weight": be.weight,
                "in_flight": load.active_flows if load else 0,
                "rtt_ms": round(load.rtt * 1000, 3) if load and load.rtt is not None else None,
                **rt.stats.backend(*key).as_dict(),
                "pool": pool.figures() if pool else {"active": 0, "idle": 0},
                "health": _health_row(health.get(key)),
            })
        return {
            "name": rt.name, "vip": plan.config.vip, "port": plan.config.port, "protocol": "tcp", "mode": "l7",
            "scheduler": plan.config.scheduler, "hash_key": plan.l7.hash_key, "tls": plan.l7.tls is not None,
            "counters": rt.counters.as_dict(),
            "cache": rt.cache.figures() if rt.cache is not None else None,
            "rate_limit": rt.limiter.figures() if rt.limiter is not None else None,
            "routes": [{"name": r.config.name, "host": r.config.host, "path_prefix": r.config.path_prefix,
                        "scheduler": r.config.scheduler or plan.config.scheduler,
                        "backends": [b.name for b in r.backends], "eligible": [b.name for b in r.eligible]}
                       for r in plan.routes],
            "backends": backends,
        }

    def cmd_reload(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.reload is None:
            raise ValueError("this proxy was not started from a config file: nothing to reload")
        return self.reload()

    def cmd_backends(self, request: dict[str, Any]) -> list[dict[str, object]]:
        return self.control.describe_backends()

    def cmd_backend(self, request: dict[str, Any]) -> dict[str, Any]:
        control = self.control
        action, service, name = request["action"], request["service"], request["backend"]
        if action == "add":
            be = backend_config(name, request["address"], int(request.get("port") or control.service(service).port),
                                int(request.get("weight", 1)))
            change = control.add_backend(service, be)
            if self.health is not None:
                self.health.add_backend(control.service(service), be)
        elif action == "remove":
            change = control.remove_backend(service, name)
            if self.health is not None:
                self.health.remove_backend(service, name)
        elif action == "weight":
            change = control.set_weight(service, name, int(request["weight"]))
        elif action in ("drain", "down", "up"):
            change = control.set_admin(service, name, action)
        else:
            raise ValueError(f"unknown backend action {action!r}: expected add, remove, drain, weight, down or up")
        return change.as_dict()


def _health_row(h: dict[str, Any] | None) -> dict[str, Any] | None:
    if h is None:
        return None
    since = h.get("since")
    return {"state": h.get("state"), "since_s": round(time.monotonic() - since, 1) if since is not None else None,
            "reason": h.get("reason"),
            "last_rtt_ms": round(h["last_rtt"] * 1000, 3) if h.get("last_rtt") is not None else None,
            "checks": [{"type": c["check"], "status": c["status"], "verdict": c["verdict"], "detail": c["detail"]}
                       for c in h.get("checks", [])]}
