"""A port's frames in batches: one recvmmsg or sendmmsg moves up to ``count`` frames per system call.

``MsgBatch`` preallocates mmsghdr[count] (``pktlb.adapters.mmsg``), each message with two iovecs: a
virtio header slot and a frame slot.  The kernel reads and writes plain bytearrays through their
addresses; Python reads the per-message results through typed memoryviews, far cheaper than ctypes
attributes per frame.  ``PortCounters`` is what a port counts, on this path and on the one-frame one.
"""

from __future__ import annotations

import ctypes
import errno
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pktlb.adapters.mmsg import IOVEC_SIZE, MMSG_SIZE, IOVec, MMsgHdr, MsgHdr, recvmmsg, sendmmsg
from pktlb.adapters.packet_socket import PACKET_OUTGOING
from pktlb.adapters.vnet import (
    GSO_NONE,
    NO_OFFLOAD,
    NO_VNET,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VNET,
    VNET_LEN,
    RxFrame,
    VnetHeader,
)

MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
_MM_U32 = MMSG_SIZE // 4  # the same offsets counted in 32-bit words
_FLAGS_U32 = MsgHdr.flags.offset // 4
_NAMELEN_U32 = MsgHdr.namelen.offset // 4
_LEN_U32 = MMsgHdr.len.offset // 4
_IOV_N = IOVEC_SIZE // ctypes.sizeof(ctypes.c_size_t)  # size_t words per iovec
_SLL_LEN = 20  # sizeof(struct sockaddr_ll)


@dataclass
class PortCounters:
    rx: int = 0
    rx_bytes: int = 0
    rx_partial: int = 0
    rx_gso: int = 0
    rx_truncated: int = 0  # frames that did not fit the receive slot: counted here, never passed on cut
    rx_outgoing: int = 0  # our own frames dropped by the sll_pkttype fallback
    kernel_drops: int = 0  # socket queue overflows (PACKET_STATISTICS), updated by kernel_stats()
    tx: int = 0
    tx_bytes: int = 0
    tx_errors: Counter[str] = field(default_factory=Counter)  # errno name -> count

    def count_offload(self, vnet: VnetHeader) -> VnetHeader:
        """Count a received frame's offloads (a partial checksum, a GSO super-frame); the header back."""
        if vnet.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            self.rx_partial += 1
        if vnet.gso_type != GSO_NONE:
            self.rx_gso += 1
        return vnet


class MsgBatch:
    """Preallocated mmsghdr[n], each with two iovecs: a virtio header slot and a frame slot."""

    def __init__(self, count: int, slot_bytes: int, with_names: bool) -> None:
        self.count, self.slot_bytes = count, slot_bytes
        self.vnet = bytearray(count * VNET_LEN)
        self.slots = bytearray(count * slot_bytes)
        self.names = bytearray(count * _SLL_LEN)
        self.iov = bytearray(2 * count * IOVEC_SIZE)
        self.msgs = bytearray(count * MMSG_SIZE)
        self.vnet_view, self.slots_view = memoryview(self.vnet), memoryview(self.slots)
        self.msg_u32 = memoryview(self.msgs).cast("I")  # [i * _MM_U32 + _FLAGS_U32] flags, [.. + _LEN_U32] length
        # [2 * _IOV_N * i + _IOV_N + 1]: frame iovec length
        self.iov_size_t = memoryview(self.iov).cast("N")  # type: ignore[call-overload]  # typeshed lists no "N" (size_t)
        self.vnet_dirty = [False] * count  # send side: slot holds a non-zero virtio header
        self._exports = [(ctypes.c_char * len(b)).from_buffer(b) for b in
                         (self.vnet, self.slots, self.names, self.iov, self.msgs)]
        vnet_base, slot_base, name_base, iov_base, self.base = (ctypes.addressof(e) for e in self._exports)
        iovecs = (IOVec * (2 * count)).from_buffer(self.iov)
        msgs = (MMsgHdr * count).from_buffer(self.msgs)
        for i in range(count):
            iovecs[2 * i].base, iovecs[2 * i].len = vnet_base + i * VNET_LEN, VNET_LEN
            iovecs[2 * i + 1].base, iovecs[2 * i + 1].len = slot_base + i * slot_bytes, slot_bytes
            msgs[i].hdr.iov, msgs[i].hdr.iovlen = iov_base + 2 * i * IOVEC_SIZE, 2
            if with_names:
                msgs[i].hdr.name, msgs[i].hdr.namelen = name_base + i * _SLL_LEN, _SLL_LEN

    def reset_names(self, count: int) -> None:
        for i in range(count):
            self.msg_u32[i * _MM_U32 + _NAMELEN_U32] = _SLL_LEN  # the kernel overwrites it per call

    def pkttype(self, i: int) -> int:
        return self.names[i * _SLL_LEN + 10]  # sockaddr_ll.sll_pkttype

    def receive(self, fd: int, limit: int, counters: PortCounters, *, zero_copy: bool, check_pkttype: bool,
                ifname: str) -> list[RxFrame]:
        """Up to ``limit`` (at most ``count``) queued frames in one recvmmsg; [] if none (never blocks).

        A frame cut by the slot is counted in ``rx_truncated``, never passed on; with ``check_pkttype``
        our own outgoing frames are counted in ``rx_outgoing`` and skipped.
        """
        if check_pkttype:
            self.reset_names(limit)
        got = recvmmsg(fd, self.base, limit, MSG_DONTWAIT, None)
        if got <= 0:
            err = ctypes.get_errno()
            if got < 0 and err not in (errno.EAGAIN, errno.EINTR):
                raise OSError(err, f"recvmmsg on {ifname}: {errno.errorcode.get(err, err)}")
            return []
        frames: list[RxFrame] = []
        append, new_frame, msg_u32, vnet, slots = frames.append, tuple.__new__, self.msg_u32, self.vnet, self.slots_view
        slot_bytes, count_offload, rx_bytes = self.slot_bytes, counters.count_offload, 0
        for i in range(got):
            at = i * _MM_U32
            if msg_u32[at + _FLAGS_U32] & MSG_TRUNC:
                counters.rx_truncated += 1
                continue
            if check_pkttype and self.pkttype(i) == PACKET_OUTGOING:
                counters.rx_outgoing += 1
                continue
            length = msg_u32[at + _LEN_U32] - VNET_LEN
            start = i * slot_bytes
            data = slots[start:start + length] if zero_copy else bytearray(slots[start:start + length])
            rx_bytes += length
            at = i * VNET_LEN
            if vnet[at] or vnet[at + 1]:
                append(new_frame(RxFrame, (data, count_offload(VnetHeader._make(VNET.unpack_from(vnet, at))))))
            else:
                append(new_frame(RxFrame, (data, NO_OFFLOAD)))
        counters.rx += len(frames)
        counters.rx_bytes += rx_bytes
        return frames

    def send(self, fd: int, frames: Sequence[bytes | bytearray | memoryview], vnets: Sequence[VnetHeader] | None,
             counters: PortCounters) -> int:
        """Send up to ``count`` frames (each with ``vnets[i]``, default none) with sendmmsg; how many left.

        A frame the kernel refuses is counted under its errno and skipped; the rest still go.
        """
        slot_bytes, slots, vnet_view, iov_lens, dirty = self.slot_bytes, self.slots_view, self.vnet_view, self.iov_size_t, self.vnet_dirty
        tx_bytes = 0
        for i, frame in enumerate(frames):
            length = len(frame)
            if length > slot_bytes:
                raise ValueError(f"frame of {length} bytes exceeds the {slot_bytes}-byte send slot")
            start = i * slot_bytes
            slots[start:start + length] = frame
            iov_lens[(2 * i + 1) * _IOV_N + 1] = length
            vnet = NO_OFFLOAD if vnets is None else vnets[i]
            if vnet is not NO_OFFLOAD:
                vnet_view[i * VNET_LEN:(i + 1) * VNET_LEN] = VNET.pack(*vnet)
                dirty[i] = True
            elif dirty[i]:
                vnet_view[i * VNET_LEN:(i + 1) * VNET_LEN] = NO_VNET
                dirty[i] = False
            tx_bytes += length
        count, done, ok = len(frames), 0, 0
        while done < count:
            result = sendmmsg(fd, self.base + done * MMSG_SIZE, count - done, 0)
            if result < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                counters.tx_errors[errno.errorcode.get(err, str(err))] += 1
                tx_bytes -= len(frames[done])
                done += 1  # skip the frame the kernel refused; sendmmsg stops at the first failure
                continue
            done += result
            ok += result
        counters.tx += ok
        counters.tx_bytes += tx_bytes
        return ok
