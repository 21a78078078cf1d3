"""``fullnat``: destination NAT plus source NAT to an LB-owned address and port.

In: client:cport -> VIP:vport becomes SNAT:sport -> backend:bport.  Out (the reply arrives at
the LB because it is addressed to SNAT:sport): backend:bport -> SNAT:sport becomes
VIP:vport -> client:cport.  Backends need no route through the LB, but they see the LB's address,
not the client's.  The source port is taken from the service's range when the flow is created,
and the flow's four checksum deltas are computed then too, so each packet is still a handful of
slice assignments and two incremental checksum updates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pktlb.core.checksum import add_deltas, apply_delta, apply_l4_delta, delta16, delta32
from pktlb.core.icmp_relay import rewrite_error
from pktlb.core.packet.frame import IP, MACS
from pktlb.core.packet.ipv4 import OFF_CSUM, OFF_DST, OFF_SRC, OFF_TTL, PROTO_UDP
from pktlb.core.rewrite.base import Result, Rewriter
from pktlb.core.rewrite.traits import ModeTraits

if TYPE_CHECKING:
    from pktlb.core.flowtable import FlowEntry, FlowTable
    from pktlb.core.snapshot import BackendView, ServiceView, Snapshot


class FullNatRewriter(Rewriter):
    name = "fullnat"
    traits = ModeTraits(replies_via_lb=True, needs_snat=True, decrements_ttl=True)
    summary = "dst VIP:port -> backend:port and src client:port -> SNAT:port, TTL-1; replies reversed"

    def on_new_flow(self, entry: FlowEntry, svc: ServiceView, be: BackendView, flows: FlowTable) -> str | None:
        if not entry.snat_port and not flows.allocate_snat(entry, svc.snat, svc.snat_ports):
            return "snat_ports_exhausted"
        _, client, _, cport, _ = entry.key
        src_change = delta32(client, svc.snat)
        back_change = delta32(svc.snat, client)
        entry.nat_deltas = (
            add_deltas(be.in_ip_delta, src_change),
            add_deltas(be.in_l4_delta, src_change, delta16(cport, entry.snat_port)),
            add_deltas(be.in_pseudo_delta, src_change),
            add_deltas(be.out_ip_delta, back_change),
            add_deltas(be.out_l4_delta, back_change, delta16(entry.snat_port, cport)),
            add_deltas(be.out_pseudo_delta, back_change),
        )
        return None

    def inbound(self, frame: bytearray, ip: int, l4: int, csum_off: int, svc: ServiceView, be: BackendView,
                entry: FlowEntry | None, snap: Snapshot, partial: bool) -> Result:
        assert entry is not None  # the engine creates the flow (and its SNAT port) before it rewrites
        in_ip, in_l4, in_pseudo = entry.nat_deltas[0:3]
        frame[MACS] = be.l2  # both MACs in one slice assignment, precomputed per backend
        frame[ip + OFF_TTL] -= 1
        frame[ip + OFF_SRC:ip + OFF_SRC + 4] = svc.snat_bytes
        frame[ip + OFF_DST:ip + OFF_DST + 4] = be.addr_bytes
        frame[l4:l4 + 2] = entry.snat_port.to_bytes(2, "big")
        frame[l4 + 2:l4 + 4] = be.port_bytes
        apply_delta(frame, ip + OFF_CSUM, in_ip)
        if csum_off:
            apply_l4_delta(frame, csum_off, in_l4, in_pseudo, partial, svc.proto == PROTO_UDP)
        return [frame]

    def outbound(self, frame: bytearray, ip: int, l4: int, csum_off: int, svc: ServiceView, be: BackendView,
                 entry: FlowEntry | None, snap: Snapshot, partial: bool) -> Result:
        assert entry is not None  # a full-NAT reply is found by its flow
        out_ip, out_l4, out_pseudo = entry.nat_deltas[3:6]
        _, client, _, cport, _ = entry.key
        frame[MACS] = snap.reply_l2
        frame[ip + OFF_TTL] -= 1
        frame[ip + OFF_SRC:ip + OFF_SRC + 4] = svc.vip_bytes
        frame[ip + OFF_DST:ip + OFF_DST + 4] = client.to_bytes(4, "big")
        frame[l4:l4 + 2] = svc.port_bytes
        frame[l4 + 2:l4 + 4] = cport.to_bytes(2, "big")
        apply_delta(frame, ip + OFF_CSUM, out_ip)
        if csum_off:
            apply_l4_delta(frame, csum_off, out_l4, out_pseudo, partial, svc.proto == PROTO_UDP)
        return [frame]

    def relay_icmp_error(self, frame: bytearray, icmp: int, end: int, svc: ServiceView, be: BackendView,
                         entry: FlowEntry | None, snap: Snapshot) -> Result:
        """The quoted reply left the LB as VIP:vport -> client: the backend sent it as backend -> SNAT:sport."""
        assert entry is not None  # full-NAT state is per flow: the engine relays only errors about a known flow
        rewrite_error(frame, IP, end, outer_src=svc.snat, outer_dst=be.addr,
                      inner_src=(be.addr, be.port), inner_dst=(svc.snat, entry.snat_port))
        frame[MACS] = be.l2
        return [frame]
