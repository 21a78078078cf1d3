"""The data path: one Ethernet frame and the current snapshot in, frames to emit and a decision out.

    parse (offsets only) -> classify (VIP, port, proto | NAT reply | ICMP) -> flow lookup
    -> schedule on a miss -> TTL -> rewrite in place -> emit

Every stage either continues or returns a drop with a named reason (``decision.DROP_REASONS``);
no input frame can raise out of ``process``.  ``flows`` (the flow table) is the only state it
changes; the snapshot is read-only.  Replay, explain, the tests and the daemon all call this.

This module parses and classifies; the stages are ``inbound`` (client -> VIP), ``replies`` (NAT and
full-NAT replies) and ``icmp``; ``steps`` holds what they share.
"""

from __future__ import annotations

from pktlb.core import decision as d
from pktlb.core import icmp_relay
from pktlb.core.engine.icmp import icmp_error_from_backend, icmp_to_vip
from pktlb.core.engine.inbound import inbound
from pktlb.core.engine.replies import fullnat_reply, nat_reply
from pktlb.core.engine.steps import NONE, PORTS, Outcome
from pktlb.core.flowtable import FlowTable
from pktlb.core.packet.ethernet import ETH_P_8021Q, ETH_P_IP
from pktlb.core.packet.frame import DST_MAC, ETHERTYPE, FRAGMENT, IP, MIN_IPV4_FRAME, header_fields
from pktlb.core.packet.ipv4 import IPV4_MIN_LEN, PROTO_ICMP, PROTO_TCP, PROTO_UDP
from pktlb.core.packet.l4 import UDP_LEN
from pktlb.core.snapshot import Snapshot


def process(frame: bytearray, snap: Snapshot, flows: FlowTable, now: float,
            partial: bool = False, gso: int = 0) -> Outcome:
    """Run one frame through the data path.  ``partial``: the L4 checksum field is unfinished;
    ``gso``: the segment size of a GSO super-frame (0: an ordinary frame).  The kernel cuts such a
    frame on the way out, except in tunnel mode, where the engine cuts it (``packet.segment``)."""
    try:
        return _process(frame, snap, flows, now, partial, gso)
    except Exception as exc:  # a bug must cost one frame, never the engine
        return NONE, d.drop("internal_error", f"{type(exc).__name__}: {exc}")


def _process(frame: bytearray, snap: Snapshot, flows: FlowTable, now: float, partial: bool, gso: int) -> Outcome:
    # Hot path: each module-global name read per frame costs, so offsets are combined (``l4``, ``end``) and the
    # header's fields come in one ``header_fields`` call.
    n = len(frame)
    if n < MIN_IPV4_FRAME:
        return NONE, _short_frame(frame, snap, n)
    ethertype, vihl, total, frag, proto, src, dst = header_fields(frame)
    if ethertype != ETH_P_IP:
        return NONE, d.drop("vlan_tagged" if ethertype == ETH_P_8021Q else "not_ipv4", f"ethertype 0x{ethertype:04x}")
    if frame[DST_MAC] != snap.lb_mac:
        return NONE, d.drop("not_our_mac")
    if vihl >> 4 != 4:
        return NONE, d.drop("bad_ip_version", f"version {vihl >> 4}")
    ihl = (vihl & 15) << 2
    l4 = IP + ihl
    if ihl < IPV4_MIN_LEN or l4 > n:
        return NONE, d.drop("bad_header_length", f"IHL {ihl} bytes")
    end = IP + total
    if total < ihl or end > n:
        return NONE, d.drop("bad_total_length", f"total length {total}, frame carries {n - IP}")
    if end < n:
        del frame[end:]  # Ethernet padding must not travel on (the tunnel would carry it inside)
    # A valid header's one's-complement sum is 0xffff, i.e. the header read as one big number is a
    # non-zero multiple of 0xffff (checksum.ones_sum explains why); the version check ruled out zero.
    if int.from_bytes(frame[IP:l4], "big") % 0xFFFF:
        return NONE, d.drop("bad_ip_checksum")
    if dst in snap.vips:
        if src in snap.vips or src in snap.snat_addrs or src == snap.lb_addr:
            return NONE, d.drop("spoofed_source")
        if frag & FRAGMENT:  # MF flag or a fragment offset (DF may be set)
            return NONE, d.drop("fragment")
        if proto == PROTO_TCP or proto == PROTO_UDP:
            return inbound(frame, snap, flows, now, partial, proto, src, dst, l4, total - ihl, end, gso)
        if proto == PROTO_ICMP:
            return icmp_to_vip(frame, snap, flows, now, dst, l4, end)
        return NONE, d.drop("unsupported_protocol", f"IP protocol {proto}")
    if dst == snap.lb_addr:
        return NONE, d.drop("lb_local")
    if proto == PROTO_TCP or proto == PROTO_UDP:
        if total - ihl < UDP_LEN:  # room for both ports
            return NONE, d.drop("bad_l4_header")
        sport, dport = PORTS(frame, l4)
        hit = snap.nat_reverse.get((proto, src, sport))
        if hit is not None:
            return nat_reply(frame, snap, flows, now, partial, proto, dst, l4, dport, hit[0], hit[1], end)
        if dst in snap.snat_addrs:
            return fullnat_reply(frame, snap, flows, now, partial, proto, src, sport, dst, dport, l4, end)
    elif proto == PROTO_ICMP and total - ihl >= UDP_LEN and icmp_relay.is_error(frame, l4):
        return icmp_error_from_backend(frame, snap, flows, now, src, dst, l4, end)
    return NONE, d.drop("not_for_vip")


def _short_frame(frame: bytearray, snap: Snapshot, n: int) -> d.Decision:
    """Why a frame too short for an IPv4 header is dropped, in the order the checks above run."""
    if n < IP:
        return d.drop("truncated", f"{n}-byte frame")
    ethertype = (frame[ETHERTYPE] << 8) | frame[ETHERTYPE + 1]
    if ethertype != ETH_P_IP:
        return d.drop("vlan_tagged" if ethertype == ETH_P_8021Q else "not_ipv4", f"ethertype 0x{ethertype:04x}")
    if frame[DST_MAC] != snap.lb_mac:
        return d.drop("not_our_mac")
    return d.drop("truncated", f"{n}-byte frame, IPv4 needs {MIN_IPV4_FRAME}")
