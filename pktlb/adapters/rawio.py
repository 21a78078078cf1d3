"""Raw Ethernet frame I/O on one interface: ``RawPort``, what the daemon reads frames from and writes the
engine's output to.

Its parts, one module each: the socket's setup (``packet_socket``: ETH_P_ALL, the kernel filter before
bind, PACKET_IGNORE_OUTGOING, PACKET_VNET_HDR, fanout), the virtio_net_hdr with every frame (``vnet``:
checksum offload and GSO), and the batched path (``packet_batch``: recvmmsg/sendmmsg through ctypes, a
batch per system call).  Here: the port that holds them, and the simple one-frame ``recv``/``send``.

* a frame longer than the receive slot is never passed on cut: it is counted in ``rx_truncated``;
* on kernels without PACKET_IGNORE_OUTGOING our own frames are recognised by sll_pkttype per frame.

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

import errno
import select
from collections.abc import Sequence

from pktlb.adapters import packet_socket
from pktlb.adapters.packet_batch import MSG_DONTWAIT, MSG_TRUNC, MsgBatch, PortCounters
from pktlb.adapters.packet_socket import ETH_P_ALL as ETH_P_ALL
from pktlb.adapters.packet_socket import ETH_P_IP as ETH_P_IP
from pktlb.adapters.packet_socket import OUTGOING_BY_PKTTYPE, PACKET_OUTGOING
from pktlb.adapters.vnet import (
    GSO_NONE,
    NO_OFFLOAD,
    NO_VNET,
    VNET,
    VNET_LEN,
    RxFrame,
    VnetHeader,
    offload_header,
)

DEFAULT_SLOT_BYTES = 65536 + 64  # an Ethernet frame carrying a 64 KiB GSO packet, tag included


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
        self._sock, self.outgoing_check = packet_socket.open_packet_socket(
            ifname, bpf=bpf, fanout_group=fanout_group, fanout_mode=fanout_mode, fanout_defrag=fanout_defrag,
            rx_buffer_bytes=rx_buffer_bytes, tx_buffer_bytes=tx_buffer_bytes, qdisc_bypass=qdisc_bypass,
            fanout_program=fanout_program, protocol=protocol)
        self._fd = self._sock.fileno()
        self._check_pkttype = self.outgoing_check == OUTGOING_BY_PKTTYPE
        self._rx = MsgBatch(batch, slot_bytes, with_names=self._check_pkttype)
        self._tx = MsgBatch(batch, slot_bytes, with_names=False)
        self._one = bytearray(VNET_LEN + slot_bytes)
        self._one_view = memoryview(self._one)
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)

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
        packet_socket.attach_filter(self._sock, bpf)

    def set_fanout_program(self, bpf: bytes) -> None:
        """Replace the steering program of this port's "cbpf" fanout group (every member shares it)."""
        packet_socket.set_fanout_program(self._sock, bpf)

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
                return RxFrame(data, counters.count_offload(VnetHeader._make(VNET.unpack_from(buf))))
            return RxFrame(data, NO_OFFLOAD)

    def recv_batch(self, max_frames: int | None = None) -> list[RxFrame]:
        """Up to ``max_frames`` (at most ``batch``) queued frames in one recvmmsg; [] if none (never blocks)."""
        limit = self.batch if max_frames is None else min(max_frames, self.batch)
        return self._rx.receive(self._fd, limit, self.counters, zero_copy=self.zero_copy,
                                check_pkttype=self._check_pkttype, ifname=self.ifname)

    def kernel_stats(self) -> tuple[int, int]:
        """(frames queued, frames dropped for want of socket buffer) since the last call; adds the drops up."""
        packets, drops = packet_socket.kernel_stats(self._sock)
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
            vnet = offload_header(frame, partial, csum_start, csum_offset, gso_type, gso_size, hdr_len)
            return self.send_with(frame, vnet)
        return self.send_with(frame, NO_OFFLOAD)

    def send_with(self, frame: bytes | bytearray | memoryview, vnet: VnetHeader) -> bool:
        """Send one frame with an explicit virtio header (e.g. the one it was received with)."""
        header = NO_VNET if vnet is NO_OFFLOAD else VNET.pack(*vnet)
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
            sent += self._tx.send(self._fd, chunk, None if vnets is None else vnets[start:start + self.batch],
                                  self.counters)
        return sent
