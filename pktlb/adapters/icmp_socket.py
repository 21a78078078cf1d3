"""Raw ICMP sockets for health probes: send echo requests (plain or IP-in-IP), parse what comes back.

One raw ``AF_INET/SOCK_RAW/IPPROTO_ICMP`` socket serves every backend.  On Linux such a socket
receives a copy of *every* ICMP packet the host receives, including other programs' ping replies,
so the caller must match each reply by identifier, sequence, source address and payload nonce.
An ``ICMP_FILTER`` socket option keeps only echo replies and the two error types that can concern
a probe (destination unreachable, time exceeded), so echo requests aimed at this host never wake
the prober.  Raw sockets need CAP_NET_RAW (root).

The encapsulated probe (tunnel mode) is a whole IPv4-in-IPv4 packet written through an
``IPPROTO_RAW`` socket (which implies ``IP_HDRINCL``): outer LB -> backend, inner LB -> VIP.  The
backend's decapsulator hands the inner echo request to its kernel, which answers from the VIP
straight to the LB, as a plain echo reply.  So a dead decapsulator fails the probe even when plain
ICMP to the backend still works.

Parsing is defensive: every length is checked before it is read, and anything odd comes back as
``Malformed(reason)`` rather than an exception.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

from pktlb.core.checksum import checksum
from pktlb.core.packet.addr import int_to_ip, ip_to_int
from pktlb.core.packet.icmp import (
    DEST_UNREACH,
    ECHO_REPLY,
    ECHO_REQUEST,
    ICMP_LEN,
    ICMP_STRUCT,
    TIME_EXCEEDED,
    embedded_offsets,
)
from pktlb.core.packet.ipv4 import IPV4_MIN_LEN, PROTO_ICMP, PROTO_IPIP, IPv4

SOL_RAW = 255  # socket.SOL_RAW is missing from some Python builds
ICMP_FILTER = 1  # linux/icmp.h: a bit set for a type drops that type
PASSED_TYPES = (ECHO_REPLY, DEST_UNREACH, TIME_EXCEEDED)
PAYLOAD_MAGIC = b"pktlbHC1"
PAYLOAD_STRUCT = struct.Struct("!8sQ")  # magic, nonce
PAYLOAD_LEN = 32  # magic + nonce + padding: a small probe, like ping's 56 bytes but shorter
RECV_SIZE = 2048


@dataclass(frozen=True, slots=True)
class EchoReply:
    src: str
    dst: str
    ident: int
    seq: int
    ttl: int
    nonce: int | None  # None when the payload is not one of ours


@dataclass(frozen=True, slots=True)
class IcmpErrorReport:
    """An ICMP error quoting one of our echo requests (possibly inside an IP-in-IP header)."""

    reporter: str  # who sent the error (a router, the backend, or our own kernel after ARP failed)
    type: int
    code: int
    orig_dst: str  # the outermost destination of the quoted packet: the backend
    ident: int
    seq: int
    encapsulated: bool

    def describe(self) -> str:
        names = {0: "network unreachable", 1: "host unreachable", 2: "protocol unreachable",
                 3: "port unreachable", 4: "fragmentation needed", 13: "administratively prohibited"}
        what = names.get(self.code, f"code {self.code}") if self.type == DEST_UNREACH else "time exceeded"
        if self.type == DEST_UNREACH and self.code == 2 and self.encapsulated:
            what += ": no IP-in-IP decapsulator at the backend"
        return f"{what} (from {self.reporter})"


@dataclass(frozen=True, slots=True)
class IgnoredIcmp:
    """Well-formed ICMP that is not for a probe (an error about someone else's packet)."""

    type: int
    code: int


@dataclass(frozen=True, slots=True)
class Malformed:
    reason: str


ParsedIcmp = EchoReply | IcmpErrorReport | IgnoredIcmp | Malformed


def make_payload(nonce: int) -> bytes:
    return PAYLOAD_STRUCT.pack(PAYLOAD_MAGIC, nonce & 0xFFFFFFFFFFFFFFFF).ljust(PAYLOAD_LEN, b"\0")


def payload_nonce(payload: bytes | memoryview) -> int | None:
    if len(payload) < PAYLOAD_STRUCT.size:
        return None
    magic, nonce = PAYLOAD_STRUCT.unpack_from(payload)
    return nonce if magic == PAYLOAD_MAGIC else None


def build_echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP echo request (the ICMP part only) with its checksum filled."""
    head = ICMP_STRUCT.pack(ECHO_REQUEST, 0, 0, ident & 0xFFFF, seq & 0xFFFF)
    csum = checksum(head + payload)
    return ICMP_STRUCT.pack(ECHO_REQUEST, 0, csum, ident & 0xFFFF, seq & 0xFFFF) + payload


def build_ipip_echo(outer_src: str, outer_dst: str, inner_src: str, inner_dst: str, ident: int, seq: int,
                    payload: bytes, ip_id: int = 0) -> bytes:
    """A whole IPv4(proto 4) + IPv4(proto 1) + ICMP echo request, every checksum filled."""
    icmp = build_echo_request(ident, seq, payload)
    inner = IPv4(src=ip_to_int(inner_src), dst=ip_to_int(inner_dst), proto=PROTO_ICMP,
                 total_length=IPV4_MIN_LEN + len(icmp), ident=ip_id & 0xFFFF).pack() + icmp
    outer = IPv4(src=ip_to_int(outer_src), dst=ip_to_int(outer_dst), proto=PROTO_IPIP,
                 total_length=IPV4_MIN_LEN + len(inner), ident=ip_id & 0xFFFF).pack()
    return outer + inner


def _ip_header(buf: bytes, off: int, end: int) -> tuple[int, int, int, int, int] | None:
    """(header length, protocol, ttl, src, dst) of the IPv4 header at ``off``, or None if it is not one."""
    if end - off < IPV4_MIN_LEN:
        return None
    vihl = buf[off]
    ihl = (vihl & 15) * 4
    if vihl >> 4 != 4 or ihl < IPV4_MIN_LEN or end - off < ihl:
        return None
    return ihl, buf[off + 9], buf[off + 8], int.from_bytes(buf[off + 12:off + 16], "big"), \
        int.from_bytes(buf[off + 16:off + 20], "big")


def _quoted_echo(buf: bytes, icmp_off: int, end: int) -> tuple[int, int, int, bool] | Malformed | None:
    """From an ICMP error: (outer dst, ident, seq, encapsulated) of the quoted echo request, None if the
    quote is about another kind of packet, Malformed if it is cut short."""
    found = embedded_offsets(buf, icmp_off, end)
    if found is None:
        return Malformed("ICMP error with a truncated or invalid quoted header")
    inner_off, inner_ihl, proto = found
    orig_dst = int.from_bytes(buf[inner_off + 16:inner_off + 20], "big")
    l4 = inner_off + inner_ihl
    encapsulated = proto == PROTO_IPIP
    if encapsulated:
        header = _ip_header(buf, l4, end)
        if header is None or end - (l4 + header[0]) < ICMP_LEN:
            return None  # quote too short to reach our identifier: not attributable
        proto, l4 = header[1], l4 + header[0]
    if proto != PROTO_ICMP or end - l4 < ICMP_LEN or buf[l4] != ECHO_REQUEST:
        return None
    _, _, _, ident, seq = ICMP_STRUCT.unpack_from(buf, l4)
    return orig_dst, ident, seq, encapsulated


def parse_icmp_packet(packet: bytes) -> ParsedIcmp:
    """Parse what a raw ICMP socket returned (IPv4 header included).  Never raises."""
    buf = bytes(packet)
    header = _ip_header(buf, 0, len(buf))
    if header is None:
        return Malformed("not an IPv4 header")
    ihl, proto, ttl, src, dst = header
    total = int.from_bytes(buf[2:4], "big")
    if total < ihl + ICMP_LEN or total > len(buf):
        return Malformed(f"IPv4 total length {total} does not fit the {len(buf)} bytes received")
    if proto != PROTO_ICMP:
        return Malformed(f"IP protocol {proto}, not ICMP")
    if checksum(buf[ihl:total]) != 0:
        return Malformed("bad ICMP checksum")
    icmp_type, code, _, ident, seq = ICMP_STRUCT.unpack_from(buf, ihl)
    if icmp_type == ECHO_REPLY:
        nonce = payload_nonce(memoryview(buf)[ihl + ICMP_LEN:total])
        return EchoReply(int_to_ip(src), int_to_ip(dst), ident, seq, ttl, nonce)
    if icmp_type in (DEST_UNREACH, TIME_EXCEEDED):
        quoted = _quoted_echo(buf, ihl, total)
        if quoted is None or isinstance(quoted, Malformed):
            return quoted or IgnoredIcmp(icmp_type, code)
        orig_dst, q_ident, q_seq, encapsulated = quoted
        return IcmpErrorReport(int_to_ip(src), icmp_type, code, int_to_ip(orig_dst), q_ident, q_seq, encapsulated)
    return IgnoredIcmp(icmp_type, code)


class IcmpSocket:
    """The raw ICMP socket (plus, on demand, an IPPROTO_RAW socket for encapsulated probes)."""

    def __init__(self, *, rcvbuf: int = 1 << 20) -> None:
        try:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        except PermissionError as exc:
            raise PermissionError(exc.errno, "raw ICMP sockets need CAP_NET_RAW (run as root)") from None
        blocked = 0xFFFFFFFF
        for icmp_type in PASSED_TYPES:
            blocked &= ~(1 << icmp_type)
        self.sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("=I", blocked))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setblocking(False)
        self._raw: socket.socket | None = None

    def fileno(self) -> int:
        return self.sock.fileno()

    def send_echo(self, dst: str, ident: int, seq: int, payload: bytes) -> None:
        """Send one echo request; OSError (ENETUNREACH, EPERM ...) is the caller's to classify."""
        self.sock.sendto(build_echo_request(ident, seq, payload), (dst, 0))

    def send_encapsulated_echo(self, outer_src: str, outer_dst: str, inner_src: str, inner_dst: str,
                               ident: int, seq: int, payload: bytes) -> None:
        if self._raw is None:
            self._raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            self._raw.setblocking(False)
        packet = build_ipip_echo(outer_src, outer_dst, inner_src, inner_dst, ident, seq, payload, ip_id=seq)
        self._raw.sendto(packet, (outer_dst, 0))

    def receive(self, limit: int = 64) -> list[bytes]:
        """Up to ``limit`` queued packets, without blocking."""
        packets = []
        for _ in range(limit):
            try:
                packets.append(self.sock.recv(RECV_SIZE))
            except (BlockingIOError, InterruptedError):
                break
        return packets

    def close(self) -> None:
        self.sock.close()
        if self._raw is not None:
            self._raw.close()


def local_address_for(dst: str) -> str:
    """The source address this host's routing would use towards ``dst`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((dst, 9))
        return str(probe.getsockname()[0])


UNREACHABLE_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN})
