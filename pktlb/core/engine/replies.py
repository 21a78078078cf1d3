"""Replies the LB rewrites back toward the client: NAT (known by the backend's address and port) and
full-NAT (addressed to the LB's SNAT address and port).  DSR and tunnel replies never pass the LB.
"""

from __future__ import annotations

from pktlb.core import decision as d
from pktlb.core.decision import Drop
from pktlb.core.engine.steps import NONE, Outcome, l4_checksum_offset, ttl_expired
from pktlb.core.flowtable import CLOSED, FIN, FlowEntry, FlowTable
from pktlb.core.packet.frame import IP, IP_TTL
from pktlb.core.packet.ipv4 import PROTO_TCP
from pktlb.core.packet.l4 import ACK, RST, TCP_OFF_FLAGS
from pktlb.core.packet.l4 import FIN as TCP_FIN
from pktlb.core.packet.l4 import SYN as TCP_SYN
from pktlb.core.snapshot import BackendView, ServiceView, Snapshot


def nat_reply(frame: bytearray, snap: Snapshot, flows: FlowTable, now: float, partial: bool, proto: int, client: int,
              l4: int, cport: int, svc: ServiceView, be: BackendView, end: int) -> Outcome:
    """A NAT backend's reply (known by its address and port): back to the client from the VIP."""
    csum_off = l4_checksum_offset(frame, proto, l4, end - l4, partial)
    if type(csum_off) is Drop:
        return NONE, d.drop(csum_off)
    if frame[IP_TTL] <= 1:
        return ttl_expired(frame, snap, svc, end)
    entry = flows.lookup((proto, client, svc.vip, cport, svc.port), now)
    if entry is not None:
        track_reply(entry, frame, proto, l4, now, end)
    out = svc.rewriter.outbound(frame, IP, l4, csum_off, svc, be, entry, snap, partial)
    if type(out) is Drop:
        return NONE, d.drop(out, "", svc.name, svc.mode)
    if entry is None:
        dec = d.Decision(d.FORWARD, d.OUTBOUND, svc.name, be.name, svc.mode, False)
        dec.partial_out = partial
        return out, dec
    return out, reply_decision(entry, svc, be, partial)


def fullnat_reply(frame: bytearray, snap: Snapshot, flows: FlowTable, now: float, partial: bool, proto: int,
                  src: int, sport: int, snat: int, snat_port: int, l4: int, end: int) -> Outcome:
    """A full-NAT backend's reply (from ``src:sport``) to the LB's SNAT address and port: back to the client
    from the VIP."""
    entry = flows.by_snat(proto, snat, snat_port, now)
    if entry is None:
        return NONE, d.drop("no_flow", f"no full-NAT flow owns port {snat_port}")
    svc = snap.services.get((proto, entry.key[2], entry.key[4]))
    be = svc.by_name.get(entry.backend) if svc else None
    if svc is None or be is None or be.addr != src or be.port != sport:
        return NONE, d.drop("no_flow", "reply does not come from the flow's backend and port")
    csum_off = l4_checksum_offset(frame, proto, l4, end - l4, partial)
    if type(csum_off) is Drop:
        return NONE, d.drop(csum_off)
    if frame[IP_TTL] <= 1:
        return ttl_expired(frame, snap, svc, end)
    track_reply(entry, frame, proto, l4, now, end)
    out = svc.rewriter.outbound(frame, IP, l4, csum_off, svc, be, entry, snap, partial)
    if type(out) is Drop:
        return NONE, d.drop(out, "", svc.name, svc.mode)
    return out, reply_decision(entry, svc, be, partial)


def reply_decision(entry: FlowEntry, svc: ServiceView, be: BackendView, partial: bool) -> d.Decision:
    """The decision for a flow's forwarded reply: the flow's cached one while the backend view (so the
    snapshot) and the checksum state stay the same, as inbound caches its own; one allocation saved."""
    cached = entry.reply_decision
    if cached is not None and cached[0] is be and cached[1] == partial:
        return cached[2]
    dec = d.Decision(d.FORWARD, d.OUTBOUND, svc.name, be.name, svc.mode, True)
    dec.partial_out = partial
    entry.reply_decision = (be, partial, dec)
    return dec


def track_reply(entry: FlowEntry, frame: bytearray, proto: int, l4: int, now: float, end: int) -> None:
    """Counters and TCP state from the backend's side (the lrt scheduler's handshake RTT too)."""
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
