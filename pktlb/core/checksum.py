"""Internet checksums: the full RFC 1071 sum and RFC 1624 incremental updates.

The full sum uses a big-integer trick: reading the data as one base-65536 number, the
one's-complement sum of its 16-bit words is that number modulo 0xffff (65536 = 1 mod 65535),
which CPython computes in C.  Incremental updates take a precomputed *delta* (the folded sum of
~m + m' over the changed 16-bit words) so a per-backend rewrite costs a handful of integer ops.

Partial checksums: a veth/virtio sender with TX offload leaves only the (uncomplemented)
pseudo-header sum in the L4 checksum field.  Updating such a field is ``P' = P + delta`` with no
complements.

The rewriters update checksums in the frame with ``apply_delta`` and ``apply_l4_delta``; ``update``
and ``update_l4`` (what the tests and ``pktlb explain`` call on plain integers) run those very
functions on a two-byte buffer, so the code the tests check is the code the hot path runs.
"""

from __future__ import annotations

import struct

_FULL = 0xFFFF
_U16 = struct.Struct("!H")
_unpack16 = _U16.unpack_from
_pack16 = _U16.pack_into


def ones_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """One's-complement sum of ``data`` as 16-bit big-endian words, folded to 16 bits (not complemented)."""
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    s = n % _FULL
    if s == 0 and n:
        s = _FULL  # one's-complement "-0": a non-zero sum that is a multiple of 0xffff
    return fold(s + initial)


def fold(x: int) -> int:
    """Fold a non-negative integer into 16 bits with end-around carry."""
    while x > _FULL:
        x = (x & _FULL) + (x >> 16)
    return x


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The Internet checksum of ``data`` (RFC 1071): the complement of the one's-complement sum."""
    return ~ones_sum(data, initial) & _FULL


def pseudo_header_sum(src: int, dst: int, proto: int, length: int) -> int:
    """Folded sum of the IPv4 pseudo-header (addresses as 32-bit ints)."""
    return fold((src >> 16) + (src & _FULL) + (dst >> 16) + (dst & _FULL) + proto + length)


def delta16(old: int, new: int) -> int:
    """The RFC 1624 delta for one 16-bit word changing from ``old`` to ``new``."""
    return fold((~old & _FULL) + new)


def delta32(old: int, new: int) -> int:
    """The RFC 1624 delta for a 32-bit field (an IPv4 address) changing from ``old`` to ``new``."""
    return fold(delta16(old >> 16, new >> 16) + delta16(old & _FULL, new & _FULL))


def add_deltas(*deltas: int) -> int:
    """Combine deltas into one (deltas commute)."""
    return fold(sum(deltas))


def apply_delta(frame: bytearray, off: int, delta: int) -> None:
    """RFC 1624 eqn. 3 on the finished checksum at ``frame[off:off + 2]``: HC' = ~(~HC + ~m + m'), with the
    ~m + m' terms given as ``delta`` (the IPv4 header checksum; the hot path calls this per packet).

    Here and in ``apply_l4_delta`` ``fold`` is written out, for a delta under 2**32 (a folded delta is
    under 2**16): one end-around carry, and a second one only when the first carried out again.  The
    mask is a literal: no call and no global lookup per packet."""
    c = (~_unpack16(frame, off)[0] & 0xFFFF) + delta
    c = (c & 0xFFFF) + (c >> 16)
    if c > 0xFFFF:
        c -= 0xFFFF
    _pack16(frame, off, ~c & 0xFFFF)


def apply_l4_delta(frame: bytearray, off: int, delta: int, pseudo_delta: int, partial: bool, udp: bool) -> None:
    """Update a TCP/UDP checksum in place: the full delta when finished, the address-only delta when partial
    (an unfinished field holds only the uncomplemented pseudo-header sum, P' = P + delta; the kernel adds the
    header and data later).  ``fold`` written out as in ``apply_delta``."""
    c = _unpack16(frame, off)[0]
    if partial:
        c += pseudo_delta
        c = (c & 0xFFFF) + (c >> 16)
        if c > 0xFFFF:
            c -= 0xFFFF
        _pack16(frame, off, c)
        return
    c = (~c & 0xFFFF) + delta
    c = (c & 0xFFFF) + (c >> 16)
    if c > 0xFFFF:
        c -= 0xFFFF
    c = ~c & 0xFFFF
    if udp and c == 0:
        c = 0xFFFF  # RFC 768: a computed 0 is sent as all ones; 0 means "no checksum"
    _pack16(frame, off, c)


def update(csum: int, delta: int) -> int:
    """``apply_delta`` on a checksum value: the RFC 1624 update of a finished checksum."""
    buf = bytearray(_U16.pack(csum))
    apply_delta(buf, 0, delta)
    return int.from_bytes(buf, "big")


def update_l4(csum: int, delta: int, pseudo_delta: int = 0, *, partial: bool = False, udp: bool = False) -> int:
    """``apply_l4_delta`` on a checksum value: a TCP/UDP checksum after a rewrite (``partial``: the field
    holds an unfinished pseudo-header sum and takes ``pseudo_delta``; ``udp``: a computed 0 becomes 0xffff)."""
    buf = bytearray(_U16.pack(csum))
    apply_l4_delta(buf, 0, delta, pseudo_delta, partial, udp)
    return int.from_bytes(buf, "big")
