"""``pktlb explain``: run one frame through the real data path and say, step by step, what it did.

Steps: parse (offsets, IHL, lengths) -> classify (service, or the drop reason) -> flow table (hit
or miss) -> scheduler (its own explanation of the pick; for Maglev the slot) -> rewrite (what the
mode changes) -> emit.  Then the field-by-field diff of scapy's dissection before and after, each
changed checksum with its RFC 1624 arithmetic checked against scapy's full recomputation, the
tunnel's outer header and MTU check, and for NAT/full-NAT the backend's reply run back through the
same data path.  The engine itself is not instrumented: everything here is read from its inputs,
its outputs, its decision, its flow table and its snapshot.

This module runs the passes and holds their records; the wording of each step is ``stages``, the
checksum evidence ``checksum_report``, the tunnel's ``tunnel``, the return packet ``reply``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pktlb.core import decision as d
from pktlb.core.datapath import DataPath
from pktlb.core.flowkey import FlowKey, flow_hash
from pktlb.core.packet.frame import ETHERTYPE, ETHERTYPE_IPV4, IP_PROTO, dst_addr, src_addr
from pktlb.core.packet.frame import IP as IP_OFF  # the IPv4 header's offset (scapy's IP is the layer)
from pktlb.core.packet.icmp import ERROR_TYPES
from pktlb.core.packet.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP
from pktlb.core.rewrite.registry import traits_of
from pktlb.core.snapshot import ServiceView, Snapshot
from pktlb.reports.explain import dissect, fastpath
from pktlb.reports.explain.checksum_report import checksum_evidence
from pktlb.reports.explain.checksum_steps import ChecksumStep
from pktlb.reports.explain.reply import backend_reply, bypass_note
from pktlb.reports.explain.stages import STAGES, stage_lines, stage_of
from pktlb.reports.explain.tunnel import tunnel_facts


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
        lines = stage_lines(stage, before, snap, dec, info, entry, sched_line, outputs)
        report.steps.append(Step(stage, stage != failed, lines))
        if stage == failed:
            break
    if sched_line and svc is not None and dec.flow_hit is False:
        report.scheduler = {"name": svc.scheduler.name, "flow_hash": f"0x{info['flow_hash']:08x}",
                            "explain": sched_line, "backend": dec.backend}
    if outputs and (dec.verdict == d.FORWARD or dec.reason == d.ECHO_REPLY):
        report.diff = dissect.diff(before, outputs[0])
        report.checksums, report.checksum_notes = checksum_evidence(before, outputs[0], dec, be, entry)
    else:
        report.emitted = [{"summary": dissect.summary(o),
                           "layers": [{"layer": la.label, "fields": dict(la.fields)} for la in dissect.dissect(o)]}
                          for o in outputs]
    if traits_of(dec.mode).encap_overhead and svc is not None and dec.reason in (d.INBOUND, d.FRAG_NEEDED, "too_big"):
        report.tunnel = tunnel_facts(before, outputs, svc, be, snap, dec)
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
