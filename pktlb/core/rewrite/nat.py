"""``nat``: destination NAT.  VIP:port -> backend:port on the way in, the reverse on the way out.

The LB acts as a router for these packets, so it decrements the TTL.  Backends route their
replies through the LB, which rewrites the source back to VIP:port.  Every checksum is updated
incrementally with per-backend deltas precomputed in the snapshot (RFC 1624).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pktlb.core.checksum import apply_delta, apply_l4_delta
from pktlb.core.icmp_relay import rewrite_error
from pktlb.core.packet.frame import IP, MACS
from pktlb.core.packet.ipv4 import OFF_CSUM, OFF_DST, OFF_SRC, OFF_TTL, PROTO_UDP
from pktlb.core.rewrite.base import Result, Rewriter
from pktlb.core.rewrite.traits import ModeTraits

if TYPE_CHECKING:
    from pktlb.core.flowtable import FlowEntry
    from pktlb.core.snapshot import BackendView, ServiceView, Snapshot


class NatRewriter(Rewriter):
    name = "nat"
    traits = ModeTraits(replies_via_lb=True, reverse_nat=True, decrements_ttl=True)
    summary = "dst VIP:port -> backend:port, TTL-1; replies: src backend:port -> VIP:port"

    def inbound(self, frame: bytearray, ip: int, l4: int, csum_off: int, svc: ServiceView, be: BackendView,
                entry: FlowEntry | None, snap: Snapshot, partial: bool) -> Result:
        frame[MACS] = be.l2  # both MACs in one slice assignment, precomputed per backend
        frame[ip + OFF_TTL] -= 1
        frame[ip + OFF_DST:ip + OFF_DST + 4] = be.addr_bytes
        frame[l4 + 2:l4 + 4] = be.port_bytes
        apply_delta(frame, ip + OFF_CSUM, be.in_ip_delta)
        if csum_off:
            apply_l4_delta(frame, csum_off, be.in_l4_delta, be.in_pseudo_delta, partial, svc.proto == PROTO_UDP)
        return [frame]

    def outbound(self, frame: bytearray, ip: int, l4: int, csum_off: int, svc: ServiceView, be: BackendView,
                 entry: FlowEntry | None, snap: Snapshot, partial: bool) -> Result:
        frame[MACS] = snap.reply_l2
        frame[ip + OFF_TTL] -= 1
        frame[ip + OFF_SRC:ip + OFF_SRC + 4] = svc.vip_bytes
        frame[l4:l4 + 2] = svc.port_bytes
        apply_delta(frame, ip + OFF_CSUM, be.out_ip_delta)
        if csum_off:
            apply_l4_delta(frame, csum_off, be.out_l4_delta, be.out_pseudo_delta, partial, svc.proto == PROTO_UDP)
        return [frame]

    def relay_icmp_error(self, frame: bytearray, icmp: int, end: int, svc: ServiceView, be: BackendView,
                         entry: FlowEntry | None, snap: Snapshot) -> Result:
        """The quoted reply left the LB as VIP:vport -> client: put back the backend's address and port."""
        rewrite_error(frame, IP, end, outer_dst=be.addr, inner_src=(be.addr, be.port))
        frame[MACS] = be.l2
        return [frame]
