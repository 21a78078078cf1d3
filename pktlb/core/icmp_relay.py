"""ICMP for VIPs: echo replies, and ICMP errors relayed by the flow they quote (as Katran does).

An ICMP error about a flow carries the offending packet's IP header and first 8 L4 bytes.  For a
reply packet VIP:vport -> client:cport that failed somewhere outside, the error comes to the VIP;
the quoted header, reversed, is the client's flow key, which names the backend that must hear it
(fragmentation needed lowers that backend's path MTU).  For NAT modes the LB also rewrites the
quoted header the way it rewrote the packet, or the backend's kernel could not match it to a socket.
ICMP is not the hot path, so checksums here are recomputed in full.
"""

from __future__ import annotations

from pktlb.core.checksum import checksum
from pktlb.core.packet.icmp import ECHO_REPLY, ECHO_REQUEST, ERROR_TYPES, ICMP_LEN, embedded_offsets
from pktlb.core.packet.ipv4 import U16

_ADDR = U16  # alias for readability below


def set_addr(frame: bytearray, off: int, value: int) -> None:
    frame[off:off + 4] = value.to_bytes(4, "big")


def set_port(frame: bytearray, off: int, value: int) -> None:
    frame[off:off + 2] = value.to_bytes(2, "big")


def refresh_ip_checksum(frame: bytearray, ip: int) -> None:
    ihl = (frame[ip] & 15) * 4
    _ADDR.pack_into(frame, ip + 10, 0)
    _ADDR.pack_into(frame, ip + 10, checksum(frame[ip:ip + ihl]))


def refresh_icmp_checksum(frame: bytearray, icmp: int, end: int) -> None:
    _ADDR.pack_into(frame, icmp + 2, 0)
    _ADDR.pack_into(frame, icmp + 2, checksum(frame[icmp:end]))


def echo_reply(frame: bytearray, ip: int, ihl: int, end: int, lb_mac: bytes) -> bytearray:
    """Turn an echo request to a VIP into the reply, in place: swap addresses and MACs, type 0, TTL 64."""
    icmp = ip + ihl
    src = frame[ip + 12:ip + 16]
    frame[ip + 12:ip + 16] = frame[ip + 16:ip + 20]
    frame[ip + 16:ip + 20] = src
    frame[ip + 8] = 64
    frame[0:6], frame[6:12] = frame[6:12], lb_mac
    frame[icmp] = ECHO_REPLY
    refresh_icmp_checksum(frame, icmp, end)
    refresh_ip_checksum(frame, ip)
    return frame


def quoted_flow(frame: bytearray, icmp: int, end: int) -> tuple[int, int, int, int, int, int] | None:
    """(inner IP offset, proto, src, dst, sport, dport) of the header an ICMP error quotes, or None."""
    found = embedded_offsets(frame, icmp, end)
    if found is None:
        return None
    inner, ihl, proto = found
    src = int.from_bytes(frame[inner + 12:inner + 16], "big")
    dst = int.from_bytes(frame[inner + 16:inner + 20], "big")
    l4 = inner + ihl
    sport = (frame[l4] << 8) | frame[l4 + 1]
    dport = (frame[l4 + 2] << 8) | frame[l4 + 3]
    return inner, proto, src, dst, sport, dport


def is_error(frame: bytearray, icmp: int) -> bool:
    return frame[icmp] in ERROR_TYPES


def is_echo_request(frame: bytearray, icmp: int, end: int) -> bool:
    return frame[icmp] == ECHO_REQUEST and end - icmp >= ICMP_LEN


def rewrite_error(frame: bytearray, ip: int, end: int, *, outer_src: int | None = None,
                  outer_dst: int | None = None, inner_src: tuple[int, int] | None = None,
                  inner_dst: tuple[int, int] | None = None, ttl_dec: bool = True) -> bytearray:
    """Rewrite an ICMP error's outer addresses and its quoted (address, port) pairs; fix all checksums."""
    ihl = (frame[ip] & 15) * 4
    icmp = ip + ihl
    inner = icmp + ICMP_LEN
    inner_l4 = inner + (frame[inner] & 15) * 4
    if outer_src is not None:
        set_addr(frame, ip + 12, outer_src)
    if outer_dst is not None:
        set_addr(frame, ip + 16, outer_dst)
    if inner_src is not None:
        set_addr(frame, inner + 12, inner_src[0])
        set_port(frame, inner_l4, inner_src[1])
    if inner_dst is not None:
        set_addr(frame, inner + 16, inner_dst[0])
        set_port(frame, inner_l4 + 2, inner_dst[1])
    if ttl_dec:
        frame[ip + 8] -= 1
    refresh_ip_checksum(frame, inner)
    refresh_icmp_checksum(frame, icmp, end)
    refresh_ip_checksum(frame, ip)
    return frame
