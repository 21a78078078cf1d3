"""The tunnel in ``pktlb explain``: the outer header's size against the service's MTU (what happens when it
does not fit), and the outer IPv4 header the engine wrote, its checksum computed from the backend's
precomputed base sum and checked against what was written and what scapy computes.
"""

from __future__ import annotations

from typing import Any

from pktlb.core import decision as d
from pktlb.core.packet.addr import int_to_ip
from pktlb.core.packet.frame import DF_BIT, IP_FRAG, IP_PROTO, IP_TTL, dst_addr, src_addr
from pktlb.core.packet.frame import IP as IP_OFF
from pktlb.core.packet.ipv4 import FLAG_DF, IPV4_STRUCT
from pktlb.core.rewrite.tunnel import outer_checksum
from pktlb.core.snapshot import BackendView, ServiceView, Snapshot
from pktlb.reports.explain.checksum_steps import scapy_checksum


def tunnel_facts(before: bytes, outputs: list[bytes], svc: ServiceView, be: BackendView | None, snap: Snapshot,
                 dec: d.Decision) -> dict[str, Any]:
    """The tunnel's sizes and MTU check for one frame, and the outer header with its checksum worked out."""
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
