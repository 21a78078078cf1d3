"""ICMP through the LB: echo requests to a VIP, and errors relayed by the flow they quote (``core.icmp_relay``).
"""

from __future__ import annotations

from pktlb.core import decision as d
from pktlb.core import icmp_relay
from pktlb.core.decision import Drop
from pktlb.core.engine.steps import NONE, Outcome, pick_backend
from pktlb.core.flowtable import FlowTable
from pktlb.core.packet.frame import IP, IP_TTL, MACS
from pktlb.core.packet.icmp import ICMP_LEN
from pktlb.core.snapshot import Snapshot


def icmp_to_vip(frame: bytearray, snap: Snapshot, flows: FlowTable, now: float, vip: int, icmp: int,
                end: int) -> Outcome:
    """An echo request to a VIP (answered here), or an ICMP error about a reply: to the flow's backend."""
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
        be = pick_backend(svc, flows, key, snap.seed)  # consistent hashing finds the flow's backend without state
    if be is None:
        return NONE, d.drop("icmp_no_flow", "", svc.name, svc.mode)
    if frame[IP_TTL] <= (1 if rw.traits.decrements_ttl else 0):  # no ICMP about ICMP errors
        return NONE, d.drop("ttl_expired", f"ICMP error with TTL {frame[IP_TTL]}", svc.name, svc.mode)
    out = rw.relay_icmp_error(frame, icmp, end, svc, be, entry, snap)
    if type(out) is Drop:
        return NONE, d.drop(out, "", svc.name, svc.mode)
    return out, d.Decision(d.FORWARD, d.ICMP_ERROR_TO_BACKEND, svc.name, be.name, svc.mode, entry is not None)


def icmp_error_from_backend(frame: bytearray, snap: Snapshot, flows: FlowTable, now: float, src: int, dst: int,
                            icmp: int, end: int) -> Outcome:
    """An ICMP error a NAT or full-NAT backend sends about a client's packet: to the client, from the VIP."""
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
        owner = snap.services.get((proto, entry.key[2], entry.key[4])) if entry else None
        flow_be = owner.by_name.get(entry.backend) if owner and entry else None
        if entry is None or owner is None or flow_be is None or (q_dst, q_dport) != (flow_be.addr, flow_be.port):
            return NONE, d.drop("icmp_no_flow")  # only about the flow's own backend
        svc = owner
        if frame[IP_TTL] <= 1:
            return NONE, d.drop("ttl_expired", f"ICMP error with TTL {frame[IP_TTL]}", svc.name, svc.mode)
        _, client, vip, cport, vport = entry.key
        icmp_relay.rewrite_error(frame, IP, end, outer_src=vip, outer_dst=client, inner_src=(client, cport),
                                 inner_dst=(vip, vport))
        frame[MACS] = snap.reply_l2
        return [frame], d.Decision(d.FORWARD, d.ICMP_ERROR_TO_CLIENT, svc.name, entry.backend, svc.mode)
    return NONE, d.drop("not_for_vip")
