"""The return half of ``pktlb explain``: the backend's reply built for a frame the LB sent it (run back
through the data path in modes whose replies pass the LB), or why replies bypass the LB.
"""

from __future__ import annotations

from typing import Any

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pktlb.core.packet.addr import int_to_ip
from pktlb.core.rewrite.registry import traits_of
from pktlb.core.snapshot import Snapshot


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
