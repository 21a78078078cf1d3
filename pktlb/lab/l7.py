"""The lab's L7 layout (``pktlb lab up --mode l7``): the proxy's service definition, and HAProxy's rendering of it.

In mode l7 the LB namespace owns the VIP (on ``lo``; the router already routes it there) and runs an
HTTP proxy on it: ``pktlb proxy`` (``--engine pktlb``) or HAProxy (``--engine haproxy``), both
configured from one service definition, the ``mode = "l7"`` service this module writes into the
lab's ``pktlb.toml``; ``haproxy.cfg`` is ``pktlb.core.l7.haproxy``'s rendering of that same file.
The backends keep their own addresses and answer the proxy (198.18.0.2) directly: they see the
proxy as their peer and the client in ``X-Forwarded-For`` / ``Forwarded``.

The service's routes let a student see content routing without editing anything::

    Host: api.lab          -> be1 only             (route "api")
    path /static/...       -> the last backend     (route "static")
    anything else          -> every backend        (route "default", per request with rr)
"""

from __future__ import annotations

import time
from typing import Any

import tomli_w

from pktlb.adapters.haproxy_stats import HaproxyStatsError, haproxy_stats
from pktlb.core.config import Config, parse_config
from pktlb.core.l7.haproxy import haproxy_config
from pktlb.core.l7.settings import L7_MODE
from pktlb.daemon.ctlsock import ControlClientError, request
from pktlb.lab.paths import LabPaths
from pktlb.lab.topology import Plan

API_HOST = "api.lab"
STATIC_PREFIX = "/static/"
# Limits the lab tests and the compare rely on: a slow request head is cut after HEADER_TIMEOUT s.
LAB_LIMITS = {"header_timeout": 5.0, "idle_timeout": 30.0, "max_header_bytes": 16384, "max_connections": 1024,
              "pool_idle_timeout": 10.0}


def l7_routes(backend_names: list[str]) -> list[dict[str, Any]]:
    """The lab's routes: by Host (api.lab -> the first backend), by path (/static/ -> the last), the rest to all."""
    return [{"name": "api", "host": API_HOST, "backends": backend_names[:1]},
            {"name": "static", "path_prefix": STATIC_PREFIX, "backends": backend_names[-1:]},
            {"name": "default", "path_prefix": "/"}]


def l7_config_data(plan: Plan) -> dict[str, Any]:
    """The lab's proxy config: one ``mode = "l7"`` service on the VIP over the backends' own addresses."""
    c, o = plan.constants, plan.options
    lb = plan.by_role("lb")[0]
    backends = plan.by_role("backend")
    port = int(c["service_port"])
    web: dict[str, Any] = {
        "name": "web", "vip": c["vip"], "port": port, "protocol": "tcp", "mode": L7_MODE, "scheduler": o.scheduler,
        "l7": dict(LAB_LIMITS),
        "health": {"checks": ["http"], "interval": 1.0, "timeout": 1.0, "rise": 2, "fall": 3, "http_path": "/health"},
        "route": l7_routes([b.name for b in backends]),
        "backend": [{"name": b.name, "address": b.address, "port": port} for b in backends],
    }
    services = [web]
    if o.tls:  # `lab up --tls`: the same service over HTTPS, TLS ended here (the lab's throwaway certificate)
        tls = LabPaths.at(plan.statedir).tls_dir
        services.append({**web, "name": "web-tls", "port": int(c["tls_port"]),
                         "l7": {**web["l7"], "tls": {"cert": str(tls / "vip.pem"), "key": str(tls / "vip.pem.key")}}})
    return {"lb": {"address": lb.address, "control_socket": str(LabPaths.at(plan.statedir).control_socket)},
            "service": services}


def l7_config_text(plan: Plan) -> str:
    o = plan.options
    header = (f"# pktlb proxy configuration for the lab {o.prefix!r} (mode l7, engine {o.engine}); written by "
              "`pktlb lab up`.\n# With --engine haproxy, haproxy.cfg beside it is rendered from this file.\n")
    return header + tomli_w.dumps(l7_config_data(plan))


def l7_files(plan: Plan) -> tuple[dict[str, str], Config]:
    """The files an l7 lab writes into its state directory (name -> text) and the parsed proxy config.

    ConfigError if the lab would write a bad config."""
    paths = LabPaths.at(plan.statedir)
    text = l7_config_text(plan)
    config = parse_config(text)
    files = {paths.config.name: text}
    if plan.engine_service == "haproxy":
        files[paths.haproxy_config.name] = haproxy_config(config, stats_socket=str(paths.haproxy_socket))
    return files, config


def engine_socket(plan: Plan) -> str | None:
    """The socket that answers once the lab's engine is up (the proxy's control socket, HAProxy's stats socket)."""
    paths = LabPaths.at(plan.statedir)
    if plan.engine_service == "haproxy":
        return str(paths.haproxy_socket)
    return str(paths.control_socket) if plan.engine_service else None


def backend_states(plan: Plan) -> dict[str, str] | None:
    """Each backend's state as the lab's proxy sees it now ("up", "down", ...); None while it does not answer."""
    socket = engine_socket(plan)
    if socket is None:
        return None
    try:
        if plan.engine_service == "haproxy":
            stats = haproxy_stats(socket, timeout=1.0)
        else:
            stats = request(socket, {"cmd": "stats"}, timeout=1.0)
    except (HaproxyStatsError, ControlClientError, OSError):
        return None
    return {be["name"]: be["state"] for svc in stats["services"] for be in svc["backends"]}


def await_backends_up(plan: Plan, timeout: float) -> list[str]:
    """Wait (bounded) until the proxy counts every backend up; the names still not up when it gives up.

    HAProxy marks a server down at its first failed check, and its first check may come before the
    backend listens: this wait keeps `lab up` from handing over a lab whose proxy still answers 503."""
    names = [b.name for b in plan.by_role("backend")]
    deadline = time.monotonic() + timeout
    states = backend_states(plan) or {}
    while time.monotonic() < deadline:
        states = backend_states(plan) or {}
        if all(states.get(name) == "up" for name in names):
            return []
        time.sleep(0.1)  # health checks run on their own interval: nothing to await but the next look
    return [name for name in names if states.get(name) != "up"]


def proxy_connections_opened(plan: Plan) -> int | None:
    """Backend connections the lab's proxy has opened so far, by its own count (health checks not
    included, unlike the backends' accepted connections); None when it does not answer."""
    socket = engine_socket(plan)
    if socket is None:
        return None
    try:
        if plan.engine_service == "haproxy":
            return int(haproxy_stats(socket, timeout=2.0)["totals"]["backend_connections_opened"])
        stats = request(socket, {"cmd": "stats"}, timeout=2.0)
    except (HaproxyStatsError, ControlClientError, OSError):
        return None
    return sum(int(be.get("connections_opened", 0)) for svc in stats["services"] for be in svc["backends"])
