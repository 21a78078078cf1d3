"""Internet checksums: the full RFC 1071 sum and RFC 1624 incremental updates.

The full sum uses a big-integer trick: reading the data as one base-65536 number, the
one's-complement sum of its 16-bit words is that number modulo 0xffff (65536 = 1 mod 65535),
which CPython computes in C.  Incremental updates take a precomputed *delta* (the folded sum of
~m + m' over the changed 16-bit words) so a per-backend rewrite costs a handful of integer ops.

Partial checksums: a veth/virtio sender with TX offload leaves only the (uncomplemented)
pseudo-header sum in the L4 checksum field.  Updating such a field is ``P' = P + delta`` with no
complements; see ``update_partial``.
"""

from __future__ import annotations

_FULL = 0xFFFF


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


def update(csum: int, delta: int) -> int:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), with the ~m + m' terms given as ``delta``."""
    return ~fold((~csum & _FULL) + delta) & _FULL


def update_partial(partial: int, delta: int) -> int:
    """Update an unfinished (CHECKSUM_PARTIAL) field, which holds an uncomplemented sum: P' = P + delta."""
    return fold(partial + delta)
