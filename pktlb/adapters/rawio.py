"""Raw Ethernet frame I/O on one interface: an AF_PACKET socket with a kernel filter and virtio headers.

``RawPort`` is what the daemon reads frames from and writes the engine's output to:

* bound to ETH_P_ALL, so it sees frames before a netdev-ingress nftables guard drops them;
* the classic-BPF filter (``pktlb.adapters.bpf``) is attached before the socket is bound, so no
  unfiltered frame is ever queued (a packet socket created with protocol 0 receives nothing until bind);
* PACKET_IGNORE_OUTGOING: frames this host sends are never read back (without it: the filter's
  packet-type test, and a check of sll_pkttype here);
* PACKET_VNET_HDR: each frame comes with a virtio_net_hdr.  NEEDS_CSUM marks a CHECKSUM_PARTIAL frame
  (the L4 field holds only the pseudo-header sum), gso_type/gso_size a GSO super-frame of up to 64 KiB.
  Giving such a header back on send makes the kernel finish the checksum and re-segment, in software
  if the egress device cannot.  Chosen over PACKET_AUXDATA because it also carries GSO, and the header
  travels in the data buffer, which suits recvmmsg/sendmmsg (no control messages to parse);
* a frame longer than the receive slot is never passed on cut: it is counted in ``rx_truncated``;
* recvmmsg/sendmmsg through ctypes (``pktlb.adapters.mmsg``) move a batch per system call; ``recv``/``send``
  are the simple path;
* ``fanout_group`` joins a PACKET_FANOUT group (hash by default) so ``--workers N`` share the load.

Received data (``RxFrame.data``) is a fresh bytearray the caller owns (the engine trims and rewrites
it), copied out of a preallocated buffer; with ``zero_copy=True`` it is a memoryview into that buffer,
rewritable in place but valid only until the next ``recv``/``recv_batch`` on the port (the engine's
``del frame[end:]`` of Ethernet padding needs the bytearray).  A port is used by one thread.

Feeding the engine (nat/fullnat/dsr keep the header layout, so the received header still fits):

    for rx in port.recv_batch():
        out, decision = process(rx.data, snap, flows, now, partial=rx.partial)
        vnets = [rx.vnet if decision.partial_out else NO_OFFLOAD] * len(out)
        egress.send_batch(out, vnets)
"""

from __future__ import annotations

import ctypes
import errno
import select
import socket
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from pktlb.adapters.ifinfo import InterfaceMissing
from pktlb.adapters.mmsg import IOVEC_SIZE, MMSG_SIZE, IOVec, MMsgHdr, MsgHdr, recvmmsg, sendmmsg
from pktlb.core.packet.frame import IP, IP_PROTO
from pktlb.core.packet.ipv4 import PROTO_TCP, PROTO_UDP
from pktlb.core.packet.l4 import TCP_OFF_CSUM, UDP_OFF_CSUM

SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_VNET_HDR = 15
PACKET_FANOUT = 18
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
SO_ATTACH_FILTER = 26
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800  # bound to this, a socket sees a frame after tc ingress (and the netdev hook), not before
PACKET_OUTGOING = 4
MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
FANOUT_MODES = {"hash": 0, "lb": 1, "cpu": 2, "rollover": 3, "rnd": 4, "qm": 5, "cbpf": 6}
PACKET_FANOUT_DATA = 22  # the program of a "cbpf" group (see pktlb.adapters.fanout)
PACKET_FANOUT_FLAG_IGNORE_OUTGOING = 0x4000
PACKET_FANOUT_FLAG_DEFRAG = 0x8000

VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4 = 0, 1, 3, 4, 5
VNET = struct.Struct("=BBHHHH")  # virtio_net_hdr, host byte order (legacy virtio on a little-endian host)
VNET_LEN = VNET.size
_NO_VNET = bytes(VNET_LEN)
DEFAULT_SLOT_BYTES = 65536 + 64  # an Ethernet frame carrying a 64 KiB GSO packet, tag included
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


_MM_SIZE = MMSG_SIZE
_MM_U32 = _MM_SIZE // 4  # the same offsets counted in 32-bit words
_FLAGS_U32 = MsgHdr.flags.offset // 4
_NAMELEN_U32 = MsgHdr.namelen.offset // 4
_LEN_U32 = MMsgHdr.len.offset // 4
_IOV_SIZE = IOVEC_SIZE
_IOV_N = _IOV_SIZE // ctypes.sizeof(ctypes.c_size_t)  # size_t words per iovec
_SLL_LEN = 20  # sizeof(struct sockaddr_ll)


class _MsgBatch:
    """Preallocated mmsghdr[n], each with two iovecs: a virtio header slot and a frame slot.

    The kernel reads and writes the plain bytearrays below through their addresses; Python reads the
    per-message results through typed memoryviews, far cheaper than ctypes attributes per frame.
    """

    def __init__(self, count: int, slot_bytes: int, with_names: bool) -> None:
        self.count, self.slot_bytes = count, slot_bytes
        self.vnet = bytearray(count * VNET_LEN)
        self.slots = bytearray(count * slot_bytes)
        self.names = bytearray(count * _SLL_LEN)
        self.iov = bytearray(2 * count * _IOV_SIZE)
        self.msgs = bytearray(count * _MM_SIZE)
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
            msgs[i].hdr.iov, msgs[i].hdr.iovlen = iov_base + 2 * i * _IOV_SIZE, 2
            if with_names:
                msgs[i].hdr.name, msgs[i].hdr.namelen = name_base + i * _SLL_LEN, _SLL_LEN

    def reset_names(self, count: int) -> None:
        for i in range(count):
            self.msg_u32[i * _MM_U32 + _NAMELEN_U32] = _SLL_LEN  # the kernel overwrites it per call

    def pkttype(self, i: int) -> int:
        return self.names[i * _SLL_LEN + 10]  # sockaddr_ll.sll_pkttype


class RawPort:
    """An AF_PACKET port on one interface of the current network namespace."""

    def __init__(self, ifname: str, *, bpf: bytes | None = None, fanout_group: int | None = None,
                 fanout_mode: str = "hash", fanout_defrag: bool = False, rx_buffer_bytes: int = 8 << 20,
                 tx_buffer_bytes: int = 4 << 20, batch: int = 64, slot_bytes: int = DEFAULT_SLOT_BYTES,
                 zero_copy: bool = False, qdisc_bypass: bool = False, fanout_program: bytes | None = None,
                 protocol: int = ETH_P_ALL) -> None:
        self.ifname, self.batch, self.slot_bytes, self.zero_copy = ifname, batch, slot_bytes, zero_copy
        self.protocol = protocol
        self.counters = PortCounters()
        # Protocol 0: no frame is queued until bind, so the filter is in place before the first one.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self._set_buffer(sock, socket.SO_RCVBUF, SO_RCVBUFFORCE, rx_buffer_bytes)
            self._set_buffer(sock, socket.SO_SNDBUF, SO_SNDBUFFORCE, tx_buffer_bytes)
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                self.outgoing_check = "kernel"
            except OSError:
                self.outgoing_check = "pkttype"  # kernels before 4.20: look at sll_pkttype per frame
            if qdisc_bypass:
                sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            if bpf is not None:
                attach_filter(sock, bpf)
            try:
                sock.bind((ifname, protocol))
            except OSError as exc:
                if exc.errno in (errno.ENODEV, errno.ENXIO):
                    raise InterfaceMissing(ifname) from None
                raise
            if fanout_group is not None:
                flags = PACKET_FANOUT_FLAG_IGNORE_OUTGOING | (PACKET_FANOUT_FLAG_DEFRAG if fanout_defrag else 0)
                arg = (fanout_group & 0xFFFF) | ((FANOUT_MODES[fanout_mode] | flags) << 16)
                sock.setsockopt(SOL_PACKET, PACKET_FANOUT, arg)
                if fanout_program is not None:
                    _set_program(sock, SOL_PACKET, PACKET_FANOUT_DATA, fanout_program)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._fd = sock.fileno()
        self._check_pkttype = self.outgoing_check == "pkttype"
        self._rx = _MsgBatch(batch, slot_bytes, with_names=self._check_pkttype)
        self._tx = _MsgBatch(batch, slot_bytes, with_names=False)
        self._one = bytearray(VNET_LEN + slot_bytes)
        self._one_view = memoryview(self._one)
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)

    @staticmethod
    def _set_buffer(sock: socket.socket, option: int, force_option: int, size: int) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force_option, size)  # beyond rmem_max/wmem_max (needs root)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, option, size)

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RawPort:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def set_filter(self, bpf: bytes) -> None:
        """Swap the kernel filter atomically (new VIPs or backends); frames already queued stay."""
        attach_filter(self._sock, bpf)

    def set_fanout_program(self, bpf: bytes) -> None:
        """Replace the steering program of this port's "cbpf" fanout group (every member shares it)."""
        _set_program(self._sock, SOL_PACKET, PACKET_FANOUT_DATA, bpf)

    def wait(self, timeout: float | None) -> bool:
        """Block until a frame is queued or ``timeout`` seconds pass; True if one is."""
        return bool(self._poll.poll(None if timeout is None else max(0, int(timeout * 1000))))

    # ------------------------------------------------------------------ receive

    def recv(self) -> RxFrame | None:
        """One frame if one is queued (never blocks), through one recv_into; None otherwise."""
        buf, counters = self._one_view, self.counters
        while True:
            try:
                if self._check_pkttype:
                    n, address = self._sock.recvfrom_into(buf, 0, MSG_DONTWAIT | MSG_TRUNC)
                    if address[2] == PACKET_OUTGOING:
                        counters.rx_outgoing += 1
                        continue
                else:
                    n = self._sock.recv_into(buf, 0, MSG_DONTWAIT | MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                return None
            if n > len(buf):  # MSG_TRUNC makes recv return the real length
                counters.rx_truncated += 1
                continue
            counters.rx += 1
            counters.rx_bytes += n - VNET_LEN
            data = buf[VNET_LEN:n] if self.zero_copy else bytearray(buf[VNET_LEN:n])
            if buf[0] or buf[1]:
                return RxFrame(data, self._note_offload(VnetHeader._make(VNET.unpack_from(buf))))
            return RxFrame(data, NO_OFFLOAD)

    def _note_offload(self, vnet: VnetHeader) -> VnetHeader:
        if vnet.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            self.counters.rx_partial += 1
        if vnet.gso_type != GSO_NONE:
            self.counters.rx_gso += 1
        return vnet

    def recv_batch(self, max_frames: int | None = None) -> list[RxFrame]:
        """Up to ``max_frames`` (at most ``batch``) queued frames in one recvmmsg; [] if none (never blocks)."""
        rx, counters = self._rx, self.counters
        limit = self.batch if max_frames is None else min(max_frames, self.batch)
        if self._check_pkttype:
            rx.reset_names(limit)
        got = recvmmsg(self._fd, rx.base, limit, MSG_DONTWAIT, None)
        if got <= 0:
            err = ctypes.get_errno()
            if got < 0 and err not in (errno.EAGAIN, errno.EINTR):
                raise OSError(err, f"recvmmsg on {self.ifname}: {errno.errorcode.get(err, err)}")
            return []
        frames: list[RxFrame] = []
        append, new_frame, msg_u32, vnet, slots = frames.append, tuple.__new__, rx.msg_u32, rx.vnet, rx.slots_view
        slot_bytes, zero_copy, check_pkttype, rx_bytes = self.slot_bytes, self.zero_copy, self._check_pkttype, 0
        for i in range(got):
            at = i * _MM_U32
            if msg_u32[at + _FLAGS_U32] & MSG_TRUNC:
                counters.rx_truncated += 1
                continue
            if check_pkttype and rx.pkttype(i) == PACKET_OUTGOING:
                counters.rx_outgoing += 1
                continue
            length = msg_u32[at + _LEN_U32] - VNET_LEN
            start = i * slot_bytes
            data = slots[start:start + length] if zero_copy else bytearray(slots[start:start + length])
            rx_bytes += length
            at = i * VNET_LEN
            if vnet[at] or vnet[at + 1]:
                append(new_frame(RxFrame, (data, self._note_offload(VnetHeader._make(VNET.unpack_from(vnet, at))))))
            else:
                append(new_frame(RxFrame, (data, NO_OFFLOAD)))
        counters.rx += len(frames)
        counters.rx_bytes += rx_bytes
        return frames

    def kernel_stats(self) -> tuple[int, int]:
        """(frames queued, frames dropped for want of socket buffer) since the last call; adds the drops up."""
        packets, drops = struct.unpack("=II", self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.counters.kernel_drops += drops
        return packets, drops

    # ------------------------------------------------------------------ send

    def send(self, frame: bytes | bytearray | memoryview, *, partial: bool = False, csum_start: int = 0,
             csum_offset: int = 0, gso_type: int = GSO_NONE, gso_size: int = 0, hdr_len: int = 0) -> bool:
        """Send one frame.  ``partial``: finish its L4 checksum (start/offset found in the frame if not given).

        ``gso_type``/``gso_size`` (as received) make the kernel cut a super-frame into segments.
        Returns False (and counts the errno) if the kernel refused the frame.
        """
        if partial or gso_type:
            vnet = self._offload_header(frame, partial, csum_start, csum_offset, gso_type, gso_size, hdr_len)
            return self.send_with(frame, vnet)
        return self.send_with(frame, NO_OFFLOAD)

    @staticmethod
    def _offload_header(frame: bytes | bytearray | memoryview, partial: bool, csum_start: int, csum_offset: int,
                        gso_type: int, gso_size: int, hdr_len: int) -> VnetHeader:
        if partial and not csum_start:
            return partial_header(frame, gso_type, gso_size)._replace(hdr_len=hdr_len)
        flags = VIRTIO_NET_HDR_F_NEEDS_CSUM if partial else 0
        return VnetHeader(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)

    def send_with(self, frame: bytes | bytearray | memoryview, vnet: VnetHeader) -> bool:
        """Send one frame with an explicit virtio header (e.g. the one it was received with)."""
        header = _NO_VNET if vnet is NO_OFFLOAD else VNET.pack(*vnet)
        try:
            self._sock.sendmsg((header, frame))
        except OSError as exc:
            self.counters.tx_errors[errno.errorcode.get(exc.errno or 0, str(exc.errno))] += 1
            return False
        self.counters.tx += 1
        self.counters.tx_bytes += len(frame)
        return True

    def send_batch(self, frames: Sequence[bytes | bytearray | memoryview],
                   vnets: Sequence[VnetHeader] | None = None) -> int:
        """Send frames (each with ``vnets[i]``, default none) with sendmmsg, ``batch`` per call; returns how many left.

        A frame the kernel refuses is counted under its errno and skipped; the rest still go.
        """
        sent = 0
        for start in range(0, len(frames), self.batch):
            chunk = frames[start:start + self.batch]
            sent += self._send_chunk(chunk, None if vnets is None else vnets[start:start + self.batch])
        return sent

    def _send_chunk(self, frames: Sequence[bytes | bytearray | memoryview], vnets: Sequence[VnetHeader] | None) -> int:
        tx, slot_bytes = self._tx, self.slot_bytes
        slots, vnet_view, iov_lens, dirty, tx_bytes = tx.slots_view, tx.vnet_view, tx.iov_size_t, tx.vnet_dirty, 0
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
                vnet_view[i * VNET_LEN:(i + 1) * VNET_LEN] = _NO_VNET
                dirty[i] = False
            tx_bytes += length
        count, done, ok = len(frames), 0, 0
        while done < count:
            result = sendmmsg(self._fd, tx.base + done * _MM_SIZE, count - done, 0)
            if result < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                self.counters.tx_errors[errno.errorcode.get(err, str(err))] += 1
                tx_bytes -= len(frames[done])
                done += 1  # skip the frame the kernel refused; sendmmsg stops at the first failure
                continue
            done += result
            ok += result
        self.counters.tx += ok
        self.counters.tx_bytes += tx_bytes
        return ok


def attach_filter(sock: socket.socket, bpf: bytes) -> None:
    """SO_ATTACH_FILTER with ``bpf`` (packed ``struct sock_filter[]``); the kernel copies the program."""
    _set_program(sock, socket.SOL_SOCKET, SO_ATTACH_FILTER, bpf)


def _set_program(sock: socket.socket, level: int, option: int, bpf: bytes) -> None:
    """Pass a classic-BPF program to a socket option taking a ``struct sock_fprog``."""
    if not bpf or len(bpf) % 8:
        raise ValueError("a BPF program is a non-empty multiple of 8 bytes (struct sock_filter)")
    program = ctypes.create_string_buffer(bpf, len(bpf))
    fprog = struct.pack("@HP", len(bpf) // 8, ctypes.addressof(program))
    sock.setsockopt(level, option, fprog)
