"""The inbound stage: a client's TCP/UDP packet to a VIP, from the service lookup to the rewritten frames.

    L4 check -> service -> TTL -> flow lookup (hit: its backend, rescheduled if down) -> schedule on a miss
    -> per-flow set-up (full-NAT port) -> counters -> the mode's rewrite (a tunnel cuts GSO super-frames)
"""

from __future__ import annotations

from pktlb.core import decision as d
from pktlb.core.decision import Drop
from pktlb.core.engine.steps import (
    NONE,
    PORTS,
    Frames,
    Outcome,
    l4_checksum_offset,
    pick_backend,
    ttl_expired,
)
from pktlb.core.flowtable import CLOSED, EST, FIN, SYN, UDP, FlowEntry, FlowTable
from pktlb.core.packet.frame import IP, IP_TTL
from pktlb.core.packet.ipv4 import PROTO_TCP
from pktlb.core.packet.l4 import ACK, RST, TCP_OFF_CSUM, TCP_OFF_FLAGS
from pktlb.core.packet.l4 import FIN as TCP_FIN
from pktlb.core.packet.l4 import SYN as TCP_SYN
from pktlb.core.packet.segment import segment_tcp
from pktlb.core.snapshot import DOWN, BackendView, ServiceView, Snapshot


def inbound(frame: bytearray, snap: Snapshot, flows: FlowTable, now: float, partial: bool, proto: int, src: int,
            dst: int, l4: int, l4_len: int, end: int, gso: int = 0) -> Outcome:
    csum_off = l4_checksum_offset(frame, proto, l4, l4_len, partial)
    if type(csum_off) is Drop:
        return NONE, d.drop(csum_off)
    sport, dport = PORTS(frame, l4)
    svc = snap.services.get((proto, dst, dport))
    if svc is None:
        return NONE, d.drop("no_service", f"nothing configured for {proto}/{dport} on this VIP")
    rw = svc.rewriter
    traits = rw.traits
    cut = gso and traits.encap_overhead  # a super-frame's segments must go inside the tunnel: cut here
    if cut and proto != PROTO_TCP:
        return NONE, d.drop("gso_unsupported", "UDP GSO: turn GSO off on the client side for tunnel mode",
                            svc.name, svc.mode)
    ttl = frame[IP_TTL]
    if ttl <= 1 and (ttl == 0 or traits.decrements_ttl):
        return ttl_expired(frame, snap, svc, end)
    key = (proto, src, dst, sport, dport)
    flags = frame[l4 + TCP_OFF_FLAGS] if proto == PROTO_TCP else 0
    entry = flows.lookup(key, now)
    if entry is not None and flags & TCP_SYN and not flags & ACK and entry.state != SYN:
        flows.remove(entry)  # a new connection reusing the 5-tuple of one that ended: schedule it afresh
        entry = None
    hit = entry is not None
    if entry is not None:
        be = svc.by_name.get(entry.backend)
        if be is None or be.state == DOWN:
            if be is not None and svc.on_backend_down == "drop":
                return NONE, d.drop("backend_down", f"flow's backend {be.name} is down", svc.name, svc.mode)
            be = pick_backend(svc, flows, key, snap.seed)
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
        be = pick_backend(svc, flows, key, snap.seed)
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
        if type(out) is Drop:
            return NONE, d.drop(out, "", svc.name, svc.mode)
    else:
        out = rw.inbound(frame, IP, l4, csum_off, svc, be, entry, snap, partial)
        if type(out) is Drop:
            return NONE, d.drop(out, "", svc.name, svc.mode)
        forwarded = out[0] is frame  # else an ICMP answer (fragmentation needed) replaced it
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
                      snap: Snapshot) -> tuple[Frames | d.Drop, bool]:
    """Cut a TCP super-frame and rewrite each segment (checksums finished); a frag-needed answer for
    the first one that is too big replaces them all, as the kernel would answer the whole frame."""
    segments = segment_tcp(frame, IP, l4, mss)
    if type(segments) is Drop:
        return segments, False
    out: Frames = []
    for seg in segments:
        result = svc.rewriter.inbound(seg, IP, l4, l4 + TCP_OFF_CSUM, svc, be, entry, snap, False)
        if type(result) is Drop or result[0] is not seg:
            return result, False
        out += result
    return out, True


def _track(entry: FlowEntry, flags: int) -> None:
    """TCP state as the LB sees it from the client side (both sides in NAT modes via replies.track_reply)."""
    if flags & RST:
        entry.state = CLOSED
    elif flags & TCP_FIN:
        if entry.state != CLOSED:
            entry.state = FIN
    elif entry.state == SYN and flags & ACK and not flags & TCP_SYN:
        entry.state = EST
