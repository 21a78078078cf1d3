"""What a capture taken on the load balancer's interface says about the frames it handled.

Frames addressed to the LB's MAC are what it received; frames from its MAC are what it sent.
Pairing a received TCP segment with the one sent for it (same sequence and acknowledgement
numbers, flags and payload length, looked up inside IP-in-IP when encapsulated) gives the header
bytes each mode adds per packet.  Sequence numbers survive every mode's rewrite (NAT, full-NAT,
IP-in-IP and DSR change addresses, ports, MACs or add a header, never the TCP sequence space).
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pktlb.adapters.pcap import read_pcap
from pktlb.core.packet.addr import mac_to_bytes
from pktlb.core.packet.ethernet import ETH_LEN as ETH_HEADER
from pktlb.core.packet.ethernet import ETH_P_IP as ETHERTYPE_IPV4
from pktlb.core.packet.ipv4 import PROTO_IPIP, PROTO_TCP

_TCP_SEQ_ACK = struct.Struct("!HHII")


@dataclass(frozen=True)
class Segment:
    """One TCP segment of a frame: the outer IP length and the (innermost) TCP fields."""

    frame_len: int
    ip_total: int
    encapsulated: bool
    sport: int
    dport: int
    key: tuple[int, int, int, int]  # seq, ack, flags, payload length


def parse_segment(frame: bytes | bytearray) -> Segment | None:
    """The TCP segment in an Ethernet/IPv4 frame (inside one IP-in-IP header too); None otherwise."""
    if len(frame) < ETH_HEADER + 20 or struct.unpack_from("!H", frame, 12)[0] != ETHERTYPE_IPV4:
        return None
    outer = ETH_HEADER
    ip_total = struct.unpack_from("!H", frame, outer + 2)[0]
    ip, encapsulated = outer, False
    if frame[ip + 9] == PROTO_IPIP:
        ip, encapsulated = ip + (frame[ip] & 0x0F) * 4, True
        if len(frame) < ip + 20:
            return None
    if frame[ip + 9] != PROTO_TCP:
        return None
    inner_total = struct.unpack_from("!H", frame, ip + 2)[0]
    tcp = ip + (frame[ip] & 0x0F) * 4
    if len(frame) < tcp + 20:
        return None
    sport, dport, seq, ack = _TCP_SEQ_ACK.unpack_from(frame, tcp)
    payload = inner_total - (tcp - ip) - (frame[tcp + 12] >> 4) * 4
    return Segment(len(frame), ip_total, encapsulated, sport, dport, (seq, ack, frame[tcp + 13], payload))


@dataclass
class LbFrames:
    """Frames the LB received for a service port, by direction, and the per-packet overhead it added."""

    packets_in: int = 0  # client -> backend direction (to the service port)
    bytes_in: int = 0  # Ethernet frame bytes, as the engine counts them
    packets_out: int = 0  # replies (from the service port) that came to the LB
    bytes_out: int = 0
    sent: int = 0
    encapsulated_sent: int = 0
    overheads: dict[int, int] | None = None  # bytes added per forwarded packet -> how many packets

    @property
    def header_overhead(self) -> int | None:
        """The most common overhead, None if no received packet could be paired with its forward."""
        return max(self.overheads.items(), key=lambda kv: kv[1])[0] if self.overheads else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "overheads": {str(k): v for k, v in (self.overheads or {}).items()},
                "header_overhead": self.header_overhead}


def lb_frames(path: str | Sequence[str], lb_mac: str | Sequence[str], service_port: int) -> LbFrames:
    """``path``: one capture or one per LB interface (a two-armed LB); ``lb_mac``: the LB's MAC(s)."""
    macs = {mac_to_bytes(m) for m in ([lb_mac] if isinstance(lb_mac, str) else lb_mac)}
    result = LbFrames()
    received: dict[tuple[int, int, int, int], int] = {}
    sent: list[Segment] = []
    frames = [frame for one in ([path] if isinstance(path, str) else path) for _, frame in read_pcap(one)]
    for frame in frames:
        segment = parse_segment(frame)
        if segment is None:
            continue
        if bytes(frame[0:6]) in macs:
            if segment.dport == service_port:
                result.packets_in += 1
                result.bytes_in += segment.frame_len
                received.setdefault(segment.key, segment.ip_total)
            elif segment.sport == service_port:
                result.packets_out += 1
                result.bytes_out += segment.frame_len
        elif bytes(frame[6:12]) in macs:
            result.sent += 1
            result.encapsulated_sent += segment.encapsulated
            sent.append(segment)
    overheads: Counter[int] = Counter()
    for segment in sent:
        if segment.dport == service_port and segment.key in received:
            overheads[segment.ip_total - received[segment.key]] += 1
    result.overheads = dict(overheads)
    return result


def count_frames(path: str) -> int:
    return sum(1 for _ in read_pcap(path))
