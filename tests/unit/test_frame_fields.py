"""The one-call header reads (``packet.frame.header_fields``, ``flow_fields``) agree with the codecs field by field,
and the fragment test on the 16-bit field with the byte-wise one it replaced."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pktlb.core.packet.ethernet import Ethernet
from pktlb.core.packet.frame import (
    DF_BIT,
    FRAG_BITS,
    FRAGMENT,
    IP_FRAG,
    MIN_IPV4_FRAME,
    flow_fields,
    header_fields,
)
from pktlb.core.packet.ipv4 import IPv4
from pktlb.core.packet.l4 import UDP, UDP_STRUCT

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


@given(u16, u32, u32, st.sampled_from([6, 17]), u16, u16, st.binary(max_size=20))
def test_flow_fields_match_the_codecs(ethertype, src, dst, proto, sport, dport, rest):
    frame = (Ethernet(b"\x02" * 6, b"\x04" * 6, ethertype).pack() + IPv4(src, dst, proto, 64, 40, 1, 0, 0).pack()
             + UDP_STRUCT.pack(sport, dport, 8, 0) + rest)
    eth, ip, l4 = Ethernet.parse(frame), IPv4.parse(frame, 14), UDP.parse(frame, 34)
    assert flow_fields(frame) == (eth.ethertype, 0x40 | ip.ihl, ip.proto, ip.src, ip.dst, l4.sport, l4.dport)
