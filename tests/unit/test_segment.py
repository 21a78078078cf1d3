"""TCP segmentation of GSO super-frames (tunnel mode), checked against scapy."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, IPerror
from scapy.layers.l2 import Ether

from pktlb.core.packet.segment import segment_tcp
from tests.frames import CLIENT, VIP, assert_checksums, client_frame, datapath

PAYLOAD = bytes(range(256)) * 20  # 5120 bytes


def super_frame(flags: str = "PAFC", ip_options=None, tcp_options=None, payload: bytes = PAYLOAD) -> bytearray:
    """A super-frame as a TSO sender hands it to a veth: one header, the whole payload, the TCP
    checksum field holding only the pseudo-header sum (the partial state)."""
    frame = client_frame(TCP(sport=40000, dport=80, flags=flags, seq=0xFFFFF000, ack=7, options=tcp_options or []),
                         options=ip_options, payload=payload)
    return frame


@pytest.mark.parametrize("ip_options,tcp_options", [(None, None),
                                                    ([b"\x01\x01\x01\x00"], [("Timestamp", (1, 2)), ("NOP", None)])])
def test_segments_carry_the_payload_in_order_with_the_kernels_header_rules(ip_options, tcp_options):
    from scapy.layers.inet import IPOption

    opts = [IPOption(o) for o in ip_options] if ip_options else None
    frame = super_frame(ip_options=opts, tcp_options=tcp_options)
    original = Ether(bytes(frame))
    ip, l4 = 14, 14 + original[IP].ihl * 4
    segments = segment_tcp(frame, ip, l4, 1400)
    assert isinstance(segments, list) and len(segments) == 4  # 1400 + 1400 + 1400 + 920
    joined = b""
    for i, seg in enumerate(segments):
        pkt = assert_checksums(seg)  # IP and TCP checksums as scapy computes them
        assert pkt[IP].len == len(seg) - 14 and pkt[IP].id == (original[IP].id + i) & 0xFFFF
        assert pkt[IP].options == original[IP].options and pkt[TCP].options == original[TCP].options
        assert pkt[TCP].seq == (0xFFFFF000 + i * 1400) & 0xFFFFFFFF  # wraps past 2**32
        last = i == len(segments) - 1
        assert bool(pkt[TCP].flags & 0x01) == last and bool(pkt[TCP].flags & 0x08) == last  # FIN, PSH
        assert bool(pkt[TCP].flags & 0x80) == (i == 0)  # CWR on the first only
        assert pkt[TCP].flags & 0x10 and pkt[TCP].ack == 7
        joined += bytes(pkt[TCP].payload)
        assert len(bytes(pkt[TCP].payload)) == (920 if last else 1400)
    assert joined == PAYLOAD


def test_a_frame_without_payload_and_bad_sizes():
    segments = segment_tcp(super_frame(flags="A", payload=b""), 14, 34, 1400)
    assert isinstance(segments, list) and len(segments) == 1
    assert_checksums(segments[0])
    assert segment_tcp(super_frame(), 14, 34, 0) == "bad_gso"
    big = super_frame(payload=bytes(60000))
    assert segment_tcp(big, 14, 34, 4) == "bad_gso"  # more segments than a gso_size of 8 could make
    small = segment_tcp(super_frame(), 14, 34, 8)  # the smallest a sender can give (MSS 48 less options)
    assert isinstance(small, list) and len(small) == len(PAYLOAD) // 8


def test_tunnel_mode_cuts_a_super_frame_and_encapsulates_each_segment():
    dp = datapath("tunnel")
    frames, dec = dp.handle(super_frame(flags="PA"), 1.0, True, 1400)
    assert dec.verdict == "forward" and not dec.partial_out and len(frames) == 4
    backends = set()
    joined = b""
    for frame in frames:
        pkt = assert_checksums(frame)
        assert pkt[IP].proto == 4 and pkt[IP].len == len(frame) - 14
        inner = pkt[IP].payload
        assert inner.src == CLIENT and inner.dst == VIP and inner[TCP].dport == 80
        backends.add(pkt[IP].dst)
        joined += bytes(inner[TCP].payload)
    assert joined == PAYLOAD and len(backends) == 1  # one flow, one backend
    assert dp.stats.received == 1 and dp.stats.forwarded == 1


def test_tunnel_mode_answers_frag_needed_when_a_segment_would_not_fit():
    dp = datapath("tunnel")
    frames, dec = dp.handle(super_frame(flags="PA"), 1.0, True, 1460)  # 1460 + 40 + 20 > 1500
    assert dec.verdict == "reply" and len(frames) == 1
    pkt = assert_checksums(frames[0])
    assert pkt[ICMP].type == 3 and pkt[ICMP].code == 4 and pkt[ICMP].nexthopmtu == 1480
    assert pkt[IP].dst == CLIENT and pkt[IPerror].src == CLIENT


def test_udp_gso_cannot_be_tunnelled_but_passes_in_nat():
    from tests.frames import udp

    frames, dec = datapath("tunnel").handle(client_frame(udp(), payload=b"u" * 3000), 1.0, True, 1400)
    assert (frames, dec.reason) == ([], "gso_unsupported")
    frames, dec = datapath("nat").handle(super_frame(flags="A"), 1.0, True, 1400)
    assert dec.verdict == "forward" and dec.partial_out and len(frames) == 1  # the kernel cuts it
