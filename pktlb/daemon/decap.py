"""`pktlb decap`: a user-space IP-in-IP decapsulator for kernels without the ``ipip`` module.

A raw socket for IP protocol 4 receives every IP-in-IP packet that reaches this namespace (the
kernel then sends no ICMP protocol-unreachable, since a raw socket took it).  Each outer packet
whose destination is this backend's own address carries an inner IPv4 packet that is written,
unchanged, into a TUN device (IFF_TUN | IFF_NO_PI); the kernel then delivers it to the VIP on
``lo`` as if it had arrived on that device.  Nothing is recomputed: the sender must send inner
packets with complete checksums (a raw socket and a TUN hop cannot carry "checksum pending").

Anything else is dropped and counted by reason.  It runs on the daemon's ``Reactor``: the raw
socket is a reader, the stats file a timer (once a second, and on exit), SIGTERM/SIGINT flags that
end the loop.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

from pktlb.core.packet.addr import ip_to_int
from pktlb.daemon.reactor import Reactor

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IPPROTO_IPIP = 4
STATS_INTERVAL = 1.0  # seconds between two writes of the stats file
BATCH = 64  # packets drained per wake-up before counters and the stop flag are looked at again
MAX_PACKET = 65535

log = logging.getLogger("pktlb.decap")


@dataclass
class DecapStats:
    received: int = 0
    delivered: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def as_dict(self) -> dict[str, object]:
        return {"received": self.received, "delivered": self.delivered, "dropped": dict(self.dropped)}


def inner_packet(packet: bytes | bytearray | memoryview, own_address: int) -> tuple[int, int, str | None]:
    """Where the inner IPv4 packet lies in an outer one: (start, end, None), or (0, 0, drop reason)."""
    if len(packet) < 20:
        return 0, 0, "short_outer"
    version_ihl = packet[0]
    if version_ihl >> 4 != 4:
        return 0, 0, "outer_not_ipv4"
    ihl = (version_ihl & 0x0F) * 4
    outer_len = struct.unpack_from("!H", packet, 2)[0]
    if ihl < 20 or outer_len > len(packet) or outer_len < ihl + 20:
        return 0, 0, "short_outer"
    if packet[9] != IPPROTO_IPIP:
        return 0, 0, "not_ipip"
    if struct.unpack_from("!I", packet, 16)[0] != own_address:
        return 0, 0, "not_for_us"
    if packet[ihl] >> 4 != 4:
        return 0, 0, "inner_not_ipv4"
    inner_len = struct.unpack_from("!H", packet, ihl + 2)[0]
    if inner_len < 20 or ihl + inner_len > outer_len:
        return 0, 0, "inner_truncated"
    return ihl, ihl + inner_len, None


def open_tun(name: str) -> int:
    """Attach to (or create) the TUN device ``name``; the lab creates it beforehand with an address."""
    if len(name.encode()) > 15:
        raise ValueError(f"TUN device name {name!r} is longer than 15 characters")
    existed = Path(f"/sys/class/net/{name}").exists()
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    if not existed:
        log.warning("created TUN device %s: give it an address, set it up and rp_filter=0 on it", name)
    return fd


class Decapsulator:
    def __init__(self, address: str, tun_name: str, stats_file: str | None = None):
        self.own = ip_to_int(address)
        self.address, self.tun_name = address, tun_name
        self.stats_file = Path(stats_file) if stats_file else None
        self.stats = DecapStats()
        self.stop = False

    def write_stats(self) -> None:
        if self.stats_file is None:
            return
        data = {**self.stats.as_dict(), "address": self.address, "tun": self.tun_name, "pid": os.getpid()}
        tmp = self.stats_file.with_name(f".{self.stats_file.name}.tmp")
        tmp.write_text(json.dumps(data) + "\n")
        os.replace(tmp, self.stats_file)

    def run(self, *, ready_file: str | None = None, duration: float | None = None,
            max_packets: int | None = None) -> DecapStats:
        reactor = Reactor()
        for sig in (signal.SIGTERM, signal.SIGINT):
            reactor.flag_on_signal(sig, "stop")
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        raw.setblocking(False)
        tun = open_tun(self.tun_name)
        if ready_file:
            Path(ready_file).parent.mkdir(parents=True, exist_ok=True)
            Path(ready_file).write_text(f"{os.getpid()}\n")
        view = memoryview(bytearray(MAX_PACKET))

        def finish() -> None:
            self.stop = True

        def on_flags() -> None:
            if reactor.take_flag("stop"):
                finish()

        def done() -> bool:
            return self.stop or (max_packets is not None and self.stats.received >= max_packets)

        reactor.add_reader(raw, lambda: self._drain(raw, tun, view))
        reactor.every(STATS_INTERVAL, self.write_stats)
        if duration:
            reactor.call_later(duration, finish)
        self.write_stats()
        try:
            reactor.run(on_flags, until=done)
        finally:
            reactor.close()
            raw.close()
            os.close(tun)
            self.write_stats()
        return self.stats

    def _drain(self, raw: socket.socket, tun: int, view: memoryview) -> None:
        stats, own = self.stats, self.own
        for _ in range(BATCH):
            try:
                n = raw.recv_into(view)
            except BlockingIOError:
                return
            stats.received += 1
            start, end, reason = inner_packet(view[:n], own)
            if reason:
                stats.drop(reason)
                continue
            try:
                os.write(tun, view[start:end])
                stats.delivered += 1
            except OSError as exc:
                stats.drop(f"tun_write_{exc.errno}")
