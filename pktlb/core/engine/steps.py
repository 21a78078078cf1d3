"""Steps the data path's stages share: the L4 header check, the scheduler call, the TTL answer.

``Outcome`` is what every stage returns: the frames to emit and the decision (``core.decision``).
"""

from __future__ import annotations

import struct

from pktlb.core import decision as d
from pktlb.core.flowkey import FlowKey, flow_hash
from pktlb.core.flowtable import FlowTable
from pktlb.core.packet.frame import IP, IP_SRC, IP_TTL, SRC_MAC
from pktlb.core.packet.icmp import quote, time_exceeded
from pktlb.core.packet.ipv4 import PROTO_TCP
from pktlb.core.packet.l4 import (
    TCP_MIN_LEN,
    TCP_OFF_CSUM,
    TCP_OFF_DATA,
    UDP_LEN,
    UDP_OFF_CSUM,
    UDP_OFF_LENGTH,
    UDP_TAIL,
)
from pktlb.core.snapshot import BackendView, ServiceView, Snapshot

Frames = list[bytearray]
Outcome = tuple[Frames, d.Decision]
NONE: Frames = []
ADDRS = struct.Struct("!II").unpack_from  # source and destination address
PORTS = struct.Struct("!HH").unpack_from  # source and destination port
UDP_LENGTH_CSUM = UDP_TAIL.unpack_from  # a UDP header's length and checksum, at UDP_OFF_LENGTH
BAD_L4 = d.Drop("bad_l4_header")


def l4_checksum_offset(frame: bytearray, proto: int, l4: int, l4_len: int, partial: bool) -> int | d.Drop:
    """Offset of the L4 checksum to update (0: none, a UDP checksum of 0), or ``bad_l4_header``."""
    if proto == PROTO_TCP:
        if l4_len < TCP_MIN_LEN:
            return BAD_L4
        words = frame[l4 + TCP_OFF_DATA] >> 4  # the TCP header's length in 32-bit words
        if words < 5 or words * 4 > l4_len:
            return BAD_L4
        return l4 + TCP_OFF_CSUM
    if l4_len < UDP_LEN:
        return BAD_L4
    length, csum = UDP_LENGTH_CSUM(frame, l4 + UDP_OFF_LENGTH)
    if not UDP_LEN <= length <= l4_len:
        return BAD_L4
    return l4 + UDP_OFF_CSUM if partial or csum else 0


def pick_backend(svc: ServiceView, flows: FlowTable, key: FlowKey, seed: int) -> BackendView | None:
    """The service's scheduler on a flow: its stable hash and the backends' live figures."""
    return svc.scheduler.pick(key, flow_hash(key[0], key[1], key[2], key[3], key[4], seed), flows.loads_for(svc.name))


def ttl_expired(frame: bytearray, snap: Snapshot, svc: ServiceView, end: int) -> Outcome:
    """ICMP time exceeded back to the sender, as a router answers a packet whose TTL runs out here."""
    src = ADDRS(frame, IP_SRC)[0]
    icmp = time_exceeded(frame[SRC_MAC], snap.lb_mac, snap.lb_addr, src,
                         quote(frame, IP, end - IP, (frame[IP] & 15) * 4))
    return [icmp], d.drop("ttl_expired", f"TTL {frame[IP_TTL]}", svc.name, svc.mode)
