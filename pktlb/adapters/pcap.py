"""Capture files: reading pcap and pcapng (Wireshark's default) with scapy's reader, writing classic pcap by hand.

Reading is plumbing for the offline tools (``pktlb replay``, ``pktlb explain``, reports): scapy's
``RawPcapReader`` recognises both formats (it hands a pcapng file to ``RawPcapNgReader``) and
pktlb takes only the raw bytes and the timestamp of each Ethernet frame.  Writing stays plain
``struct`` with no scapy, so the engine's capture option can write on the packet path without
dissecting or importing scapy.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

MAGIC_US = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
_GLOBAL = struct.Struct("IHHiIII")
_RECORD = struct.Struct("IIII")


class PcapError(ValueError):
    pass


def read_pcap(path: str) -> Iterator[tuple[float, bytearray]]:
    """Yield (timestamp, frame) for every record of a pcap or pcapng file of Ethernet frames.

    PcapError for a file that is neither, or for another link type.  A record cut short at the end
    of the file (a capture still being written) ends the iteration."""
    from scapy.error import Scapy_Exception
    from scapy.utils import RawPcapReader

    try:
        reader = RawPcapReader(path)
    except (Scapy_Exception, EOFError) as exc:
        raise PcapError(f"{path}: not a classic pcap or pcapng file ({exc})") from None
    try:
        for data, meta in reader:
            timestamp, linktype, caplen = _record_facts(reader, meta, len(data))
            if linktype != LINKTYPE_ETHERNET:
                raise PcapError(f"{path}: link type {linktype}, pktlb reads Ethernet (1) captures")
            if len(data) < caplen:
                return
            yield timestamp, bytearray(data)
    except Scapy_Exception as exc:
        raise PcapError(f"{path}: unreadable capture ({exc})") from None
    finally:
        reader.close()


def _record_facts(reader: Any, meta: Any, length: int) -> tuple[float, int, int]:
    """(timestamp in seconds, link type, captured length) of one record, pcap or pcapng."""
    if hasattr(meta, "tsresol"):  # pcapng: a 64-bit count of tsresol units; the link type is per interface
        return ((meta.tshigh << 32) | meta.tslow) / meta.tsresol, meta.linktype, length
    return meta.sec + meta.usec * (1e-9 if reader.nano else 1e-6), reader.linktype, meta.caplen


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
