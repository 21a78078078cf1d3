"""The benchmark's traffic: a bounded UDP flood generator and a TCP-connect RTT probe.

Both run inside a lab namespace as ``python -m pktlb.reports.bench.benchgen flood|rtt ...`` (the bench
starts them with ``ip netns exec`` and ``taskset``) and print one JSON object.

* ``flood``: 64-byte UDP frames (60 bytes + the 4-byte FCS the wire would add) to VIP:port over
  ``--flows`` flows, each flow its own source address and port.  The frames are built once; the
  sender points a preallocated ``mmsghdr`` vector at them and calls ``sendmmsg`` in a loop, so no
  Python code runs per packet and one core sends several hundred thousand frames a second.
  Bounded by ``--packets`` and ``--seconds``; ``--rate`` paces it (frames per second).
* ``flood --syn``: 60-byte TCP SYNs instead, each its own new flow (source address i mod
  ``--sources``, source port first + i // sources): the new-flow rate, every frame a scheduling
  decision and a flow-table insert (and, in the kernel, a conntrack entry).
* ``rtt``: the time ``connect()`` takes (SYN out, SYN-ACK back) to a TCP port, ``--count`` times,
  ``--interval`` apart: a round trip through whatever sits on the path, at low load.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence

from pktlb.adapters.mmsg import MMSG_SIZE, IOVec, MMsgHdr, sendmmsg
from pktlb.core.checksum import checksum, pseudo_header_sum
from pktlb.core.packet.addr import int_to_ip, ip_to_int, mac_to_bytes
from pktlb.core.packet.frame import ETHERTYPE_IPV4

FRAME_BYTES = 60  # + 4-byte FCS = a 64-byte Ethernet frame
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20
MAX_VECTOR = 1024  # UIO_MAXIOV: the most messages one sendmmsg takes


def udp_frame(src_mac: bytes, dst_mac: bytes, src: int, dst: int, sport: int, dport: int,
              size: int = FRAME_BYTES, ttl: int = 64) -> bytes:
    """One Ethernet/IPv4/UDP frame of ``size`` bytes with correct IP and UDP checksums."""
    payload = bytes(size - 14 - 20 - 8)
    udp_len = 8 + len(payload)
    pseudo = pseudo_header_sum(src, dst, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    udp_sum = checksum(udp, pseudo) or 0xFFFF
    udp = udp[:6] + udp_sum.to_bytes(2, "big") + udp[8:]
    header = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + udp_len, 0, 0x4000, ttl, 17, 0, src, dst)
    header = header[:10] + checksum(header).to_bytes(2, "big") + header[12:]
    return dst_mac + src_mac + ETHERTYPE_IPV4 + header + udp


def syn_frame(src_mac: bytes, dst_mac: bytes, src: int, dst: int, sport: int, dport: int,
              size: int = FRAME_BYTES, ttl: int = 64) -> bytes:
    """One Ethernet/IPv4/TCP SYN frame, padded to ``size`` bytes, with correct IP and TCP checksums."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, sport * 7919, 0, 5 << 4, 0x02, 64240, 0, 0)
    tcp_sum = checksum(tcp, pseudo_header_sum(src, dst, 6, len(tcp)))
    tcp = tcp[:16] + tcp_sum.to_bytes(2, "big") + tcp[18:]
    header = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(tcp), 0, 0x4000, ttl, 6, 0, src, dst)
    header = header[:10] + checksum(header).to_bytes(2, "big") + header[12:]
    frame = dst_mac + src_mac + b"\x08\x00" + header + tcp
    return frame + bytes(size - len(frame))  # Ethernet padding, outside the IP packet


def syn_frames(src_mac: str, dst_mac: str, first_src: str, dst: str, dport: int, flows: int,
               first_sport: int = 1024, sources: int = 128) -> list[bytes]:
    """``flows`` SYNs, each a new flow: address first_src + (i mod sources), port first_sport + i // sources."""
    if first_sport + (flows - 1) // sources > 65535:
        raise ValueError(f"{flows} flows from {sources} sources run out of source ports")
    smac, dmac, base, target = mac_to_bytes(src_mac), mac_to_bytes(dst_mac), ip_to_int(first_src), ip_to_int(dst)
    return [syn_frame(smac, dmac, base + i % sources, target, first_sport + i // sources, dport) for i in range(flows)]


def flow_frames(src_mac: str, dst_mac: str, first_src: str, dst: str, dport: int, flows: int,
                first_sport: int = 10000, sources: int | None = None) -> list[bytes]:
    """``flows`` frames, flow i from address first_src + (i mod sources) and port first_sport + i."""
    smac, dmac, base, target = mac_to_bytes(src_mac), mac_to_bytes(dst_mac), ip_to_int(first_src), ip_to_int(dst)
    sources = sources or flows
    return [udp_frame(smac, dmac, base + i % sources, target, first_sport + i, dport) for i in range(flows)]


class FloodSender:
    """Sends prebuilt frames round-robin through one AF_PACKET socket, ``MAX_VECTOR`` per system call."""

    def __init__(self, ifname: str, frames: Sequence[bytes]) -> None:
        if not frames:
            raise ValueError("no frames to send")
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.sock.bind((ifname, 0))  # protocol 0: this socket receives nothing
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        except OSError:
            pass
        # One message per frame when there are more frames than one call takes (a divisor of
        # MAX_VECTOR otherwise, repeated): each call sends a window of at most MAX_VECTOR of them.
        self.length = max(MAX_VECTOR, len(frames))
        self._iov = (IOVec * self.length)()
        self._msgs = (MMsgHdr * self.length)()
        for i in range(self.length):
            self._msgs[i].hdr.iov, self._msgs[i].hdr.iovlen = ctypes.addressof(self._iov[i]), 1
        self.use(frames)
        self.errors: dict[str, int] = {}

    def use(self, frames: Sequence[bytes]) -> None:
        """Send these frames from now on (message i carries frame i mod len(frames)); as many as before."""
        if self.length % len(frames):
            raise ValueError(f"{len(frames)} frames do not fill {self.length} messages evenly")
        self._buffers = [ctypes.create_string_buffer(f, len(f)) for f in frames]
        for i in range(self.length):
            buf = self._buffers[i % len(frames)]
            self._iov[i].base, self._iov[i].len = ctypes.addressof(buf), len(buf)

    def close(self) -> None:
        self.sock.close()

    def run(self, packets: int, seconds: float, rate: float | None = None, burst: int = 64,
            rotate: tuple[float, Callable[[int], Sequence[bytes]]] | None = None) -> dict[str, float]:
        """Send ``packets`` frames or stop after ``seconds``; ``rate`` frames/s if given (paced in bursts).

        ``rotate`` = (every, frames_for): every ``every`` seconds switch to ``frames_for(round)``."""
        fd, msgs, sent = self.sock.fileno(), ctypes.addressof(self._msgs), 0
        vector = MAX_VECTOR if rate is None else max(1, min(burst, MAX_VECTOR))
        position, length = 0, self.length  # next message: message i carries frame i mod flows
        start = time.monotonic()
        deadline = start + seconds
        rounds = 0
        while sent < packets:
            now = time.monotonic()
            if now >= deadline:
                break
            if rotate is not None and now - start >= (rounds + 1) * rotate[0]:
                rounds += 1
                self.use(rotate[1](rounds))
            if rate is not None:
                due = start + sent / rate
                if due > now:
                    time.sleep(due - now)
            # Walk the messages round: their number is a multiple of the flow count, so every flow
            # gets its turn, whatever the burst size.
            count = min(vector, packets - sent, length - position)
            got = sendmmsg(fd, msgs + position * MMSG_SIZE, count, 0)
            if got < 0:
                err = ctypes.get_errno()
                name = errno.errorcode.get(err, str(err))
                self.errors[name] = self.errors.get(name, 0) + 1
                if err not in (errno.ENOBUFS, errno.EAGAIN, errno.EINTR):
                    raise OSError(err, f"sendmmsg: {name}")
                continue
            sent += got
            position = (position + got) % length
        return {"sent": sent, "seconds": time.monotonic() - start, "rounds": rounds + 1}


def tcp_connect_rtts(host: str, port: int, count: int, interval: float, timeout: float = 1.0) -> dict[str, object]:
    """Microseconds each of ``count`` TCP connects took (failures counted, not timed)."""
    samples: list[float] = []
    failures = 0
    next_at = time.monotonic()
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
        try:
            t0 = time.perf_counter_ns()
            sock.connect((host, port))
            samples.append((time.perf_counter_ns() - t0) / 1000)
        except OSError:
            failures += 1
        finally:
            sock.close()
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return {"samples_us": samples, "failures": failures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pktlb.reports.bench.benchgen", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    flood = sub.add_parser("flood", help="send a bounded UDP flood (needs root: AF_PACKET)")
    flood.add_argument("--ifname", required=True)
    flood.add_argument("--src-mac", required=True)
    flood.add_argument("--dst-mac", required=True)
    flood.add_argument("--src", required=True, help="first source address (flow i uses src + i mod --sources)")
    flood.add_argument("--sources", type=int, default=None, help="distinct source addresses (default: --flows)")
    flood.add_argument("--dst", required=True)
    flood.add_argument("--dport", type=int, required=True)
    flood.add_argument("--flows", type=int, default=64)
    flood.add_argument("--first-sport", type=int, default=10000)
    flood.add_argument("--packets", type=int, required=True)
    flood.add_argument("--seconds", type=float, required=True)
    flood.add_argument("--rate", type=float, default=None)
    flood.add_argument("--rotate", type=float, default=None,
                       help="every ROTATE seconds, new flows (source ports move on by --flows)")
    flood.add_argument("--syn", action="store_true", help="TCP SYNs, each a new flow (see syn_frames)")
    rtt = sub.add_parser("rtt", help="time TCP connects to host:port")
    rtt.add_argument("--host", required=True)
    rtt.add_argument("--port", type=int, required=True)
    rtt.add_argument("--count", type=int, default=200)
    rtt.add_argument("--interval", type=float, default=0.01)
    args = parser.parse_args(argv)
    if args.command == "flood":
        if args.flows < 1 or (MAX_VECTOR % args.flows and args.flows % MAX_VECTOR):
            parser.error(f"--flows must divide {MAX_VECTOR} or be a multiple of it")
        def frames_for(round_: int) -> list[bytes]:
            if args.syn:
                return syn_frames(args.src_mac, args.dst_mac, args.src, args.dst, args.dport, args.flows,
                                  args.first_sport, args.sources or 128)
            first = 1024 + (args.first_sport - 1024 + round_ * args.flows) % (65536 - 1024 - args.flows)
            return flow_frames(args.src_mac, args.dst_mac, args.src, args.dst, args.dport, args.flows, first,
                               args.sources)

        sender = FloodSender(args.ifname, frames_for(0))
        try:
            rotate = (args.rotate, frames_for) if args.rotate else None
            result: dict[str, object] = dict(sender.run(args.packets, args.seconds, args.rate, rotate=rotate))
        finally:
            sender.close()
        result.update(errors=sender.errors, flows=args.flows, frame_bytes=FRAME_BYTES,
                      first_src=int_to_ip(ip_to_int(args.src)))
    else:
        result = tcp_connect_rtts(args.host, args.port, args.count, args.interval)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
