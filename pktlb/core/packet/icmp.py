"""ICMP (RFC 792): the header, the IPv4+L4 header embedded in errors, and error/echo builders.

    +--------+--------+--------+--------+
    |  type  |  code  |    checksum     |
    +--------+--------+--------+--------+
    |  rest of header (id/seq, MTU ...) |
    +--------+--------+--------+--------+
    | errors: original IPv4 header + at least 8 bytes of its payload    |

Builders return whole Ethernet frames so the engine can emit them as they are.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pktlb.core.checksum import checksum
from pktlb.core.packet.ethernet import ETH_P_IP, ETH_STRUCT
from pktlb.core.packet.ipv4 import IPV4_STRUCT, PROTO_ICMP, U16, IPv4

ICMP_STRUCT = struct.Struct("!BBHHH")
ICMP_LEN = ICMP_STRUCT.size  # 8
ICMP_OFF_CSUM = 2

ECHO_REPLY = 0
DEST_UNREACH = 3
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAM_PROBLEM = 12
CODE_FRAG_NEEDED = 4
ERROR_TYPES = frozenset({DEST_UNREACH, TIME_EXCEEDED, PARAM_PROBLEM})
# RFC 1812: quote as much of the original as fits in 576 bytes; we quote header + 64 bytes.
QUOTE_PAYLOAD = 64


@dataclass(frozen=True)
class ICMP:
    type: int
    code: int
    csum: int = 0
    ident: int = 0  # echo identifier, or unused / "next-hop MTU" high half for errors
    seq: int = 0

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview, off: int = 0) -> ICMP:
        return cls(*ICMP_STRUCT.unpack_from(buf, off))

    @property
    def next_hop_mtu(self) -> int:
        return self.seq


def build_ipv4_icmp(eth_dst: bytes | bytearray, eth_src: bytes, ip_src: int, ip_dst: int, icmp_type: int,
                    code: int, rest: int, payload: bytes | bytearray | memoryview, ttl: int = 64) -> bytearray:
    """A whole Ethernet+IPv4+ICMP frame with both checksums filled."""
    icmp = bytearray(ICMP_STRUCT.pack(icmp_type, code, 0, rest >> 16, rest & 0xFFFF))
    icmp += payload
    U16.pack_into(icmp, ICMP_OFF_CSUM, checksum(icmp))
    ip = IPv4(src=ip_src, dst=ip_dst, proto=PROTO_ICMP, ttl=ttl, total_length=20 + len(icmp))
    return bytearray(ETH_STRUCT.pack(eth_dst, eth_src, ETH_P_IP)) + ip.pack() + icmp


def quote(frame: bytes | bytearray | memoryview, ip_off: int, ip_total: int, ihl_bytes: int) -> bytes:
    """The part of an offending packet an ICMP error carries: its IP header and up to 64 payload bytes."""
    end = ip_off + min(ip_total, ihl_bytes + QUOTE_PAYLOAD)
    return bytes(frame[ip_off:end])


def frag_needed(eth_dst: bytes | bytearray, eth_src: bytes, lb_ip: int, client_ip: int, mtu: int,
                quoted: bytes) -> bytearray:
    """Destination unreachable, fragmentation needed (type 3 code 4) carrying the usable MTU (RFC 1191)."""
    return build_ipv4_icmp(eth_dst, eth_src, lb_ip, client_ip, DEST_UNREACH, CODE_FRAG_NEEDED,
                           mtu & 0xFFFF, quoted)


def time_exceeded(eth_dst: bytes | bytearray, eth_src: bytes, lb_ip: int, client_ip: int, quoted: bytes) -> bytearray:
    """Time exceeded in transit (type 11 code 0), as a router sends when TTL would reach 0."""
    return build_ipv4_icmp(eth_dst, eth_src, lb_ip, client_ip, TIME_EXCEEDED, 0, 0, quoted)


def embedded_offsets(buf: bytes | bytearray | memoryview, icmp_off: int, end: int) -> tuple[int, int, int] | None:
    """For an ICMP error at ``icmp_off``: (inner IP offset, inner IHL in bytes, inner protocol), or None
    when the quoted header is missing or malformed.  The inner L4 header's first 8 bytes must be present."""
    inner = icmp_off + ICMP_LEN
    if end - inner < 20:
        return None
    vihl = buf[inner]
    ihl = (vihl & 15) * 4
    if vihl >> 4 != 4 or ihl < 20 or end - inner < ihl + 8:
        return None
    return inner, ihl, buf[inner + 9]


__all__ = ["ICMP", "IPV4_STRUCT", "build_ipv4_icmp", "frag_needed", "time_exceeded", "quote",
           "embedded_offsets"]
