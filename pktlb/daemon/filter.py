"""The engine's kernel receive filter, derived from a snapshot: only frames pktlb may act on reach Python.

Kept: each service's protocol and port on its VIP (plus ICMP to the VIP and non-first fragments,
which the engine counts as drops); replies from NAT backends' service ports to anyone but the LB
itself (the clients); full-NAT replies to the SNAT address's port range.  Everything else — a UDP
flood to another port, traffic to the backends' own addresses, ARP, and what a backend sends to
the LB's own address (health-check replies to the prober: the LB's kernel takes those) — is dropped
in the kernel before it costs a system call.
"""

from __future__ import annotations

from pktlb.adapters.bpf import build_filter, pack_filters
from pktlb.core.packet.ipv4 import PROTO_NAMES
from pktlb.core.snapshot import Snapshot


def engine_filter_program(snap: Snapshot) -> list[tuple[int, int, int, int]]:
    dst_services: list[tuple[str, int, int | tuple[int, int]]] = []
    src_services: list[tuple[str, int, int]] = []
    for svc in snap.services.values():
        proto = PROTO_NAMES[svc.proto]
        dst_services.append((proto, svc.vip, svc.port))
        traits = svc.rewriter.traits
        if traits.reverse_nat:
            src_services.extend((proto, be.addr, be.port) for be in svc.backends)
        if traits.needs_snat:
            dst_services.append((proto, svc.snat, svc.snat_ports))
    return build_filter(dst_services=dst_services, src_services=src_services, local_addrs=[snap.lb_addr])


def engine_filter(snap: Snapshot) -> bytes:
    return pack_filters(engine_filter_program(snap))
