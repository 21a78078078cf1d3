"""``tunnel``: IP-in-IP (RFC 2003).  A new outer IPv4 header (protocol 4) to the backend address;
the inner packet is left exactly as the client sent it.

Outer header: source the LB's address, destination the backend, TTL 64, DF copied from the inner
packet, a fresh ID, total length inner + 20, checksum from a per-backend precomputed partial sum.
If inner + 20 bytes would exceed the service MTU and the inner packet has DF set, the LB answers
the client with ICMP fragmentation needed carrying MTU - 20, so path MTU discovery works through
the tunnel (RFC 2003 section 5.1).  An unfinished inner checksum is finished here: the backend's
decapsulation hop (a raw socket and a TUN device) cannot carry the "partial" state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pktlb.core.checksum import add_deltas, checksum, fold
from pktlb.core.decision import Drop
from pktlb.core.packet.frame import IPIP_OVERHEAD, MACS, SRC_MAC, src_addr
from pktlb.core.packet.icmp import frag_needed, quote
from pktlb.core.packet.ipv4 import FLAG_DF, IPV4_STRUCT, OFF_FRAG, OFF_TOTLEN, PROTO_IPIP, U16
from pktlb.core.rewrite.base import Result, Rewriter
from pktlb.core.rewrite.traits import ModeTraits

if TYPE_CHECKING:
    from pktlb.core.flowtable import FlowEntry
    from pktlb.core.snapshot import BackendView, ServiceView, Snapshot

OVERHEAD = IPIP_OVERHEAD
TOO_BIG = Drop("too_big")
OUTER_VIHL = 0x45  # version 4, 5 words: no options
OUTER_TTL = 64
_unpack16 = U16.unpack_from
_pack16 = U16.pack_into


class TunnelRewriter(Rewriter):
    name = "tunnel"
    traits = ModeTraits(keeps_ports=True, encap_overhead=OVERHEAD, finishes_checksum=True, recomputes_backend=True,
                        vip_on_backend=True, loose_rp_backend=True, needs_decapsulator=True)
    summary = "prepend outer IPv4 (proto 4) LB -> backend; inner packet untouched; replies bypass the LB"

    def __init__(self) -> None:
        self.next_id = 0

    def inbound(self, frame: bytearray, ip: int, l4: int, csum_off: int, svc: ServiceView, be: BackendView,
                entry: FlowEntry | None, snap: Snapshot, partial: bool) -> Result:
        inner_len = _unpack16(frame, ip + OFF_TOTLEN)[0]
        flags = _unpack16(frame, ip + OFF_FRAG)[0] & FLAG_DF
        if inner_len + OVERHEAD > svc.mtu:
            if not flags:
                return TOO_BIG
            ihl = (frame[ip] & 15) * 4
            return [frag_needed(frame[SRC_MAC], snap.lb_mac, snap.lb_addr, src_addr(frame, ip), svc.mtu - OVERHEAD, quote(frame, ip, inner_len, ihl))]
        if partial and csum_off:
            _pack16(frame, csum_off, checksum(memoryview(frame)[l4:ip + inner_len]))
        total = inner_len + OVERHEAD
        ident = self.next_id = (self.next_id + 1) & 0xFFFF
        csum = outer_checksum(be.outer_base_sum, total, ident, flags)
        outer = IPV4_STRUCT.pack(OUTER_VIHL, 0, total, ident, flags, OUTER_TTL, PROTO_IPIP, csum, snap.lb_addr, be.addr)
        frame[ip:ip] = outer
        frame[MACS] = be.l2  # both MACs in one slice assignment, precomputed per backend
        return [frame]


def outer_base_sum(lb_addr: int, be_addr: int) -> int:
    """The sum of the outer header's words that never change for a backend (kept in its BackendView):
    version/IHL/TOS, TTL/protocol and both addresses.  DF, total length and ID are added per packet."""
    return add_deltas(OUTER_VIHL << 8, (OUTER_TTL << 8) | PROTO_IPIP, lb_addr >> 16, lb_addr & 0xFFFF,
                      be_addr >> 16, be_addr & 0xFFFF)


def outer_checksum(base_sum: int, total: int, ident: int, flags: int) -> int:
    """The outer header's checksum: the backend's constant words (``outer_base_sum``) plus this packet's
    total length, ID and DF flag, complemented."""
    return ~fold(base_sum + total + ident + flags) & 0xFFFF
