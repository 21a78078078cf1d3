"""Opening and configuring the AF_PACKET socket behind a port (``pktlb.adapters.rawio``).

* bound to ETH_P_ALL, so it sees frames before a netdev-ingress nftables guard drops them;
* the classic-BPF filter (``pktlb.adapters.bpf``) is attached before the socket is bound, so no
  unfiltered frame is ever queued (a packet socket created with protocol 0 receives nothing until bind);
* PACKET_IGNORE_OUTGOING: frames this host sends are never read back (without it, on kernels before
  4.20: the filter's packet-type test, and a check of sll_pkttype per frame by the port);
* PACKET_VNET_HDR: each frame comes with a virtio_net_hdr (``pktlb.adapters.vnet``);
* buffers beyond rmem_max/wmem_max where root may, optionally PACKET_QDISC_BYPASS;
* ``fanout_group`` joins a PACKET_FANOUT group (hash by default, or a "cbpf" steering program) so
  ``--workers N`` share the load.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct

from pktlb.adapters.ifinfo import InterfaceMissing

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
PACKET_OUTGOING = 4  # sockaddr_ll.sll_pkttype of a frame this host sent
FANOUT_MODES = {"hash": 0, "lb": 1, "cpu": 2, "rollover": 3, "rnd": 4, "qm": 5, "cbpf": 6}
PACKET_FANOUT_DATA = 22  # the program of a "cbpf" group (see pktlb.adapters.fanout)
PACKET_FANOUT_FLAG_IGNORE_OUTGOING = 0x4000
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
OUTGOING_BY_KERNEL, OUTGOING_BY_PKTTYPE = "kernel", "pkttype"  # who keeps our own frames out


def open_packet_socket(ifname: str, *, bpf: bytes | None = None, fanout_group: int | None = None,
                       fanout_mode: str = "hash", fanout_defrag: bool = False, rx_buffer_bytes: int = 8 << 20,
                       tx_buffer_bytes: int = 4 << 20, qdisc_bypass: bool = False,
                       fanout_program: bytes | None = None, protocol: int = ETH_P_ALL) -> tuple[socket.socket, str]:
    """A configured packet socket bound to ``ifname``, and who keeps our own frames out of it
    (``OUTGOING_BY_KERNEL``, or ``OUTGOING_BY_PKTTYPE``: the reader must look at sll_pkttype)."""
    # Protocol 0: no frame is queued until bind, so the filter is in place before the first one.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        set_buffer(sock, socket.SO_RCVBUF, SO_RCVBUFFORCE, rx_buffer_bytes)
        set_buffer(sock, socket.SO_SNDBUF, SO_SNDBUFFORCE, tx_buffer_bytes)
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            outgoing_check = OUTGOING_BY_KERNEL
        except OSError:
            outgoing_check = OUTGOING_BY_PKTTYPE  # kernels before 4.20: look at sll_pkttype per frame
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
                set_fanout_program(sock, fanout_program)
    except BaseException:
        sock.close()
        raise
    return sock, outgoing_check


def set_buffer(sock: socket.socket, option: int, force_option: int, size: int) -> None:
    """A socket buffer of ``size`` bytes: beyond rmem_max/wmem_max with the FORCE option (needs root)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, force_option, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, option, size)


def kernel_stats(sock: socket.socket) -> tuple[int, int]:
    """PACKET_STATISTICS: (frames queued, frames dropped for want of socket buffer) since the last read."""
    packets, drops = struct.unpack("=II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    return packets, drops


def attach_filter(sock: socket.socket, bpf: bytes) -> None:
    """SO_ATTACH_FILTER with ``bpf`` (packed ``struct sock_filter[]``); the kernel copies the program."""
    set_program(sock, socket.SOL_SOCKET, SO_ATTACH_FILTER, bpf)


def set_fanout_program(sock: socket.socket, bpf: bytes) -> None:
    """The steering program of the socket's "cbpf" fanout group (every member shares it)."""
    set_program(sock, SOL_PACKET, PACKET_FANOUT_DATA, bpf)


def set_program(sock: socket.socket, level: int, option: int, bpf: bytes) -> None:
    """Pass a classic-BPF program to a socket option taking a ``struct sock_fprog``."""
    if not bpf or len(bpf) % 8:
        raise ValueError("a BPF program is a non-empty multiple of 8 bytes (struct sock_filter)")
    program = ctypes.create_string_buffer(bpf, len(bpf))
    fprog = struct.pack("@HP", len(bpf) // 8, ctypes.addressof(program))
    sock.setsockopt(level, option, fprog)
