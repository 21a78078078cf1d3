"""The wording of ``pktlb explain``'s steps: the stages in order, which stage each drop reason belongs
to, and the lines of every stage (parse, classify, flow table, scheduler, rewrite, emit), read from the
frame, the snapshot, the decision and the flow entry.
"""

from __future__ import annotations

from typing import Any

from pktlb.core import decision as d
from pktlb.core.checksum import ones_sum
from pktlb.core.packet.addr import bytes_to_mac, int_to_ip
from pktlb.core.packet.ethernet import ETH_P_IP
from pktlb.core.packet.frame import DST_MAC, IP, IP_PROTO, IP_TTL, MIN_IPV4_FRAME, SRC_MAC, dst_addr, src_addr
from pktlb.core.packet.ipv4 import (
    FRAG_OFFSET_MASK,
    IPV4_MIN_LEN,
    PROTO_ICMP,
    PROTO_NAMES,
    PROTO_TCP,
    PROTO_UDP,
)
from pktlb.core.rewrite.registry import get_rewriter, traits_of
from pktlb.core.snapshot import Snapshot
from pktlb.reports.explain import dissect

STAGES = ("parse", "classify", "flow table", "scheduler", "rewrite", "emit")
_STAGE_OF_REASON = {
    **dict.fromkeys(("truncated", "not_ipv4", "vlan_tagged", "not_our_mac", "bad_ip_version", "bad_header_length",
                     "bad_total_length", "bad_ip_checksum"), "parse"),
    **dict.fromkeys(("fragment", "not_for_vip", "lb_local", "no_service", "unsupported_protocol", "bad_l4_header",
                     "spoofed_source", "icmp_unsupported", "icmp_no_flow", "icmp_malformed", "ttl_expired"),
                    "classify"),
    **dict.fromkeys(("no_flow", "snat_ports_exhausted", "backend_down"), "flow table"),
    "no_live_backend": "scheduler",
    "too_big": "rewrite",
}
_TCP_FLAGS = "FSRPAUEC"


def stage_of(reason: str) -> str:
    """The pipeline stage that produces a drop reason (``internal_error`` is blamed on the rewrite)."""
    return _STAGE_OF_REASON.get(reason, "rewrite")


def who(mac: bytes, snap: Snapshot) -> str:
    """The lab role that owns a MAC address: the LB, the router, a backend's name."""
    if mac == snap.lb_mac:
        return "the LB"
    if mac == snap.gateway_mac:
        return "the router"
    if mac == b"\xff" * 6:
        return "broadcast"
    for svc in snap.services.values():
        for b in svc.backends:
            if b.mac == mac:
                return b.name
    return "unknown"


def parse_lines(frame: bytes, snap: Snapshot) -> list[str]:
    """What the parser reads: Ethernet, then IPv4 offsets and lengths, then the L4 header."""
    if len(frame) < 14:
        return [f"{len(frame)}-byte frame: shorter than an Ethernet header"]
    ethertype = int.from_bytes(frame[12:14], "big")
    lines = [f"Ethernet: dst {bytes_to_mac(frame[DST_MAC])} ({who(frame[DST_MAC], snap)}), src {bytes_to_mac(frame[SRC_MAC])} "
             f"({who(frame[SRC_MAC], snap)}), type 0x{ethertype:04x}"
             + (" (IPv4)" if ethertype == ETH_P_IP else "")]
    if ethertype != ETH_P_IP or len(frame) < MIN_IPV4_FRAME:
        return lines
    ihl = (frame[IP] & 15) * 4
    total = int.from_bytes(frame[16:18], "big")
    frag = int.from_bytes(frame[20:22], "big")
    flags = [name for bit, name in ((0x4000, "DF"), (0x2000, "MF")) if frag & bit] or ["none"]
    proto = frame[IP_PROTO]
    header_ok = IPV4_MIN_LEN <= ihl and IP + ihl <= len(frame) and ones_sum(frame[14:IP + ihl]) == 0xFFFF
    lines.append(f"IPv4 at offset {IP}: version {frame[IP] >> 4}, IHL {frame[IP] & 15} words = {ihl} bytes, total length "
                 f"{total} (the frame carries {len(frame) - IP} after Ethernet), TTL {frame[IP_TTL]}, flags "
                 f"{'+'.join(flags)}, fragment offset {frag & FRAG_OFFSET_MASK}, protocol {proto} "
                 f"({PROTO_NAMES.get(proto, '?')}), header checksum 0x{int.from_bytes(frame[24:26], 'big'):04x} "
                 f"{'verifies' if header_ok else 'does NOT verify'}")
    lines.append(f"addresses {int_to_ip(src_addr(frame))} -> "
                 f"{int_to_ip(dst_addr(frame))}")
    l4 = IP + ihl
    if proto == PROTO_TCP and len(frame) >= l4 + 20:
        data_off = (frame[l4 + 12] >> 4) * 4
        flag_text = "".join(c for i, c in enumerate(_TCP_FLAGS) if frame[l4 + 13] >> i & 1)
        lines.append(f"TCP at offset {l4}: ports {int.from_bytes(frame[l4:l4 + 2], 'big')} -> "
                     f"{int.from_bytes(frame[l4 + 2:l4 + 4], 'big')}, flags {flag_text or 'none'}, data offset "
                     f"{data_off} bytes, payload {max(0, total - ihl - data_off)} bytes")
    elif proto == PROTO_UDP and len(frame) >= l4 + 8:
        lines.append(f"UDP at offset {l4}: ports {int.from_bytes(frame[l4:l4 + 2], 'big')} -> "
                     f"{int.from_bytes(frame[l4 + 2:l4 + 4], 'big')}, length {int.from_bytes(frame[l4 + 4:l4 + 6], 'big')}")
    elif proto == PROTO_ICMP and len(frame) >= l4 + 4:
        lines.append(f"ICMP at offset {l4}: type {frame[l4]}, code {frame[l4 + 1]}")
    return lines


def classify_text(frame: bytes, snap: Snapshot, dec: d.Decision, info: dict[str, Any]) -> list[str]:
    """Which service (or which special case) the frame belongs to."""
    svc = info.get("service")
    reason = dec.reason
    if reason == d.OUTBOUND:
        owner = snap.service_named(dec.service) if dec.service is not None else None
        if owner is not None and traits_of(dec.mode).needs_snat:
            return [f"addressed to the SNAT address {int_to_ip(owner.snat)}: a reply of a full-NAT flow of "
                    f"service {dec.service}, found by its port in the flow table's SNAT index"]
        return [f"source {int_to_ip(src_addr(frame))} is backend {dec.backend} of NAT service "
                f"{dec.service}: a reply the LB must rewrite back to the VIP (NAT reverse table)"]
    if reason == d.ECHO_REPLY:
        return ["ICMP echo request to a VIP: the LB answers it itself (the VIP is nowhere else)"]
    if reason == d.ICMP_ERROR_TO_BACKEND:
        return [f"ICMP error to a VIP: its quoted header names a packet of service {dec.service}; the flow it "
                f"belongs to (reversed quote) tells which backend must hear it: {dec.backend}"]
    if reason == d.ICMP_ERROR_TO_CLIENT:
        return [f"ICMP error from backend {dec.backend} about a client flow: relayed to the client, "
                "rewritten as if it came from the VIP"]
    if dec.verdict == d.DROP and dec.reason in ("fragment", "spoofed_source", "unsupported_protocol"):
        return [f"destination {int_to_ip(dst_addr(frame))} is a VIP; checked before any "
                "service is looked up:"]
    if svc is not None:
        cfg = svc.config
        states = ", ".join(f"{b.name} {b.state}" for b in svc.backends)
        return [f"{cfg.protocol} {cfg.vip}:{cfg.port} is service {svc.name}: mode {svc.mode}, scheduler "
                f"{cfg.scheduler}, backends {states}"]
    if "key" in info:
        return [f"destination is a VIP, but no service listens on {PROTO_NAMES.get(info['proto'])} port "
                f"{info['key'][4]}"]
    return []


def rewrite_text(snap: Snapshot, dec: d.Decision, changed: list[str]) -> list[str]:
    """What the mode does, and the fields this frame actually had changed."""
    if dec.reason == d.ECHO_REPLY:
        lines = ["echo reply built in place: MACs and addresses swapped, type 8 -> 0, TTL 64, checksums recomputed"]
    elif dec.reason == d.FRAG_NEEDED:
        extra = traits_of(dec.mode).encap_overhead
        lines = [f"the packet plus the {extra}-byte outer header exceeds the service MTU and DF is set: the LB answers "
                 f"with ICMP fragmentation needed (type 3 code 4) carrying MTU - {extra}, so the client lowers its path MTU"]
    elif dec.reason in (d.ICMP_ERROR_TO_BACKEND, d.ICMP_ERROR_TO_CLIENT) and traits_of(dec.mode).replies_via_lb:
        lines = ["ICMP error relayed: the outer addresses and the quoted header are rewritten the same way the "
                 "flow's packets are, so the receiving kernel recognises its own packet"]
    elif dec.reason == d.ICMP_ERROR_TO_BACKEND and dec.mode:
        lines = [f"ICMP error relayed the way {dec.mode} forwards the flow's packets: "
                 + get_rewriter(dec.mode).summary + "; the backend sent the quoted packet from the VIP itself, "
                 "so nothing inside needs rewriting"]
    elif dec.mode and dec.verdict == d.FORWARD:
        lines = [f"{dec.mode}: {get_rewriter(dec.mode).summary}"]
    elif dec.reason == d.TIME_EXCEEDED or dec.reason == "ttl_expired":
        lines = ["TTL would reach 0: the LB answers with ICMP time exceeded, as a router does"]
    else:
        lines = []
    if changed:
        lines.append("fields changed: " + ", ".join(changed))
    return lines


def stage_lines(stage: str, before: bytes, snap: Snapshot, dec: d.Decision, info: dict, entry, sched_line,
                outputs: list[bytes]) -> list[str]:
    """The lines of one stage, ending with the drop if the frame was dropped there."""
    failed_here = dec.verdict == d.DROP and stage_of(dec.reason) == stage
    drop_line = (f"DROP {dec.reason}: {d.DROP_REASONS.get(dec.reason, '')}"
                 + (f" ({dec.detail})" if dec.detail else ""))
    if stage == "parse":
        return parse_lines(before, snap) + ([drop_line] if failed_here else [])
    if stage == "classify":
        return classify_text(before, snap, dec, info) + ([drop_line] if failed_here else [])
    if stage == "flow table":
        return flow_lines(dec, info, entry) + ([drop_line] if failed_here else [])
    if stage == "scheduler":
        if failed_here:
            return ([sched_line] if sched_line else []) + [drop_line]
        if dec.flow_hit is False and sched_line:
            return [f"flow hash 0x{info['flow_hash']:08x} (seeded CRC-32 of the 5-tuple + MurmurHash3 fmix32)",
                    sched_line]
        if dec.flow_hit:
            return [f"not consulted: the flow table already names {dec.backend} (that is what keeps a "
                    "connection on one backend even if the scheduler would now choose another)"]
        return ["not consulted: no new flow to place"]
    if stage == "rewrite":
        same_packet = outputs and (dec.verdict == d.FORWARD or dec.reason == d.ECHO_REPLY)
        changed = changed_fields(dissect.diff(before, outputs[0])) if same_packet else []
        return rewrite_text(snap, dec, changed) + ([drop_line] if failed_here else [])
    return [emit_line(o, snap) for o in outputs] or ["nothing emitted"]


def changed_fields(rows: list[dissect.DiffRow]) -> list[str]:
    """``Layer.field`` for each change; a header that is new as a whole is one ``Layer (added)``."""
    added = {r.layer for r in rows} - {r.layer for r in rows if r.before != "-"}
    names = [f"{r.layer}.{r.field}" for r in rows if r.changed and r.layer not in added]
    return names + [f"{layer} (added)" for layer in dict.fromkeys(r.layer for r in rows if r.layer in added)]


def flow_lines(dec: d.Decision, info: dict, entry) -> list[str]:
    if dec.reason == d.OUTBOUND:
        if entry is None:
            return ["no flow entry for this reply (the NAT reverse table still names the backend)"]
        lines = [f"reply of the flow {key_text(entry.key)}: state now {entry.state}, "
                 f"{entry.packets_in} packets in / {entry.packets_out} out"]
        if entry.backend != dec.backend:
            lines.append(f"note: the flow table places this flow on {entry.backend}, yet the reply comes from "
                         f"{dec.backend}; NAT rewrites it anyway, by the backend's own address")
        return lines
    if "quoted_key" in info:
        key = info["quoted_key"]
        if dec.flow_hit:
            return [f"the quoted header, reversed, is the flow {key_text(key)}: HIT -> {dec.backend}"]
        return [f"the quoted header, reversed, is the flow {key_text(key)}: no entry"
                + (f"; {dec.mode} keeps no state it needs, the scheduler's hash finds the backend again"
                   if dec.backend else "")]
    key = dec.flow_key or info.get("key")
    if key is None:
        return ["not used: this frame opens no flow"]
    if dec.flow_hit:
        return [f"key {key_text(key)}: HIT -> {entry.backend if entry else dec.backend}, state "
                f"{entry.state if entry else '?'}; this is packet {entry.packets_in if entry else '?'} of the flow"]
    if entry is None:
        return [f"key {key_text(key)}: miss"]
    line = f"key {key_text(key)}: MISS -> new entry for {entry.backend}, state {entry.state}"
    if entry.snat_port:
        line += f", full-NAT source {int_to_ip(entry.snat_addr)}:{entry.snat_port} allocated from the service's range"
    return [line]


def key_text(key) -> str:
    proto, src, dst, sport, dport = key
    return f"{PROTO_NAMES.get(proto, proto)} {int_to_ip(src)}:{sport} -> {int_to_ip(dst)}:{dport}"


def emit_line(frame: bytes, snap: Snapshot) -> str:
    return f"{len(frame)} bytes to {bytes_to_mac(frame[DST_MAC])} ({who(frame[DST_MAC], snap)}): {dissect.summary(frame)}"
