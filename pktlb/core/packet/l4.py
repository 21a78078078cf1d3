"""TCP and UDP headers (RFC 9293, RFC 768).

    TCP                                          UDP
    +--------+--------+--------+--------+        +--------+--------+--------+--------+
    |   source port   |    dest port    |        |   source port   |    dest port    |
    +--------+--------+--------+--------+        +--------+--------+--------+--------+
    |        sequence number            |        |     length      |    checksum     |
    +--------+--------+--------+--------+        +--------+--------+--------+--------+
    |        acknowledgment number      |
    +--------+--------+--------+--------+
    |off|rsv| flags   |     window      |
    +--------+--------+--------+--------+
    |    checksum     |  urgent pointer |
    +--------+--------+--------+--------+
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PORTS = struct.Struct("!HH")
TCP_STRUCT = struct.Struct("!HHIIBBHHH")
TCP_MIN_LEN = TCP_STRUCT.size  # 20
TCP_OFF_DATA = 12  # data offset (header length in words) in the high 4 bits
TCP_OFF_FLAGS = 13
TCP_OFF_CSUM = 16
UDP_STRUCT = struct.Struct("!HHHH")
UDP_LEN = UDP_STRUCT.size  # 8
UDP_OFF_LENGTH = 4
UDP_OFF_CSUM = 6
UDP_TAIL = struct.Struct("!HH")  # length and checksum, read together from UDP_OFF_LENGTH

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
FLAG_LETTERS = {"F": FIN, "S": SYN, "R": RST, "P": PSH, "A": ACK, "U": URG}


def flags_text(flags: int) -> str:
    return "".join(letter for letter, bit in FLAG_LETTERS.items() if flags & bit) or "."


def parse_flags(text: str) -> int:
    value = 0
    for ch in text.upper():
        if ch not in FLAG_LETTERS:
            raise ValueError(f"unknown TCP flag {ch!r} in {text!r} (expected letters of FSRPAU)")
        value |= FLAG_LETTERS[ch]
    return value


@dataclass(frozen=True)
class TCP:
    sport: int
    dport: int
    seq: int = 0
    ack: int = 0
    flags: int = SYN
    window: int = 65535
    csum: int = 0
    urg: int = 0
    data_offset: int = 5

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview, off: int = 0) -> TCP:
        sport, dport, seq, ack, doff, flags, win, csum, urg = TCP_STRUCT.unpack_from(buf, off)
        return cls(sport, dport, seq, ack, flags, win, csum, urg, doff >> 4)


@dataclass(frozen=True)
class UDP:
    sport: int
    dport: int
    length: int = 8
    csum: int = 0

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview, off: int = 0) -> UDP:
        return cls(*UDP_STRUCT.unpack_from(buf, off))
