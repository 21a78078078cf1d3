"""The kernel's ``struct mmsghdr`` layout and the libc ``recvmmsg``/``sendmmsg`` bindings (ctypes).

One home for what moves a batch of frames per system call: the engine's port
(``pktlb.adapters.packet_batch``) and the bench's flood generator (``pktlb.reports.bench.benchgen``) both
point vectors of these structures at their buffers.  Layouts follow <sys/socket.h> and
<bits/uio.h> on Linux; the functions set errno (read it with ``ctypes.get_errno()``).
"""

from __future__ import annotations

import ctypes


class IOVec(ctypes.Structure):
    """struct iovec: one buffer of a message."""

    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    """struct msghdr: address, buffers and control data of one message."""

    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class MMsgHdr(ctypes.Structure):
    """struct mmsghdr: one message of a batch, and the bytes the kernel moved for it."""

    _fields_ = [("hdr", MsgHdr), ("len", ctypes.c_uint)]


MMSG_SIZE = ctypes.sizeof(MMsgHdr)
IOVEC_SIZE = ctypes.sizeof(IOVec)

_libc = ctypes.CDLL(None, use_errno=True)
# int recvmmsg(int fd, struct mmsghdr *msgs, unsigned int n, int flags, struct timespec *timeout)
recvmmsg = _libc.recvmmsg
recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
# int sendmmsg(int fd, struct mmsghdr *msgs, unsigned int n, int flags)
sendmmsg = _libc.sendmmsg
sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
