"""The engine's one-call header read (``packet.frame.header_fields``) agrees with the codecs field by field,
and the fragment test on the 16-bit field with the byte-wise one it replaced."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pktlb.core.packet.ethernet import Ethernet
from pktlb.core.packet.frame import DF_BIT, FRAG_BITS, FRAGMENT, IP_FRAG, MIN_IPV4_FRAME, header_fields
from pktlb.core.packet.ipv4 import IPv4

u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1)


@given(st.binary(min_size=6, max_size=6), st.binary(min_size=6, max_size=6), u16, u32, u32, u8, u8, u16, u16, u16,
       u8, st.binary(max_size=20))
def test_header_fields_match_the_codecs(dst_mac, src_mac, ethertype, src, dst, proto, ttl, total, ident, frag, tos,
                                        rest):
    frame = Ethernet(dst_mac, src_mac, ethertype).pack() + IPv4(src, dst, proto, ttl, total, ident, frag, tos).pack()
    frame += rest
    eth, ip = Ethernet.parse(frame), IPv4.parse(frame, 14)
    assert len(frame) >= MIN_IPV4_FRAME
    assert header_fields(frame) == (eth.ethertype, 0x40 | ip.ihl, ip.total_length, ip.flags_frag, ip.proto, ip.src,
                                    ip.dst)
    assert bool(header_fields(frame)[3] & FRAGMENT) == ip.is_fragment
    assert bool(frame[IP_FRAG] & FRAG_BITS or frame[IP_FRAG + 1]) == ip.is_fragment  # the byte-wise test
    assert bool(frame[IP_FRAG] & DF_BIT) == ip.df
