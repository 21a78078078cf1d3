"""IPv4 header (RFC 791).

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |Version|  IHL  |    DSCP/ECN   |          Total Length         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |         Identification        |Flags|      Fragment Offset    |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  Time to Live |    Protocol   |         Header Checksum       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       Source Address                          |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                    Destination Address                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                    Options (IHL > 5)                          |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pktlb.core.checksum import checksum

IPV4_STRUCT = struct.Struct("!BBHHHBBHII")
IPV4_MIN_LEN = IPV4_STRUCT.size  # 20
# Offsets of single fields inside the header, for in-place rewriting.
OFF_TOTLEN = 2
OFF_ID = 4
OFF_FRAG = 6
OFF_TTL = 8
OFF_PROTO = 9
OFF_CSUM = 10
OFF_SRC = 12
OFF_DST = 16

FLAG_DF = 0x4000
FLAG_MF = 0x2000
FRAG_OFFSET_MASK = 0x1FFF

PROTO_ICMP = 1
PROTO_IPIP = 4
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_NAMES = {PROTO_ICMP: "icmp", PROTO_IPIP: "ipip", PROTO_TCP: "tcp", PROTO_UDP: "udp"}
PROTO_NUMBERS = {name: num for num, name in PROTO_NAMES.items()}

U16 = struct.Struct("!H")
U32 = struct.Struct("!I")


@dataclass(frozen=True)
class IPv4:
    src: int
    dst: int
    proto: int
    ttl: int = 64
    total_length: int = 20
    ident: int = 0
    flags_frag: int = 0
    tos: int = 0
    ihl: int = 5
    csum: int = 0
    options: bytes = b""

    @property
    def header_len(self) -> int:
        return self.ihl * 4

    @property
    def df(self) -> bool:
        return bool(self.flags_frag & FLAG_DF)

    @property
    def is_fragment(self) -> bool:
        return bool(self.flags_frag & (FLAG_MF | FRAG_OFFSET_MASK))

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview, off: int = 0) -> IPv4:
        vihl, tos, tot, ident, ff, ttl, proto, csum, src, dst = IPV4_STRUCT.unpack_from(buf, off)
        ihl = vihl & 15
        options = bytes(buf[off + 20 : off + ihl * 4]) if ihl > 5 else b""
        return cls(src, dst, proto, ttl, tot, ident, ff, tos, ihl, csum, options)

    def pack(self, fill_checksum: bool = True) -> bytes:
        """Serialize; with ``fill_checksum`` the header checksum is computed (the ``csum`` field ignored)."""
        ihl = 5 + (len(self.options) + 3) // 4
        opts = self.options.ljust((ihl - 5) * 4, b"\0")
        head = IPV4_STRUCT.pack(0x40 | ihl, self.tos, self.total_length, self.ident, self.flags_frag,
                                self.ttl, self.proto, 0 if fill_checksum else self.csum, self.src, self.dst)
        if not fill_checksum:
            return head + opts
        raw = bytearray(head + opts)
        U16.pack_into(raw, OFF_CSUM, checksum(raw))
        return bytes(raw)
