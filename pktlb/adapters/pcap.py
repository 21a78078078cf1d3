"""Classic pcap files (the format Wireshark and tcpdump read): a streaming reader and writer.

Plain ``struct`` over the file, microsecond or nanosecond timestamps, Ethernet link type; no
scapy, so the engine's capture option can write on the packet path without dissecting.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
_GLOBAL = struct.Struct("IHHiIII")
_RECORD = struct.Struct("IIII")


class PcapError(ValueError):
    pass


def read_pcap(path: str) -> Iterator[tuple[float, bytearray]]:
    """Yield (timestamp, frame) for every record; PcapError for a file that is not classic pcap."""
    with open(path, "rb") as fh:
        head = fh.read(_GLOBAL.size)
        if len(head) < _GLOBAL.size:
            raise PcapError(f"{path}: too short for a pcap header")
        for order in ("<", ">"):
            magic = struct.unpack(order + "I", head[:4])[0]
            if magic in (MAGIC_US, MAGIC_NS):
                break
        else:
            raise PcapError(f"{path}: not a classic pcap file (pcapng? convert with editcap -F pcap)")
        scale = 1e-9 if magic == MAGIC_NS else 1e-6
        linktype = struct.unpack(order + "I", head[20:24])[0]
        if linktype != LINKTYPE_ETHERNET:
            raise PcapError(f"{path}: link type {linktype}, pktlb reads Ethernet (1) captures")
        record = struct.Struct(order + "IIII")
        while True:
            rec = fh.read(record.size)
            if len(rec) < record.size:
                return
            sec, frac, caplen, _ = record.unpack(rec)
            data = fh.read(caplen)
            if len(data) < caplen:
                return
            yield sec + frac * scale, bytearray(data)


class PcapWriter:
    """Append frames to a pcap file; ``with PcapWriter(path) as w: w.write(frame, ts)``."""

    def __init__(self, path: str, snaplen: int = 262144) -> None:
        self.path = path
        self.fh: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.fh.write(_GLOBAL.pack(MAGIC_US, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))
        self.count = 0

    def write(self, frame: bytes | bytearray | memoryview, ts: float) -> None:
        sec = int(ts)
        self.fh.write(_RECORD.pack(sec, int((ts - sec) * 1e6), len(frame), len(frame)))
        self.fh.write(frame)
        self.count += 1

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
