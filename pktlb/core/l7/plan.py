"""The proxy's snapshot: per service, its routes, each with its pool of backends and a scheduler over the live ones.

The L7 counterpart of ``pktlb.core.snapshot``: built whole by the control plane whenever a backend's
state, weight or presence changes, and swapped in whole; a request reads the snapshot in force
when it arrives.  The schedulers are the engine's (``pktlb.core.sched``), one per route, built over
the route's eligible backends (up, not draining, weight > 0), and the backends are the engine's
``BackendView`` (the fields only a packet rewriter needs are left at zero).

What a scheduler hashes: the engine hashes a connection's 5-tuple.  The proxy picks per request, and
hashes (``[service.l7] hash_key``) either the client connection's 5-tuple (``connection``: the
requests of one connection stay together under hash/maglev, as at L4) or the client's address
alone (``client``: every connection of a client goes to the same backend).  rr, wrr and lc ignore
the hash and spread the requests of one connection over the pool.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from pktlb.core.config import BackendConfig, Config, ServiceConfig
from pktlb.core.flowkey import FlowKey, flow_hash
from pktlb.core.l7.routing import RequestTarget, match_route
from pktlb.core.l7.rules import RequestRule, request_rules
from pktlb.core.l7.settings import L7Config, RouteConfig
from pktlb.core.packet.addr import ip_to_int
from pktlb.core.sched.base import BackendLoad, Scheduler
from pktlb.core.sched.registry import make_scheduler
from pktlb.core.snapshot import UP, BackendView, backend_view

TCP = 6


@dataclass(frozen=True, slots=True)
class RoutePlan:
    config: RouteConfig
    backends: tuple[BackendView, ...]  # the route's pool, every state
    scheduler: Scheduler  # over the eligible ones

    @property
    def eligible(self) -> tuple[BackendView, ...]:
        return self.scheduler.backends


@dataclass(frozen=True, slots=True)
class ServicePlan:
    config: ServiceConfig
    l7: L7Config
    backends: Mapping[str, BackendView]  # every backend of the service by name, with its state
    routes: tuple[RoutePlan, ...]
    seed: int
    rules: tuple[RequestRule, ...]  # asked about every request head before routing

    def route_for(self, target: RequestTarget) -> RoutePlan | None:
        index = match_route(self.l7.routes, target)
        return None if index is None else self.routes[index]

    def request_hash(self, client: str, client_port: int, local: str, local_port: int) -> int:
        """The hash the route's scheduler gets for a request from ``client:client_port`` to ``local:local_port``."""
        if self.l7.hash_key == "client":
            return flow_hash(TCP, _ip(client), 0, 0, 0, self.seed)
        return flow_hash(TCP, _ip(client), _ip(local), client_port, local_port, self.seed)

    def request_key(self, client: str, client_port: int, local: str, local_port: int) -> FlowKey:
        """The client connection as a flow key: ``sh`` hashes its source address, as at L4."""
        return (TCP, _ip(client), _ip(local), client_port, local_port)

    def pick(self, route: RoutePlan, request_hash: int, loads: Mapping[str, BackendLoad],
             exclude: Collection[str] = (), preferred: str | None = None,
             key: FlowKey = (TCP, 0, 0, 0, 0)) -> BackendView | None:
        """The backend for a request, avoiding ``exclude`` (backends that already refused it); ``preferred``
        (the backend a persistence cookie names) when it is eligible in the route.  Most schedulers read
        ``request_hash``; ``sh`` reads the source address of ``key`` (``request_key``)."""
        if preferred is not None and preferred not in exclude:
            for backend in route.eligible:
                if backend.name == preferred:
                    return backend
        chosen = route.scheduler.pick(key, request_hash, loads)
        if chosen is None or chosen.name not in exclude:
            return chosen
        # A retry after a refusal (a hash scheduler would answer the same again): another eligible backend.
        others = [b for b in route.eligible if b.name not in exclude]
        return others[request_hash % len(others)] if others else None


@dataclass(frozen=True, slots=True)
class ProxySnapshot:
    generation: int
    services: Mapping[str, ServicePlan]  # by service name


def _ip(address: str) -> int:
    try:
        return ip_to_int(address)
    except ValueError:  # an IPv6 peer: hash its text instead
        return sum(address.encode()) & 0xFFFFFFFF


def service_plan(svc: ServiceConfig, backends: tuple[BackendConfig, ...], states: Mapping[str, str],
                 weights: Mapping[str, int], seed: int) -> ServicePlan:
    """The plan of one L7 service whose current backends are ``backends`` (state and weight by name)."""
    if svc.l7 is None:
        raise ValueError(f"service {svc.name!r} has mode {svc.mode}, not l7")
    views = {be.name: backend_view(svc, be, 0, 0, states.get(be.name, UP), weights.get(be.name, be.weight), None)
             for be in backends}
    routes = []
    for route in svc.l7.routes:
        pool = tuple(views[n] for n in (route.backends if route.backends is not None else views) if n in views)
        scheduler = make_scheduler(route.scheduler or svc.scheduler, [b for b in pool if b.eligible], seed=seed,
                                   table_size=svc.maglev_table_size)
        routes.append(RoutePlan(config=route, backends=pool, scheduler=scheduler))
    return ServicePlan(config=svc, l7=svc.l7, backends=views, routes=tuple(routes), seed=seed,
                       rules=request_rules(svc.l7))


def build_proxy_snapshot(config: Config, *, generation: int = 1, states: Mapping[tuple[str, str], str] | None = None,
                         weights: Mapping[tuple[str, str], int] | None = None,
                         extra_backends: Mapping[str, tuple[BackendConfig, ...]] | None = None,
                         removed: Collection[tuple[str, str]] = frozenset()) -> ProxySnapshot:
    """Every L7 service's plan from config plus runtime overrides keyed by (service, backend), as
    ``pktlb.core.snapshot.build_snapshot`` takes them."""
    states, weights = states or {}, weights or {}
    plans = {}
    for svc in config.services:
        if svc.l7 is None:
            continue
        merged = {b.name: b for b in svc.backends}
        merged.update((b.name, b) for b in (extra_backends or {}).get(svc.name, ()))
        current = tuple(b for b in merged.values() if (svc.name, b.name) not in removed)
        plans[svc.name] = service_plan(
            svc, current, {b: s for (sv, b), s in states.items() if sv == svc.name},
            {b: w for (sv, b), w in weights.items() if sv == svc.name}, config.lb.hash_seed)
    return ProxySnapshot(generation=generation, services=plans)
