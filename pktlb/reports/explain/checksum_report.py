"""Which checksums one pass of ``pktlb explain`` changed, and how the engine got each: the RFC 1624 steps
(``checksum_steps``) for the IP and L4 headers, with the precomputed delta the engine applied (the
backend's NAT deltas, or the flow entry's full-NAT deltas).
"""

from __future__ import annotations

from pktlb.core import decision as d
from pktlb.core.packet.frame import IP as IP_OFF
from pktlb.core.packet.frame import IP_PROTO, IPIP_OVERHEAD
from pktlb.core.packet.icmp import ICMP_LEN
from pktlb.core.packet.ipv4 import PROTO_ICMP, PROTO_IPIP
from pktlb.core.rewrite.registry import traits_of
from pktlb.core.snapshot import BackendView
from pktlb.reports.explain.checksum_steps import ChecksumStep, ip_header_step, l4_step


def checksum_evidence(before: bytes, after: bytes, dec: d.Decision, be: BackendView | None,
                      entry) -> tuple[list[ChecksumStep], list[str]]:
    """The checksum steps of one pass (IP and L4 header, the inner ones in a tunnel, the quoted header of a
    relayed ICMP error), each with the delta the engine applied, and notes on what did not change."""
    steps: list[ChecksumStep] = []
    notes: list[str] = []
    tunnelled = after[IP_PROTO] == PROTO_IPIP and len(after) == len(before) + IPIP_OVERHEAD
    ip_a = IP_OFF + IPIP_OVERHEAD if tunnelled else IP_OFF
    suffix = " (inner)" if tunnelled else ""
    ip_step = ip_header_step(before, after, IP_OFF, ip_a, "IP header" + suffix)
    l4 = l4_step(before, after, IP_OFF, ip_a)
    deltas = engine_deltas(dec, be, entry)
    if ip_step is not None:
        ip_step.engine_delta = deltas.get("ip")
        steps.append(ip_step)
    if l4 is not None:
        if l4.header != "ICMP" and dec.reason != d.ICMP_ERROR_TO_BACKEND:
            l4.engine_delta = deltas.get("l4")
        else:
            l4.notes.append("the engine recomputes ICMP checksums in full (ICMP is not the hot path); "
                            "the incremental update gives the same value")
        l4.header += suffix
        steps.append(l4)
    if dec.reason == d.ICMP_ERROR_TO_BACKEND and ip_step is not None:
        ip_step.notes.append("relayed ICMP errors are not the hot path: the engine recomputes their checksums "
                             "in full; the incremental update gives the same value")
    if before[IP_PROTO] == PROTO_ICMP and dec.reason == d.ICMP_ERROR_TO_BACKEND and not tunnelled:
        quoted = IP_OFF + (before[IP_OFF] & 15) * 4 + ICMP_LEN
        step = ip_header_step(before, after, quoted, quoted, "IP header quoted in the ICMP error")
        if step is not None:
            steps.append(step)
    if tunnelled:
        notes.append("inner IP and L4 checksums unchanged: the inner packet travels exactly as sent")
    elif not steps:
        notes.append("no checksum changed: no checksummed field was rewritten (MAC addresses are "
                                     "covered only by the Ethernet FCS, which the NIC computes)")
    return steps, notes


def engine_deltas(dec: d.Decision, be: BackendView | None, entry) -> dict[str, tuple[str, int]]:
    if dec.reason not in (d.INBOUND, d.OUTBOUND):
        return {}  # relayed ICMP errors and echo replies are recomputed in full
    inbound = dec.reason == d.INBOUND
    traits = traits_of(dec.mode)
    if traits.reverse_nat and be is not None:
        if inbound:
            return {"ip": (f"BackendView.in_ip_delta of {be.name} (with TTL-1: 0xfeff)", be.in_ip_delta),
                    "l4": (f"BackendView.in_l4_delta of {be.name}", be.in_l4_delta)}
        return {"ip": (f"BackendView.out_ip_delta of {be.name} (with TTL-1: 0xfeff)", be.out_ip_delta),
                "l4": (f"BackendView.out_l4_delta of {be.name}", be.out_l4_delta)}
    if traits.needs_snat and entry is not None and entry.snat_port:
        base = 0 if inbound else 3
        return {"ip": (f"flow entry nat_deltas[{base}] (computed when the flow was created)", entry.nat_deltas[base]),
                "l4": (f"flow entry nat_deltas[{base + 1}]", entry.nat_deltas[base + 1])}
    return {}
