"""Where the fields of an untagged Ethernet + IPv4 frame sit, as absolute offsets into the frame.

The engine reads a received frame in place; these names say which byte it reads.  They are the
codecs' own offsets (``ethernet``, ``ipv4``) added to the 14-byte Ethernet header, so the diagram in
each codec is the one to look at:

    0            6            12     14                      22    23    24      26      30      34
    | dst MAC    | src MAC    | type | ver/IHL ... total len | TTL | proto | csum | src IP | dst IP | (L4 ...)
"""

from __future__ import annotations

import struct

from pktlb.core.packet.ethernet import ETH_LEN, ETH_P_8021Q, ETH_P_IP, ETHERTYPE_OFF
from pktlb.core.packet.ipv4 import (
    FLAG_MF,
    FRAG_OFFSET_MASK,
    IPV4_MIN_LEN,
    OFF_CSUM,
    OFF_DST,
    OFF_FRAG,
    OFF_PROTO,
    OFF_SRC,
    OFF_TOTLEN,
    OFF_TTL,
    PROTO_IPIP,
)

MACS = slice(0, 12)  # both Ethernet addresses: the rewriters set them in one slice assignment
DST_MAC = slice(0, 6)
SRC_MAC = slice(6, 12)
ETHERTYPE = ETHERTYPE_OFF  # 12
IP = ETH_LEN  # 14: the IPv4 header of an untagged frame
IP_TOTLEN = IP + OFF_TOTLEN  # 16
IP_FRAG = IP + OFF_FRAG  # 20: flags (DF 0x40, MF 0x20) and the high bits of the fragment offset
IP_TTL = IP + OFF_TTL  # 22
IP_PROTO = IP + OFF_PROTO  # 23
IP_CSUM = IP + OFF_CSUM  # 24
IP_SRC = IP + OFF_SRC  # 26
IP_DST = IP + OFF_DST  # 30
MIN_IPV4_FRAME = IP + IPV4_MIN_LEN  # 34
FRAG_BITS = 0x3F  # of the byte at IP_FRAG: MF and the fragment offset's high bits (any set: a fragment)
DF_BIT = 0x40  # of the byte at IP_FRAG: don't fragment
FRAGMENT = FLAG_MF | FRAG_OFFSET_MASK  # of the 16-bit flags/offset field: any set, a fragment (DF is free)

# The fields the engine classifies a frame by, read in one call (one C call costs less than a Python
# subscript per byte): EtherType, version/IHL, total length, flags/fragment offset, protocol, source
# and destination address.  The pad bytes ("x") skip the MACs, TOS, ID, TTL and checksum; the test
# suite checks each field against the codecs (``ethernet``, ``ipv4``).
HEADER_FIELDS = struct.Struct("!12x H BxH 2xH x B 2x I I")
assert HEADER_FIELDS.size == MIN_IPV4_FRAME
header_fields = HEADER_FIELDS.unpack_from  # (frame) -> (ethertype, vihl, total, frag, proto, src, dst)

# A flow's fields from a frame whose IPv4 header has no options (version/IHL 0x45, so the ports follow
# at 34): EtherType, version/IHL, protocol, addresses, ports.  The fast path's sync reads punted frames
# with it (the kernel program punts every frame with options before this is asked).
FLOW_FIELDS = struct.Struct("!12x H B8x B2x I I H H")
assert FLOW_FIELDS.size == MIN_IPV4_FRAME + 4
flow_fields = FLOW_FIELDS.unpack_from  # (frame) -> (ethertype, vihl, proto, src, dst, sport, dport)

ETHERTYPE_IPV4 = ETH_P_IP.to_bytes(2, "big")  # b"\x08\x00", as the frame carries it
ETH_P_VLAN = ETH_P_8021Q

IPIP_OVERHEAD = IPV4_MIN_LEN  # an IP-in-IP tunnel (RFC 2003) adds one option-less IPv4 header: 20 bytes
IPIP_PROTO = PROTO_IPIP  # the outer header's protocol


def src_addr(frame: bytes | bytearray, ip: int = IP) -> int:
    """The IPv4 source address of the header at ``ip`` as an integer."""
    return int.from_bytes(frame[ip + OFF_SRC:ip + OFF_SRC + 4], "big")


def dst_addr(frame: bytes | bytearray, ip: int = IP) -> int:
    """The IPv4 destination address of the header at ``ip`` as an integer."""
    return int.from_bytes(frame[ip + OFF_DST:ip + OFF_DST + 4], "big")
