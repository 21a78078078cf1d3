"""The virtio_net_hdr that precedes each frame on a PACKET_VNET_HDR packet socket.

NEEDS_CSUM marks a CHECKSUM_PARTIAL frame (the L4 field holds only the pseudo-header sum), gso_type and
gso_size a GSO super-frame of up to 64 KiB.  Giving such a header back on send makes the kernel finish
the checksum and re-segment, in software if the egress device cannot.  Chosen over PACKET_AUXDATA
because it also carries GSO, and the header travels in the data buffer, which suits recvmmsg/sendmmsg
(no control messages to parse).  ``RxFrame`` is a received frame with its header.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from pktlb.core.packet.frame import IP, IP_PROTO
from pktlb.core.packet.ipv4 import PROTO_TCP, PROTO_UDP
from pktlb.core.packet.l4 import TCP_OFF_CSUM, UDP_OFF_CSUM

VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4 = 0, 1, 3, 4, 5
VNET = struct.Struct("=BBHHHH")  # virtio_net_hdr, host byte order (legacy virtio on a little-endian host)
VNET_LEN = VNET.size
NO_VNET = bytes(VNET_LEN)  # the packed header of an ordinary, finished frame
_CSUM_OFFSET = {PROTO_TCP: TCP_OFF_CSUM, PROTO_UDP: UDP_OFF_CSUM}  # where the checksum sits inside the TCP / UDP header


class VnetHeader(NamedTuple):
    """The virtio_net_hdr that precedes each frame on a PACKET_VNET_HDR socket."""

    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0  # from the start of the Ethernet header
    csum_offset: int = 0  # from csum_start to the checksum field

    @property
    def partial(self) -> bool:
        return bool(self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)


NO_OFFLOAD = VnetHeader()


def partial_header(frame: bytes | bytearray | memoryview, gso_type: int = GSO_NONE, gso_size: int = 0) -> VnetHeader:
    """NEEDS_CSUM metadata for an untagged IPv4 TCP/UDP frame whose checksum field holds the partial sum."""
    l4 = IP + ((frame[IP] & 0x0F) << 2)
    return VnetHeader(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, 0, gso_size, l4, _CSUM_OFFSET.get(frame[IP_PROTO], TCP_OFF_CSUM))


def offload_header(frame: bytes | bytearray | memoryview, partial: bool, csum_start: int, csum_offset: int,
                   gso_type: int, gso_size: int, hdr_len: int) -> VnetHeader:
    """The header for sending ``frame``: ``partial`` without a ``csum_start`` finds start and offset in the frame."""
    if partial and not csum_start:
        return partial_header(frame, gso_type, gso_size)._replace(hdr_len=hdr_len)
    flags = VIRTIO_NET_HDR_F_NEEDS_CSUM if partial else 0
    return VnetHeader(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


class RxFrame(NamedTuple):
    """A received frame and its virtio header (``NO_OFFLOAD`` for an ordinary, finished frame)."""

    data: bytearray | memoryview
    vnet: VnetHeader = NO_OFFLOAD

    @property
    def partial(self) -> bool:
        return bool(self.vnet.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)

    @property
    def csum_start(self) -> int:
        return self.vnet.csum_start

    @property
    def csum_offset(self) -> int:
        return self.vnet.csum_offset

    @property
    def gso_type(self) -> int:
        return self.vnet.gso_type

    @property
    def gso_size(self) -> int:
        return self.vnet.gso_size
