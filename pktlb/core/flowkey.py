"""The flow key (proto, src, dst, sport, dport) and stable, seeded hashes of it.

Never Python's ``hash()``: it is randomised per process, so two workers or a restarted engine
would disagree about where a flow goes.  ``flow_hash`` is CRC-32 (seeded) over the packed
5-tuple followed by MurmurHash3's 32-bit finaliser for avalanche; it is identical in every
process and across restarts for the same seed.
"""

from __future__ import annotations

import struct
import zlib

FlowKey = tuple[int, int, int, int, int]  # (proto, src, dst, sport, dport), addresses as ints
_PACK5 = struct.Struct("!BIIHH").pack
_PACK1 = struct.Struct("!I").pack
_M32 = 0xFFFFFFFF


def fmix32(h: int) -> int:
    """MurmurHash3's finaliser: every input bit affects every output bit."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def flow_hash(proto: int, src: int, dst: int, sport: int, dport: int, seed: int) -> int:
    """32-bit stable hash of a 5-tuple."""
    return fmix32(zlib.crc32(_PACK5(proto, src, dst, sport, dport), seed))


def key_hash(key: FlowKey, seed: int) -> int:
    return flow_hash(key[0], key[1], key[2], key[3], key[4], seed)


def src_hash(src: int, seed: int) -> int:
    """32-bit stable hash of a source address (the ``sh`` scheduler)."""
    return fmix32(zlib.crc32(_PACK1(src), seed))


def name_hash(name: str, seed: int) -> int:
    """32-bit stable hash of a name (Maglev's per-backend offset and skip)."""
    return fmix32(zlib.crc32(name.encode("utf-8"), seed))


def reverse(key: FlowKey) -> FlowKey:
    return (key[0], key[2], key[1], key[4], key[3])
