"""``pktlb explain``: run one frame through the real data path and say, step by step, what it did.

Steps: parse (offsets, IHL, lengths) -> classify (service, or the drop reason) -> flow table (hit
or miss) -> scheduler (its own explanation of the pick; for Maglev the slot) -> rewrite (what the
mode changes) -> emit.  Then the field-by-field diff of scapy's dissection before and after, each
changed checksum with its RFC 1624 arithmetic checked against scapy's full recomputation, the
tunnel's outer header and MTU check, and for NAT/full-NAT the backend's reply run back through the
same data path.  The engine itself is not instrumented: everything here is read from its inputs,
its outputs, its decision, its flow table and its snapshot.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pktlb.core import decision as d
from pktlb.core.datapath import DataPath
from pktlb.core.flowkey import FlowKey, flow_hash
from pktlb.core.packet.addr import bytes_to_mac, int_to_ip
from pktlb.core.packet.frame import (
    DF_BIT,
    DST_MAC,
    ETHERTYPE,
    ETHERTYPE_IPV4,
    IP_FRAG,
    IP_PROTO,
    IP_TTL,
    IPIP_OVERHEAD,
    dst_addr,
    src_addr,
)
from pktlb.core.packet.frame import IP as IP_OFF  # the IPv4 header's offset (scapy's IP is the layer)
from pktlb.core.packet.icmp import ERROR_TYPES, ICMP_LEN
from pktlb.core.packet.ipv4 import (
    FLAG_DF,
    IPV4_STRUCT,
    PROTO_ICMP,
    PROTO_IPIP,
    PROTO_NAMES,
    PROTO_TCP,
    PROTO_UDP,
)
from pktlb.core.rewrite.registry import traits_of
from pktlb.core.rewrite.tunnel import outer_checksum
from pktlb.core.snapshot import BackendView, ServiceView, Snapshot
from pktlb.reports.explain import dissect, fastpath
from pktlb.reports.explain.checksum_steps import ChecksumStep, ip_header_step, l4_step, scapy_checksum
from pktlb.reports.explain.stages import STAGES, classify_text, parse_lines, rewrite_text, stage_of, who


@dataclass
class Step:
    name: str  # one of STAGES
    ok: bool
    lines: list[str]

    def as_dict(self) -> dict[str, object]:
        return {"step": self.name, "ok": self.ok, "text": self.lines}


@dataclass
class PassReport:
    """What happened to one frame: the decision, the steps, and the before/after evidence."""

    title: str
    before: bytes
    outputs: list[bytes]
    decision: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    diff: list[dissect.DiffRow] = field(default_factory=list)
    checksums: list[ChecksumStep] = field(default_factory=list)
    checksum_notes: list[str] = field(default_factory=list)
    emitted: list[dict[str, Any]] = field(default_factory=list)  # frames the LB built itself (ICMP answers)
    tunnel: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    fastpath: dict[str, Any] | None = None  # what the kernel fast path would do (reports/explain/fastpath.py)

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title, "decision": self.decision, "steps": [s.as_dict() for s in self.steps],
            "scheduler": self.scheduler, "diff": [r.as_dict() for r in self.diff],
            "checksums": [c.as_dict() for c in self.checksums], "checksum_notes": self.checksum_notes,
            "tunnel": self.tunnel, "emitted": self.emitted, "fastpath": self.fastpath,
            "input": {"bytes": len(self.before), "summary": dissect.summary(self.before), "hex": self.before.hex()},
            "outputs": [{"bytes": len(o), "summary": dissect.summary(o), "hex": o.hex()} for o in self.outputs],
        }


@dataclass
class Explanation:
    source: str
    config: str
    notes: list[str]
    warmup: list[str]  # one line per frame that went through the data path before the explained one
    packet: PassReport
    reply: PassReport | None
    reply_note: str

    def as_dict(self) -> dict[str, Any]:
        main = self.packet.as_dict()
        return {"source": self.source, "config": self.config, "notes": self.notes, "warmup": self.warmup, **main,
                "return": self.reply.as_dict() if self.reply else None, "return_note": self.reply_note}


def explain(datapath: DataPath, frame: bytes | bytearray, *, source: str, config_label: str,
            notes: list[str] | None = None, warm: Sequence[tuple[float, bytes | bytearray]] = (), now: float = 0.0,
            with_return: bool = True) -> Explanation:
    """Explain ``frame`` after ``warm`` frames have gone through ``datapath`` (to fill its flow table)."""
    warmup = []
    for ts, raw in warm:
        _, warm_dec = datapath.handle(bytearray(raw), ts)
        warmup.append(f"{dissect.summary(raw)}: {warm_dec.verdict} {warm_dec.reason}"
                      + (f" -> {warm_dec.backend}" if warm_dec.backend else ""))
        now = max(now, ts + 0.001)
    packet = run_pass(datapath, bytes(frame), now, "the frame as it reaches the LB")
    reply, reply_note = None, ""
    dec = packet.decision
    if dec["verdict"] == d.FORWARD and dec["reason"] == d.INBOUND:
        if traits_of(dec["mode"]).replies_via_lb:
            if with_return:
                reply_frame, what = backend_reply(packet.outputs[0], packet.before)
                reply = run_pass(datapath, reply_frame, now + 0.001, f"the backend's {what} as it reaches the LB")
            else:
                reply_note = "return packet skipped (--no-return)"
        else:
            reply_note = bypass_note(datapath.snapshot, dec)
    return Explanation(source, config_label, list(notes or []), warmup, packet, reply, reply_note)


def run_pass(datapath: DataPath, before: bytes, now: float, title: str) -> PassReport:
    snap = datapath.snapshot
    info = _peek(before, snap)
    svc: ServiceView | None = info.get("service")
    key: FlowKey | None = info.get("key")
    if key is None and "quoted_key" in info:  # an ICMP error: the flow it quotes may be placed by the scheduler
        key = info["quoted_key"]
        svc = snap.services.get((key[0], key[2], key[4]))
    sched_line = None
    if svc is not None and key is not None:
        # Ask a copy, before the engine runs: rr/wrr advance their turn on every pick, and the
        # flow table's loads (lc, lrt, bw) change once the flow is inserted.
        fh = flow_hash(*key, snap.seed)
        sched_line = copy.deepcopy(svc.scheduler).explain(key, fh, datapath.flows.loads_for(svc.name))
        info["flow_hash"] = fh
    kernel = fastpath.ask(datapath, before, now)
    frames, dec = datapath.handle(bytearray(before), now)
    outputs = [bytes(f) for f in frames]
    report = PassReport(title, before, outputs, dec.as_dict(), fastpath=fastpath.settle(kernel, outputs))
    failed = stage_of(dec.reason) if dec.verdict == d.DROP else None
    entry = _entry_after(datapath, dec, before, snap)
    be = svc.by_name.get(dec.backend) if svc and dec.backend else None
    if be is None and dec.service and dec.backend:
        owner = snap.service_named(dec.service)
        be = owner.by_name.get(dec.backend) if owner else None
    for stage in STAGES:
        lines = _stage_lines(stage, before, snap, dec, info, entry, sched_line, outputs)
        report.steps.append(Step(stage, stage != failed, lines))
        if stage == failed:
            break
    if sched_line and svc is not None and dec.flow_hit is False:
        report.scheduler = {"name": svc.scheduler.name, "flow_hash": f"0x{info['flow_hash']:08x}",
                            "explain": sched_line, "backend": dec.backend}
    if outputs and (dec.verdict == d.FORWARD or dec.reason == d.ECHO_REPLY):
        report.diff = dissect.diff(before, outputs[0])
        _checksums(report, before, outputs[0], dec, be, entry)
    else:
        report.emitted = [{"summary": dissect.summary(o),
                           "layers": [{"layer": la.label, "fields": dict(la.fields)} for la in dissect.dissect(o)]}
                          for o in outputs]
    if traits_of(dec.mode).encap_overhead and svc is not None and dec.reason in (d.INBOUND, d.FRAG_NEEDED, "too_big"):
        report.tunnel = _tunnel(before, outputs, svc, be, snap, dec)
    return report


def _peek(frame: bytes, snap: Snapshot) -> dict[str, Any]:
    """The 5-tuple and the service a frame to a VIP would match, read without touching the data path."""
    if len(frame) < 38 or frame[ETHERTYPE:ETHERTYPE + 2] != ETHERTYPE_IPV4:
        return {}
    ihl = (frame[IP_OFF] & 15) * 4
    proto = frame[IP_PROTO]
    src, dst = src_addr(frame), dst_addr(frame)
    l4 = IP_OFF + ihl
    if proto == PROTO_ICMP and dst in snap.vips and len(frame) >= l4 + 8 + 24 and frame[l4] in ERROR_TYPES:
        q = l4 + 8  # the quoted IP header; its flow reversed is the client's flow
        q_l4 = q + (frame[q] & 15) * 4
        if len(frame) >= q_l4 + 4:
            qsrc, qdst = int.from_bytes(frame[q + 12:q + 16], "big"), int.from_bytes(frame[q + 16:q + 20], "big")
            qsport, qdport = int.from_bytes(frame[q_l4:q_l4 + 2], "big"), int.from_bytes(frame[q_l4 + 2:q_l4 + 4], "big")
            return {"proto": proto, "quoted_key": (frame[q + 9], qdst, qsrc, qdport, qsport)}
    if proto not in (PROTO_TCP, PROTO_UDP) or len(frame) < l4 + 4 or dst not in snap.vips:
        return {"proto": proto}
    sport, dport = int.from_bytes(frame[l4:l4 + 2], "big"), int.from_bytes(frame[l4 + 2:l4 + 4], "big")
    key = (proto, src, dst, sport, dport)
    return {"proto": proto, "key": key, "service": snap.services.get((proto, dst, dport))}


def _entry_after(datapath: DataPath, dec: d.Decision, frame: bytes, snap: Snapshot):
    flows = datapath.flows
    if dec.flow_key is not None:
        return flows.entries.get(dec.flow_key)
    if dec.reason != d.OUTBOUND or len(frame) < 38:
        return None
    proto = frame[IP_PROTO]
    dst = dst_addr(frame)
    l4 = IP_OFF + (frame[IP_OFF] & 15) * 4
    dport = int.from_bytes(frame[l4 + 2:l4 + 4], "big")
    if traits_of(dec.mode).needs_snat:
        return flows.snat_index.get((proto, dst, dport))
    svc = snap.service_named(dec.service) if dec.service is not None else None
    return flows.entries.get((proto, dst, svc.vip, dport, svc.port)) if svc else None


def _stage_lines(stage: str, before: bytes, snap: Snapshot, dec: d.Decision, info: dict, entry, sched_line,
                 outputs: list[bytes]) -> list[str]:
    failed_here = dec.verdict == d.DROP and stage_of(dec.reason) == stage
    drop_line = (f"DROP {dec.reason}: {d.DROP_REASONS.get(dec.reason, '')}"
                 + (f" ({dec.detail})" if dec.detail else ""))
    if stage == "parse":
        return parse_lines(before, snap) + ([drop_line] if failed_here else [])
    if stage == "classify":
        return classify_text(before, snap, dec, info) + ([drop_line] if failed_here else [])
    if stage == "flow table":
        return _flow_lines(dec, info, entry) + ([drop_line] if failed_here else [])
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
        changed = _changed_fields(dissect.diff(before, outputs[0])) if same_packet else []
        return rewrite_text(snap, dec, changed) + ([drop_line] if failed_here else [])
    return [_emit_line(o, snap) for o in outputs] or ["nothing emitted"]


def _changed_fields(rows: list[dissect.DiffRow]) -> list[str]:
    """``Layer.field`` for each change; a header that is new as a whole is one ``Layer (added)``."""
    added = {r.layer for r in rows} - {r.layer for r in rows if r.before != "-"}
    names = [f"{r.layer}.{r.field}" for r in rows if r.changed and r.layer not in added]
    return names + [f"{layer} (added)" for layer in dict.fromkeys(r.layer for r in rows if r.layer in added)]


def _flow_lines(dec: d.Decision, info: dict, entry) -> list[str]:
    if dec.reason == d.OUTBOUND:
        if entry is None:
            return ["no flow entry for this reply (the NAT reverse table still names the backend)"]
        lines = [f"reply of the flow {_key_text(entry.key)}: state now {entry.state}, "
                 f"{entry.packets_in} packets in / {entry.packets_out} out"]
        if entry.backend != dec.backend:
            lines.append(f"note: the flow table places this flow on {entry.backend}, yet the reply comes from "
                         f"{dec.backend}; NAT rewrites it anyway, by the backend's own address")
        return lines
    if "quoted_key" in info:
        key = info["quoted_key"]
        if dec.flow_hit:
            return [f"the quoted header, reversed, is the flow {_key_text(key)}: HIT -> {dec.backend}"]
        return [f"the quoted header, reversed, is the flow {_key_text(key)}: no entry"
                + (f"; {dec.mode} keeps no state it needs, the scheduler's hash finds the backend again"
                   if dec.backend else "")]
    key = dec.flow_key or info.get("key")
    if key is None:
        return ["not used: this frame opens no flow"]
    if dec.flow_hit:
        return [f"key {_key_text(key)}: HIT -> {entry.backend if entry else dec.backend}, state "
                f"{entry.state if entry else '?'}; this is packet {entry.packets_in if entry else '?'} of the flow"]
    if entry is None:
        return [f"key {_key_text(key)}: miss"]
    line = f"key {_key_text(key)}: MISS -> new entry for {entry.backend}, state {entry.state}"
    if entry.snat_port:
        line += f", full-NAT source {int_to_ip(entry.snat_addr)}:{entry.snat_port} allocated from the service's range"
    return [line]


def _key_text(key) -> str:
    proto, src, dst, sport, dport = key
    return f"{PROTO_NAMES.get(proto, proto)} {int_to_ip(src)}:{sport} -> {int_to_ip(dst)}:{dport}"


def _emit_line(frame: bytes, snap: Snapshot) -> str:
    return f"{len(frame)} bytes to {bytes_to_mac(frame[DST_MAC])} ({who(frame[DST_MAC], snap)}): {dissect.summary(frame)}"


def _checksums(report: PassReport, before: bytes, after: bytes, dec: d.Decision, be: BackendView | None,
               entry) -> None:
    tunnelled = after[IP_PROTO] == PROTO_IPIP and len(after) == len(before) + IPIP_OVERHEAD
    ip_a = IP_OFF + IPIP_OVERHEAD if tunnelled else IP_OFF
    suffix = " (inner)" if tunnelled else ""
    ip_step = ip_header_step(before, after, IP_OFF, ip_a, "IP header" + suffix)
    l4 = l4_step(before, after, IP_OFF, ip_a)
    deltas = _engine_deltas(dec, be, entry)
    if ip_step is not None:
        ip_step.engine_delta = deltas.get("ip")
        report.checksums.append(ip_step)
    if l4 is not None:
        if l4.header != "ICMP" and dec.reason != d.ICMP_ERROR_TO_BACKEND:
            l4.engine_delta = deltas.get("l4")
        else:
            l4.notes.append("the engine recomputes ICMP checksums in full (ICMP is not the hot path); "
                            "the incremental update gives the same value")
        l4.header += suffix
        report.checksums.append(l4)
    if dec.reason == d.ICMP_ERROR_TO_BACKEND and ip_step is not None:
        ip_step.notes.append("relayed ICMP errors are not the hot path: the engine recomputes their checksums "
                             "in full; the incremental update gives the same value")
    if before[IP_PROTO] == PROTO_ICMP and dec.reason == d.ICMP_ERROR_TO_BACKEND and not tunnelled:
        quoted = IP_OFF + (before[IP_OFF] & 15) * 4 + ICMP_LEN
        step = ip_header_step(before, after, quoted, quoted, "IP header quoted in the ICMP error")
        if step is not None:
            report.checksums.append(step)
    if tunnelled:
        report.checksum_notes.append("inner IP and L4 checksums unchanged: the inner packet travels exactly as sent")
    elif not report.checksums:
        report.checksum_notes.append("no checksum changed: no checksummed field was rewritten (MAC addresses are "
                                     "covered only by the Ethernet FCS, which the NIC computes)")


def _engine_deltas(dec: d.Decision, be: BackendView | None, entry) -> dict[str, tuple[str, int]]:
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


def _tunnel(before: bytes, outputs: list[bytes], svc: ServiceView, be: BackendView | None, snap: Snapshot,
            dec: d.Decision) -> dict[str, Any]:
    inner_len = int.from_bytes(before[16:18], "big")
    df = bool(before[IP_FRAG] & DF_BIT)
    overhead = svc.rewriter.traits.encap_overhead
    fits = inner_len + overhead <= svc.mtu
    info: dict[str, Any] = {
        "inner_length": inner_len, "overhead": overhead, "outer_length": inner_len + overhead,
        "mtu": svc.mtu, "fits": fits, "df": df,
    }
    if not fits:
        info["outcome"] = (f"frag-needed sent to the client with next-hop MTU {svc.mtu - overhead}" if df
                           else "dropped as too_big (DF clear, and pktlb does not fragment)")
        return info
    if dec.reason != d.INBOUND or be is None or not outputs:
        return info
    out = outputs[0]
    _, _, total, ident, flags, _, _, written, _, _ = IPV4_STRUCT.unpack_from(out, IP_OFF)
    computed = outer_checksum(be.outer_base_sum, total, ident, flags & FLAG_DF)
    scapy = scapy_checksum(out, IP_OFF)
    info["outer"] = {
        "src": int_to_ip(src_addr(out)), "dst": int_to_ip(dst_addr(out)),
        "protocol": out[IP_PROTO], "ttl": out[IP_TTL], "id": ident, "df": bool(flags & FLAG_DF), "total_length": total,
    }
    info["outer_checksum"] = {
        "base_sum": f"0x{be.outer_base_sum:04x}", "total_length": total, "id": ident, "flags": f"0x{flags:04x}",
        "computed": f"0x{computed:04x}", "written": f"0x{written:04x}",
        "scapy": None if scapy is None else f"0x{scapy:04x}", "agrees": computed == written == scapy,
    }
    return info


def backend_reply(to_backend: bytes, original: bytes) -> tuple[bytes, str]:
    """The backend's answer to the frame the LB sent it, as it reaches the LB (addressed to its MAC)."""
    out = Ether(to_backend)
    ip = out[IP]
    reply_ip = IP(src=ip.dst, dst=ip.src, ttl=64, flags="DF")
    if TCP in out:
        tcp = out[TCP]
        flags = str(tcp.flags)
        seen = len(bytes(tcp.payload)) + (1 if "S" in flags or "F" in flags else 0)
        if "S" in flags and "A" not in flags:
            l4, what = TCP(sport=tcp.dport, dport=tcp.sport, flags="SA", seq=5000, ack=tcp.seq + 1), "SYN-ACK"
        else:
            l4, what = TCP(sport=tcp.dport, dport=tcp.sport, flags="A", seq=5001, ack=tcp.seq + seen), "ACK"
        pkt = Ether(src=out.dst, dst=out.src) / reply_ip / l4
    else:
        udp = out[UDP]
        pkt = Ether(src=out.dst, dst=out.src) / reply_ip / UDP(sport=udp.dport, dport=udp.sport) / b"reply"
        what = "UDP reply"
    return bytes(pkt), what


def bypass_note(snap: Snapshot, dec: dict[str, Any]) -> str:
    svc = snap.service_named(dec["service"])
    vip = int_to_ip(svc.vip) if svc else "the VIP"
    how = ("decapsulates the outer header; the inner packet is addressed to the VIP, which it holds"
           if traits_of(dec["mode"]).needs_decapsulator else "holds the VIP on its lo (arp_ignore=1, arp_announce=2)")
    return (f"replies bypass the LB: {dec['backend']} {how}, so its kernel answers from {vip} straight to the "
            f"client through the router; pktlb never sees them, so there is no return rewrite")
