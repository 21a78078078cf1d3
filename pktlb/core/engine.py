"""The data path: one Ethernet frame and the current snapshot in, frames to emit and a decision out.

    parse (offsets only) -> classify (VIP, port, proto | NAT reply | ICMP) -> flow lookup
    -> schedule on a miss -> TTL -> rewrite in place -> emit

Every stage either continues or returns a drop with a named reason (``decision.DROP_REASONS``);
no input frame can raise out of ``process``.  ``flows`` (the flow table) is the only state it
changes; the snapshot is read-only.  Replay, explain, the tests and the daemon all call this.
"""

from __future__ import annotations

import struct

from pktlb.core import decision as d
from pktlb.core import icmp_relay
from pktlb.core.flowkey import flow_hash
from pktlb.core.flowtable import CLOSED, EST, FIN, SYN, UDP, FlowEntry, FlowTable
from pktlb.core.packet.ethernet import ETH_P_8021Q, ETH_P_IP
from pktlb.core.packet.frame import (
    DST_MAC,
    ETHERTYPE,
    FRAG_BITS,
    IP,
    IP_FRAG,
    IP_PROTO,
    IP_SRC,
    IP_TOTLEN,
    IP_TTL,
    MACS,
    MIN_IPV4_FRAME,
    SRC_MAC,
)
from pktlb.core.packet.icmp import ICMP_LEN, quote, time_exceeded
from pktlb.core.packet.ipv4 import IPV4_MIN_LEN, PROTO_ICMP, PROTO_TCP, PROTO_UDP
from pktlb.core.packet.l4 import (
    ACK,
    RST,
    TCP_MIN_LEN,
    TCP_OFF_CSUM,
    TCP_OFF_DATA,
    TCP_OFF_FLAGS,
    UDP_LEN,
    UDP_OFF_CSUM,
    UDP_OFF_LENGTH,
)
from pktlb.core.packet.l4 import FIN as TCP_FIN
from pktlb.core.packet.l4 import SYN as TCP_SYN
from pktlb.core.packet.segment import segment_tcp
from pktlb.core.snapshot import DOWN, BackendView, ServiceView, Snapshot

Frames = list[bytearray]
NONE: Frames = []
_ADDRS = struct.Struct("!II").unpack_from
_PORTS = struct.Struct("!HH").unpack_from
_U16 = struct.Struct("!H").unpack_from


def process(frame: bytearray, snap: Snapshot, flows: FlowTable, now: float,
            partial: bool = False, gso: int = 0) -> tuple[Frames, d.Decision]:
    """Run one frame through the data path.  ``partial``: the L4 checksum field is unfinished;
    ``gso``: the segment size of a GSO super-frame (0: an ordinary frame).  The kernel cuts such a
    frame on the way out, except in tunnel mode, where the engine cuts it (``packet.segment``)."""
    try:
        return _process(frame, snap, flows, now, partial, gso)
    except Exception as exc:  # a bug must cost one frame, never the engine
        return NONE, d.drop("internal_error", f"{type(exc).__name__}: {exc}")


def _process(frame: bytearray, snap: Snapshot, flows: FlowTable, now: float, partial: bool, gso: int):
    n = len(frame)
    if n < IP:
        return NONE, d.drop("truncated", f"{n}-byte frame")
    ethertype = (frame[ETHERTYPE] << 8) | frame[ETHERTYPE + 1]
    if ethertype != ETH_P_IP:
        return NONE, d.drop("vlan_tagged" if ethertype == ETH_P_8021Q else "not_ipv4", f"ethertype 0x{ethertype:04x}")
    if frame[DST_MAC] != snap.lb_mac:
        return NONE, d.drop("not_our_mac")
    if n < MIN_IPV4_FRAME:
        return NONE, d.drop("truncated", f"{n}-byte frame, IPv4 needs {MIN_IPV4_FRAME}")
    vihl = frame[IP]
    if vihl >> 4 != 4:
        return NONE, d.drop("bad_ip_version", f"version {vihl >> 4}")
    ihl = (vihl & 15) << 2
    if ihl < IPV4_MIN_LEN or IP + ihl > n:
        return NONE, d.drop("bad_header_length", f"IHL {ihl} bytes")
    total = (frame[IP_TOTLEN] << 8) | frame[IP_TOTLEN + 1]
    if total < ihl or IP + total > n:
        return NONE, d.drop("bad_total_length", f"total length {total}, frame carries {n - IP}")
    end = IP + total
    if end < n:
        del frame[end:]  # Ethernet padding must not travel on (the tunnel would carry it inside)
    # A valid header's one's-complement sum is 0xffff, i.e. the header read as one big number is a
    # non-zero multiple of 0xffff (checksum.ones_sum explains why); the version check ruled out zero.
    if int.from_bytes(frame[IP:IP + ihl], "big") % 0xFFFF:
        return NONE, d.drop("bad_ip_checksum")
    proto = frame[IP_PROTO]
    src, dst = _ADDRS(frame, IP_SRC)
    l4 = IP + ihl
    if dst in snap.vips:
        if src in snap.vips or src in snap.snat_addrs or src == snap.lb_addr:
            return NONE, d.drop("spoofed_source")
        if frame[IP_FRAG] & FRAG_BITS or frame[IP_FRAG + 1]:  # MF flag or a fragment offset (DF is 0x40)
            return NONE, d.drop("fragment")
        if proto == PROTO_TCP or proto == PROTO_UDP:
            return _inbound(frame, snap, flows, now, partial, proto, src, dst, l4, total - ihl, end, gso)
        if proto == PROTO_ICMP:
            return _icmp_to_vip(frame, snap, flows, now, dst, l4, end)
        return NONE, d.drop("unsupported_protocol", f"IP protocol {proto}")
    if dst == snap.lb_addr:
        return NONE, d.drop("lb_local")
    if proto == PROTO_TCP or proto == PROTO_UDP:
        if total - ihl < UDP_LEN:  # room for both ports
            return NONE, d.drop("bad_l4_header")
        sport, dport = _PORTS(frame, l4)
        hit = snap.nat_reverse.get((proto, src, sport))
        if hit is not None:
            return _nat_reply(frame, snap, flows, now, partial, proto, dst, l4, dport, hit[0], hit[1], end)
        if dst in snap.snat_addrs:
            return _fullnat_reply(frame, snap, flows, now, partial, proto, dst, l4, dport, end)
    elif proto == PROTO_ICMP and total - ihl >= UDP_LEN and icmp_relay.is_error(frame, l4):
        return _icmp_error_from_backend(frame, snap, flows, now, src, dst, l4, end)
    return NONE, d.drop("not_for_vip")


def _l4_checks(frame: bytearray, proto: int, l4: int, l4_len: int, partial: bool) -> int | str:
    """Offset of the L4 checksum to update (0: none), or a drop reason."""
    if proto == PROTO_TCP:
        if l4_len < TCP_MIN_LEN or (frame[l4 + TCP_OFF_DATA] >> 4) < 5 or (frame[l4 + TCP_OFF_DATA] >> 4) * 4 > l4_len:
            return "bad_l4_header"
        return l4 + TCP_OFF_CSUM
    if l4_len < UDP_LEN or not UDP_LEN <= _U16(frame, l4 + UDP_OFF_LENGTH)[0] <= l4_len:
        return "bad_l4_header"
    return l4 + UDP_OFF_CSUM if (partial or frame[l4 + UDP_OFF_CSUM] or frame[l4 + UDP_OFF_CSUM + 1]) else 0


def _inbound(frame, snap: Snapshot, flows: FlowTable, now: float, partial: bool, proto: int, src: int, dst: int,
             l4: int, l4_len: int, end: int, gso: int = 0):
    csum_off = _l4_checks(frame, proto, l4, l4_len, partial)
    if csum_off.__class__ is str:
        return NONE, d.drop(csum_off)
    sport, dport = _PORTS(frame, l4)
    svc = snap.services.get((proto, dst, dport))
    if svc is None:
        return NONE, d.drop("no_service", f"nothing configured for {proto}/{dport} on this VIP")
    rw = svc.rewriter
    traits = rw.traits
    cut = gso and traits.encap_overhead  # a super-frame's segments must go inside the tunnel: cut here
    if cut and proto != PROTO_TCP:
        return NONE, d.drop("gso_unsupported", "UDP GSO: turn GSO off on the client side for tunnel mode",
                            svc.name, svc.mode)
    if traits.decrements_ttl and frame[IP_TTL] <= 1:
        return _ttl_expired(frame, snap, svc, end)
    if frame[IP_TTL] == 0:
        return _ttl_expired(frame, snap, svc, end)
    key = (proto, src, dst, sport, dport)
    flags = frame[l4 + TCP_OFF_FLAGS] if proto == PROTO_TCP else 0
    entry = flows.lookup(key, now)
    if entry is not None and flags & TCP_SYN and not flags & ACK and entry.state != SYN:
        flows.remove(entry)  # a new connection reusing the 5-tuple of one that ended: schedule it afresh
        entry = None
    hit = entry is not None
    if hit:
        be = svc.by_name.get(entry.backend)
        if be is None or be.state == DOWN:
            if be is not None and svc.on_backend_down == "drop":
                return NONE, d.drop("backend_down", f"flow's backend {be.name} is down", svc.name, svc.mode)
            be = _pick(svc, flows, key, snap.seed)
            if be is None:
                return NONE, d.drop("no_live_backend", "", svc.name, svc.mode)
            flows.rebind(entry, be.name)
            err = rw.on_new_flow(entry, svc, be, flows)
            if err:
                flows.remove(entry)
                return NONE, d.drop(err, "", svc.name, svc.mode)
        if proto == PROTO_TCP:
            _track(entry, flags)
    else:
        be = _pick(svc, flows, key, snap.seed)
        if be is None:
            return NONE, d.drop("no_live_backend", "", svc.name, svc.mode)
        if proto == PROTO_TCP:
            state = CLOSED if flags & RST else FIN if flags & TCP_FIN else SYN if flags & TCP_SYN else EST
        else:
            state = UDP
        entry = flows.insert(key, svc.name, be.name, state, now)
        err = rw.on_new_flow(entry, svc, be, flows)
        if err:
            flows.remove(entry)
            return NONE, d.drop(err, "", svc.name, svc.mode)
    entry.packets_in += 1
    entry.bytes_in += end - IP
    if svc.scheduler.uses_byte_rate:  # only bw reads the rate: no EWMA bookkeeping for the others
        entry.load.add_bytes(end - IP, now)
    if cut:
        out, forwarded = _inbound_segments(frame, l4, gso, svc, be, entry, snap)
        partial = False
    else:
        out = rw.inbound(frame, IP, l4, csum_off, svc, be, entry, snap, partial)
        forwarded = out.__class__ is not str and out[0] is frame
    if out.__class__ is str:
        return NONE, d.drop(out, "", svc.name, svc.mode)
    if hit and forwarded:
        cached = entry.decision  # the same backend view (so the same snapshot) and checksum state: reuse it
        if cached is not None and cached[0] is be and cached[1] == partial:
            return out, cached[2]
    dec = d.Decision(d.FORWARD, d.INBOUND, svc.name, be.name, svc.mode, hit)
    if not forwarded:
        dec.verdict, dec.reason = d.REPLY, d.FRAG_NEEDED
    dec.new_flow = not hit
    dec.flow_key = key
    dec.partial_out = partial and not traits.finishes_checksum
    if hit and forwarded:
        entry.decision = (be, partial, dec)
    return out, dec


def _inbound_segments(frame: bytearray, l4: int, mss: int, svc: ServiceView, be: BackendView, entry: FlowEntry,
                      snap: Snapshot) -> tuple[Frames | str, bool]:
    """Cut a TCP super-frame and rewrite each segment (checksums finished); a frag-needed answer for
    the first one that is too big replaces them all, as the kernel would answer the whole frame."""
    segments = segment_tcp(frame, IP, l4, mss)
    if segments.__class__ is str:
        return segments, False
    out: Frames = []
    for seg in segments:
        result = svc.rewriter.inbound(seg, IP, l4, l4 + TCP_OFF_CSUM, svc, be, entry, snap, False)
        if result.__class__ is str or result[0] is not seg:
            return result, False
        out += result
    return out, True


def _pick(svc: ServiceView, flows: FlowTable, key, seed: int) -> BackendView | None:
    return svc.scheduler.pick(key, flow_hash(key[0], key[1], key[2], key[3], key[4], seed), flows.loads_for(svc.name))


def _track(entry: FlowEntry, flags: int) -> None:
    """TCP state as the LB sees it from the client side (both sides in NAT modes via _track_reply)."""
    if flags & RST:
        entry.state = CLOSED
    elif flags & TCP_FIN:
        if entry.state != CLOSED:
            entry.state = FIN
    elif entry.state == SYN and flags & ACK and not flags & TCP_SYN:
        entry.state = EST


def _ttl_expired(frame: bytearray, snap: Snapshot, svc: ServiceView, end: int):
    src = _ADDRS(frame, IP_SRC)[0]
    icmp = time_exceeded(frame[SRC_MAC], snap.lb_mac, snap.lb_addr, src, quote(frame, IP, end - IP, (frame[IP] & 15) * 4))
    return [icmp], d.drop("ttl_expired", f"TTL {frame[IP_TTL]}", svc.name, svc.mode)


def _nat_reply(frame, snap: Snapshot, flows: FlowTable, now: float, partial: bool, proto: int, client: int, l4: int,
               cport: int, svc: ServiceView, be: BackendView, end: int):
    csum_off = _l4_checks(frame, proto, l4, end - l4, partial)
    if csum_off.__class__ is str:
        return NONE, d.drop(csum_off)
    if frame[IP_TTL] <= 1:
        return _ttl_expired(frame, snap, svc, end)
    entry = flows.lookup((proto, client, svc.vip, cport, svc.port), now)
    if entry is not None:
        _track_reply(entry, frame, proto, l4, now, end)
    out = svc.rewriter.outbound(frame, IP, l4, csum_off, svc, be, entry, snap, partial)
    dec = d.Decision(d.FORWARD, d.OUTBOUND, svc.name, be.name, svc.mode, entry is not None)
    dec.partial_out = partial
    return out, dec


def _track_reply(entry: FlowEntry, frame: bytearray, proto: int, l4: int, now: float, end: int) -> None:
    entry.packets_out += 1
    entry.bytes_out += end - IP
    if proto != PROTO_TCP:
        return
    flags = frame[l4 + TCP_OFF_FLAGS]
    if flags & RST:
        entry.state = CLOSED
    elif flags & TCP_FIN and entry.state != CLOSED:
        entry.state = FIN
    elif flags & TCP_SYN and flags & ACK and entry.syn_time is not None:
        entry.load.observe_rtt(now - entry.syn_time)  # handshake RTT as the LB sees it (lrt scheduler)
        entry.syn_time = None


def _fullnat_reply(frame, snap: Snapshot, flows: FlowTable, now: float, partial: bool, proto: int, snat: int,
                   l4: int, sport: int, end: int):
    entry = flows.by_snat(proto, snat, sport, now)
    if entry is None:
        return NONE, d.drop("no_flow", f"no full-NAT flow owns port {sport}")
    svc = snap.services.get((proto, entry.key[2], entry.key[4]))
    be = svc.by_name.get(entry.backend) if svc else None
    if svc is None or be is None or be.addr != _ADDRS(frame, IP_SRC)[0] or be.port != _U16(frame, l4)[0]:
        return NONE, d.drop("no_flow", "reply does not come from the flow's backend and port")
    csum_off = _l4_checks(frame, proto, l4, end - l4, partial)
    if csum_off.__class__ is str:
        return NONE, d.drop(csum_off)
    if frame[IP_TTL] <= 1:
        return _ttl_expired(frame, snap, svc, end)
    _track_reply(entry, frame, proto, l4, now, end)
    out = svc.rewriter.outbound(frame, IP, l4, csum_off, svc, be, entry, snap, partial)
    dec = d.Decision(d.FORWARD, d.OUTBOUND, svc.name, be.name, svc.mode, True)
    dec.partial_out = partial
    return out, dec


def _icmp_to_vip(frame, snap: Snapshot, flows: FlowTable, now: float, vip: int, icmp: int, end: int):
    if end - icmp < ICMP_LEN:
        return NONE, d.drop("icmp_malformed", "ICMP header truncated")
    if icmp_relay.is_echo_request(frame, icmp, end):
        return [icmp_relay.echo_reply(frame, IP, icmp - IP, end, snap.lb_mac)], d.Decision(d.REPLY, d.ECHO_REPLY)
    if not icmp_relay.is_error(frame, icmp):
        return NONE, d.drop("icmp_unsupported", f"ICMP type {frame[icmp]}")
    quoted = icmp_relay.quoted_flow(frame, icmp, end)
    if quoted is None:
        return NONE, d.drop("icmp_malformed", "quoted header missing or malformed")
    _, proto, q_src, q_dst, q_sport, q_dport = quoted
    svc = snap.services.get((proto, q_src, q_sport)) if q_src == vip else None
    if svc is None:
        return NONE, d.drop("icmp_no_flow", "quoted packet is not from a service on this VIP")
    key = (proto, q_dst, q_src, q_dport, q_sport)  # the client's flow, reversed back
    entry = flows.lookup(key, now)
    be = svc.by_name.get(entry.backend) if entry else None
    rw = svc.rewriter
    if be is None and rw.traits.recomputes_backend:
        be = _pick(svc, flows, key, snap.seed)  # consistent hashing finds the flow's backend without state
    if be is None:
        return NONE, d.drop("icmp_no_flow", "", svc.name, svc.mode)
    if frame[IP_TTL] <= (1 if rw.traits.decrements_ttl else 0):  # no ICMP about ICMP errors
        return NONE, d.drop("ttl_expired", f"ICMP error with TTL {frame[IP_TTL]}", svc.name, svc.mode)
    out = rw.relay_icmp_error(frame, icmp, end, svc, be, entry, snap)
    if out.__class__ is str:
        return NONE, d.drop(out, "", svc.name, svc.mode)
    return out, d.Decision(d.FORWARD, d.ICMP_ERROR_TO_BACKEND, svc.name, be.name, svc.mode, entry is not None)


def _icmp_error_from_backend(frame, snap: Snapshot, flows: FlowTable, now: float, src: int, dst: int, icmp: int,
                             end: int):
    quoted = icmp_relay.quoted_flow(frame, icmp, end)
    if quoted is None:
        return NONE, d.drop("not_for_vip")
    _, proto, q_src, q_dst, q_sport, q_dport = quoted
    hit = snap.nat_reverse.get((proto, q_dst, q_dport))
    if hit is not None and src == q_dst and dst == q_src:  # NAT: backend -> client about client -> backend:port
        svc, be = hit
        if frame[IP_TTL] <= 1:
            return NONE, d.drop("ttl_expired", f"ICMP error with TTL {frame[IP_TTL]}", svc.name, svc.mode)
        icmp_relay.rewrite_error(frame, IP, end, outer_src=svc.vip, inner_dst=(svc.vip, svc.port))
        frame[MACS] = snap.reply_l2
        return [frame], d.Decision(d.FORWARD, d.ICMP_ERROR_TO_CLIENT, svc.name, be.name, svc.mode)
    if dst in snap.snat_addrs and q_src == dst:  # full-NAT: backend -> SNAT about SNAT:port -> backend
        entry = flows.by_snat(proto, dst, q_sport, now)
        svc = snap.services.get((proto, entry.key[2], entry.key[4])) if entry else None
        be = svc.by_name.get(entry.backend) if svc else None
        if be is None or (q_dst, q_dport) != (be.addr, be.port):  # only about the flow's own backend
            return NONE, d.drop("icmp_no_flow")
        if frame[IP_TTL] <= 1:
            return NONE, d.drop("ttl_expired", f"ICMP error with TTL {frame[IP_TTL]}", svc.name, svc.mode)
        _, client, vip, cport, vport = entry.key
        icmp_relay.rewrite_error(frame, IP, end, outer_src=vip, outer_dst=client, inner_src=(client, cport),
                                 inner_dst=(vip, vport))
        frame[MACS] = snap.reply_l2
        return [frame], d.Decision(d.FORWARD, d.ICMP_ERROR_TO_CLIENT, svc.name, entry.backend, svc.mode)
    return NONE, d.drop("not_for_vip")
