"""The forwarding snapshot: an immutable, per-service view the data path reads.

The control plane builds a new snapshot (schedulers and Maglev tables included) off the packet
path whenever the backend set, a weight or a liveness state changes, and swaps it in whole.
Per-backend values the rewriters need (addresses as bytes, MACs, RFC 1624 checksum deltas) are
computed here once, not per packet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pktlb.core.checksum import add_deltas, delta16, delta32
from pktlb.core.config import BackendConfig, Config, ServiceConfig
from pktlb.core.packet.addr import ip_to_int, mac_to_bytes
from pktlb.core.packet.ipv4 import PROTO_NUMBERS
from pktlb.core.rewrite.base import Rewriter
from pktlb.core.rewrite.registry import get_rewriter
from pktlb.core.rewrite.tunnel import outer_base_sum
from pktlb.core.sched.base import Scheduler
from pktlb.core.sched.registry import make_scheduler

# Backend administrative/health states.
UP, DOWN, DRAIN = "up", "down", "drain"
# The MAC of a next hop nobody resolved: the engine's forwarder writes the real one from the kernel's
# neighbour table before sending (pktlb.daemon.egress); replay and explain pass MACs explicitly.
UNRESOLVED_MAC = bytes(6)
# IP checksum delta of a TTL decrement: the TTL/protocol word drops by 0x100 (RFC 1624 constant).
TTL_DEC_DELTA = 0xFEFF


@dataclass(frozen=True, slots=True)
class BackendView:
    name: str
    address: str
    addr: int
    addr_bytes: bytes
    port: int
    port_bytes: bytes
    weight: int
    mac: bytes
    l2: bytes  # the Ethernet addresses of a frame toward this backend: its MAC, then the LB's (12 bytes)
    state: str
    # NAT, inbound (VIP:vport -> backend:port) and outbound (backend:port -> VIP:vport) deltas.
    in_ip_delta: int  # includes the TTL decrement
    in_l4_delta: int
    in_pseudo_delta: int  # address part only: what an unfinished (partial) L4 checksum needs
    out_ip_delta: int  # includes the TTL decrement
    out_l4_delta: int
    out_pseudo_delta: int
    # Partial sum of the tunnel outer header (without total length and ID), see rewrite.tunnel.
    outer_base_sum: int

    @property
    def eligible(self) -> bool:
        """May take new flows."""
        return self.state == UP and self.weight > 0


@dataclass(frozen=True, slots=True)
class ServiceView:
    name: str
    vip: int
    vip_bytes: bytes
    port: int
    port_bytes: bytes
    proto: int
    mode: str
    backends: tuple[BackendView, ...]
    by_name: Mapping[str, BackendView]
    scheduler: Scheduler
    mtu: int
    snat: int  # fullnat source address (0 when not fullnat)
    snat_bytes: bytes  # the same as the frame carries it
    snat_ports: tuple[int, int]
    on_backend_down: str
    rewriter: Rewriter
    config: ServiceConfig

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.proto, self.vip, self.port)


@dataclass(frozen=True, slots=True)
class Snapshot:
    generation: int
    lb_addr: int
    lb_mac: bytes
    gateway_mac: bytes
    reply_l2: bytes  # the Ethernet addresses of a frame back toward the client: the router's MAC, then the LB's
    seed: int
    services: Mapping[tuple[int, int, int], ServiceView]
    vips: frozenset[int]
    # (proto, backend addr, backend port) -> (service, backend): replies that NAT must rewrite back.
    nat_reverse: Mapping[tuple[int, int, int], tuple[ServiceView, BackendView]]
    # fullnat SNAT addresses the LB owns -> services using them.
    snat_addrs: frozenset[int]
    config: Config
    states: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def service_named(self, name: str) -> ServiceView | None:
        return next((s for s in self.services.values() if s.name == name), None)


def backend_view(svc: ServiceConfig, be: BackendConfig, vip: int, lb_addr: int, state: str, weight: int,
                 mac: str | None, lb_mac: bytes = UNRESOLVED_MAC) -> BackendView:
    addr = ip_to_int(be.address)
    ip_in = delta32(vip, addr)
    ip_out = delta32(addr, vip)
    return BackendView(
        name=be.name, address=be.address, addr=addr, addr_bytes=addr.to_bytes(4, "big"), port=be.port,
        port_bytes=be.port.to_bytes(2, "big"), weight=weight,
        mac=(be_mac := mac_to_bytes(mac) if mac else mac_to_bytes(be.mac) if be.mac else UNRESOLVED_MAC), l2=be_mac + lb_mac, state=state,
        in_ip_delta=add_deltas(ip_in, TTL_DEC_DELTA), in_l4_delta=add_deltas(ip_in, delta16(svc.port, be.port)),
        in_pseudo_delta=ip_in,
        out_ip_delta=add_deltas(ip_out, TTL_DEC_DELTA), out_l4_delta=add_deltas(ip_out, delta16(be.port, svc.port)),
        out_pseudo_delta=ip_out,
        outer_base_sum=outer_base_sum(lb_addr, addr),
    )


def build_snapshot(config: Config, *, generation: int = 1, states: Mapping[tuple[str, str], str] | None = None,
                   weights: Mapping[tuple[str, str], int] | None = None,
                   extra_backends: Mapping[str, tuple[BackendConfig, ...]] | None = None,
                   removed: frozenset[tuple[str, str]] = frozenset(), macs: Mapping[str, str] | None = None,
                   lb_mac: str | None = None, gateway_mac: str | None = None,
                   path_mtus: Mapping[str, int] | None = None) -> Snapshot:
    """Build a whole snapshot from config plus runtime overrides, keyed by (service name, backend name).

    ``macs`` maps addresses (a backend's, the LB's, the gateway's) to MACs; without one the config's
    MAC is used, else ``UNRESOLVED_MAC``: no MAC is ever guessed here.  The engine rewrites every
    frame's Ethernet addresses from the kernel's tables before sending; replay and explain, which
    have no kernel to ask, pass the MACs they assume (``pktlb.lab.addressing.lab_macs``).
    ``path_mtus`` maps backend addresses to the MTU of the path toward them (the egress interface's,
    or the route's): a service's MTU is the smallest of its own and its backends' paths.
    """
    states = dict(states or {})
    weights = weights or {}
    macs = macs or {}
    path_mtus = path_mtus or {}
    lb_addr = ip_to_int(config.lb.address)
    lb_mac_bytes = _mac(lb_mac or config.lb.mac or macs.get(config.lb.address))
    gateway = config.lb.gateway
    gateway_mac_bytes = _mac(gateway_mac or config.lb.gateway_mac or (macs.get(gateway) if gateway else None))
    services: dict[tuple[int, int, int], ServiceView] = {}
    nat_reverse: dict[tuple[int, int, int], tuple[ServiceView, BackendView]] = {}
    snat: set[int] = set()
    for svc in config.services:
        if svc.l7 is not None:
            continue  # served by `pktlb proxy`, not by the packet engine
        vip = ip_to_int(svc.vip)
        proto = PROTO_NUMBERS[svc.protocol]
        merged = {b.name: b for b in svc.backends}
        merged.update((b.name, b) for b in (extra_backends or {}).get(svc.name, ()))  # run-time additions win
        configured = tuple(merged.values())
        views = []
        for be in configured:
            if (svc.name, be.name) in removed:
                continue
            state = states.get((svc.name, be.name), UP)
            weight = weights.get((svc.name, be.name), be.weight)
            views.append(backend_view(svc, be, vip, lb_addr, state, weight, macs.get(be.address), lb_mac_bytes))
        backends = tuple(views)
        mtu = min([svc.mtu] + [path_mtus[b.address] for b in backends if b.address in path_mtus])
        scheduler = make_scheduler(svc.scheduler, [b for b in backends if b.eligible], seed=config.lb.hash_seed,
                                   table_size=svc.maglev_table_size)
        snat_addr = ip_to_int(svc.snat_address) if svc.snat_address else 0
        view = ServiceView(
            name=svc.name, vip=vip, vip_bytes=vip.to_bytes(4, "big"), port=svc.port,
            port_bytes=svc.port.to_bytes(2, "big"), proto=proto, mode=svc.mode, backends=backends,
            by_name={b.name: b for b in backends}, scheduler=scheduler, mtu=mtu,
            snat=snat_addr, snat_bytes=snat_addr.to_bytes(4, "big"), snat_ports=svc.snat_ports,
            on_backend_down=svc.on_backend_down, rewriter=get_rewriter(svc.mode), config=svc,
        )
        services[view.key] = view
        if view.rewriter.traits.reverse_nat:
            for b in backends:
                nat_reverse[(proto, b.addr, b.port)] = (view, b)
        if view.snat:
            snat.add(view.snat)
    return Snapshot(
        generation=generation, lb_addr=lb_addr,
        lb_mac=lb_mac_bytes, gateway_mac=gateway_mac_bytes, reply_l2=gateway_mac_bytes + lb_mac_bytes,
        seed=config.lb.hash_seed, services=services, vips=frozenset(s.vip for s in services.values()),
        nat_reverse=nat_reverse, snat_addrs=frozenset(snat), config=config, states=states,
    )


def _mac(text: str | None) -> bytes:
    return mac_to_bytes(text) if text else UNRESOLVED_MAC
