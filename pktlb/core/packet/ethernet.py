"""Ethernet II header.

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                 destination MAC (6 octets)                    |
    +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                               |                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+        source MAC (6 octets)  +
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |          EtherType            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ETH_STRUCT = struct.Struct("!6s6sH")
ETH_LEN = ETH_STRUCT.size  # 14
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_IPV6 = 0x86DD
ETHERTYPE_OFF = 12  # the EtherType after both MAC addresses
VLAN_TAG_LEN = 4  # an 802.1Q tag left in the data shifts everything after the MACs by 4 bytes
ETHERTYPE = struct.Struct("!H")


@dataclass(frozen=True)
class Ethernet:
    dst: bytes
    src: bytes
    ethertype: int

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview, off: int = 0) -> Ethernet:
        return cls(*ETH_STRUCT.unpack_from(buf, off))

    def pack(self) -> bytes:
        return ETH_STRUCT.pack(self.dst, self.src, self.ethertype)
