"""TCP segmentation in software: one GSO super-frame cut into MSS-sized frames, as the kernel would.

A sender with TSO/GSO on hands a veth frames of up to 64 KiB: one TCP header, one IPv4 header,
and a payload that must still be cut into ``gso_size`` pieces (the MSS).  NAT, full-NAT and DSR
pass such a frame back to the kernel with its virtio header and the kernel cuts it on the way out.
IP-in-IP cannot: the segments must be inside the tunnel, so the engine cuts them here, before the
outer header goes on.  Each segment gets what ``tcp_gso_segment`` gives it:

    IPv4   total length of the segment, ID = first ID + i, a fresh header checksum
    TCP    seq = first seq + i * mss; FIN and PSH only on the last segment, CWR only on the first;
           a full checksum (the super-frame's field held only the pseudo-header sum, or nothing
           usable: it is recomputed, never updated)

Pure: bytes in, new bytearrays out, or a drop reason.
"""

from __future__ import annotations

import struct

from pktlb.core.checksum import checksum
from pktlb.core.decision import Drop

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_FIN, _PSH, _CWR = 0x01, 0x08, 0x80
# The most a 64 KiB frame can hold: Linux's smallest MSS (tcp_min_snd_mss, 48) less TCP options
# can leave a gso_size of 8 bytes.  A bound on the work one frame can ask for, not a guess at senders.
MAX_SEGMENTS = 65535 // 8 + 1
BAD_GSO = Drop("bad_gso")


def segment_tcp(frame: bytearray, ip: int, l4: int, mss: int) -> list[bytearray] | Drop:
    """Cut the TCP super-frame (Ethernet at 0, IPv4 at ``ip``, TCP at ``l4``) into ``mss``-byte segments.

    The frame's lengths must already be checked (the engine's parse does).  Returns the segments
    with finished checksums, or "bad_gso" when ``mss`` or the TCP header cannot be right."""
    ihl = (frame[ip] & 15) << 2
    total = _U16.unpack_from(frame, ip + 2)[0]
    thl = (frame[l4 + 12] >> 4) << 2
    start, end = l4 + thl, ip + total
    if mss <= 0 or thl < 20 or start > end or (end - start + mss - 1) // mss > MAX_SEGMENTS:
        return BAD_GSO
    head = frame[:start]
    payload = memoryview(frame)[start:end]
    ident = _U16.unpack_from(frame, ip + 4)[0]
    seq = _U32.unpack_from(frame, l4 + 4)[0]
    flags = frame[l4 + 13]
    addresses = frame[ip + 12:ip + 20]
    pseudo = sum(_U16.unpack_from(addresses, i)[0] for i in (0, 2, 4, 6)) + 6
    count = max(1, (len(payload) + mss - 1) // mss)
    segments = []
    for i in range(count):
        seg = bytearray(head)
        seg += payload[i * mss:(i + 1) * mss]
        seg_len = len(seg) - ip
        _U16.pack_into(seg, ip + 2, seg_len)
        _U16.pack_into(seg, ip + 4, (ident + i) & 0xFFFF)
        seg[ip + 10:ip + 12] = b"\x00\x00"
        _U16.pack_into(seg, ip + 10, checksum(memoryview(seg)[ip:ip + ihl]))
        _U32.pack_into(seg, l4 + 4, (seq + i * mss) & 0xFFFFFFFF)
        seg_flags = flags
        if i < count - 1:
            seg_flags &= ~(_FIN | _PSH)
        if i:
            seg_flags &= ~_CWR
        seg[l4 + 13] = seg_flags
        seg[l4 + 16:l4 + 18] = b"\x00\x00"
        _U16.pack_into(seg, l4 + 16, checksum(memoryview(seg)[l4:], pseudo + seg_len - ihl))
        segments.append(seg)
    return segments
