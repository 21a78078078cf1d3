"""Golden packet tests, Katran style: scapy-built input, the data path, scapy-checked output."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from pktlb.lab.addressing import mac_for_ip
from tests.frames import (
    BACKENDS,
    CLIENT,
    GW_MAC,
    LB,
    LB_MAC,
    SNAT,
    VIP,
    assert_checksums,
    backend_frame,
    client_frame,
    datapath,
    tcp,
    udp,
)


def forward_one(dp, frame, now=1.0, partial=False):
    frames, dec = dp.handle(frame, now, partial)
    assert dec.verdict == "forward", dec
    assert len(frames) == 1
    return frames[0], dec


@pytest.mark.parametrize("payload", [b"", b"GET / HTTP/1.0\r\n\r\n"])
def test_nat_inbound_tcp_rewrites_destination_ttl_and_checksums(payload):
    dp = datapath("nat")
    out, dec = forward_one(dp, client_frame(tcp(), payload=payload))
    pkt = assert_checksums(out)
    be = BACKENDS[dec.backend]
    assert (pkt[IP].src, pkt[IP].dst, pkt[IP].ttl) == (CLIENT, be, 63)
    assert (pkt[TCP].sport, pkt[TCP].dport, pkt[TCP].flags) == (40000, 80, "S")
    assert (pkt[Ether].dst, pkt[Ether].src) == (mac_for_ip(be), LB_MAC)
    assert bytes(pkt[TCP].payload) == payload
    assert (dec.mode, dec.reason, dec.service, dec.flow_hit) == ("nat", "inbound", "web", False)


def test_nat_reply_is_rewritten_back_to_the_vip():
    dp = datapath("nat")
    _, dec = forward_one(dp, client_frame(tcp()))
    be = BACKENDS[dec.backend]
    out, rdec = forward_one(dp, backend_frame(TCP(sport=80, dport=40000, flags="SA"), be, payload=b"hello"))
    pkt = assert_checksums(out)
    assert (pkt[IP].src, pkt[IP].dst, pkt[TCP].sport, pkt[TCP].dport) == (VIP, CLIENT, 80, 40000)
    assert (pkt[Ether].dst, pkt[Ether].src, pkt[IP].ttl) == (GW_MAC, LB_MAC, 63)
    assert (rdec.reason, rdec.backend, rdec.flow_hit) == ("outbound", dec.backend, True)


def test_nat_udp_port_translation_both_ways():
    dp = datapath("nat")
    out, dec = forward_one(dp, client_frame(udp(), payload=b"query"))
    pkt = assert_checksums(out)
    assert (pkt[UDP].dport, pkt[IP].dst) == (5353, BACKENDS[dec.backend])
    back, _ = forward_one(dp, backend_frame(UDP(sport=5353, dport=40000), BACKENDS[dec.backend], payload=b"answer"))
    pkt = assert_checksums(back)
    assert (pkt[IP].src, pkt[UDP].sport, pkt[UDP].dport) == (VIP, 53, 40000)


def test_udp_without_checksum_stays_without_checksum():
    dp = datapath("nat")
    frame = client_frame(UDP(sport=40000, dport=53, chksum=0), payload=b"q")
    out, _ = forward_one(dp, frame)
    assert Ether(bytes(out))[UDP].chksum == 0


def test_fullnat_rewrites_source_and_destination_and_reverses_replies():
    dp = datapath("fullnat")
    out, dec = forward_one(dp, client_frame(tcp(), payload=b"x" * 10))
    pkt = assert_checksums(out)
    be = BACKENDS[dec.backend]
    assert (pkt[IP].src, pkt[IP].dst, pkt[TCP].dport) == (SNAT, be, 80)
    sport = pkt[TCP].sport
    assert 20000 <= sport <= 20003
    back, rdec = forward_one(dp, backend_frame(TCP(sport=80, dport=sport, flags="SA"), be, dst=SNAT, payload=b"ok"))
    pkt = assert_checksums(back)
    assert (pkt[IP].src, pkt[IP].dst, pkt[TCP].sport, pkt[TCP].dport) == (VIP, CLIENT, 80, 40000)
    assert pkt[Ether].dst == GW_MAC and rdec.reason == "outbound"


def test_fullnat_udp_both_ways():
    dp = datapath("fullnat")
    out, dec = forward_one(dp, client_frame(udp(), payload=b"q"))
    pkt = assert_checksums(out)
    back, _ = forward_one(dp, backend_frame(UDP(sport=5353, dport=pkt[UDP].sport), BACKENDS[dec.backend], dst=SNAT))
    pkt = assert_checksums(back)
    assert (pkt[IP].dst, pkt[UDP].dport, pkt[UDP].sport) == (CLIENT, 40000, 53)


def test_fullnat_ports_are_per_flow_and_exhaust_with_a_named_drop():
    dp = datapath("fullnat")
    ports = set()
    for i in range(4):
        out, _ = forward_one(dp, client_frame(tcp(sport=41000 + i)))
        ports.add(Ether(bytes(out))[TCP].sport)
    assert ports == {20000, 20001, 20002, 20003}
    frames, dec = dp.handle(client_frame(tcp(sport=42000)), 1.0)
    assert (frames, dec.verdict, dec.reason) == ([], "drop", "snat_ports_exhausted")


def test_tunnel_prepends_a_correct_outer_header_and_leaves_the_inner_packet_alone():
    dp = datapath("tunnel")
    frame = client_frame(tcp(), payload=b"data")
    inner_before = bytes(frame[14:])
    out, dec = forward_one(dp, frame)
    pkt = assert_checksums(out)
    outer = pkt[IP]
    assert (outer.src, outer.dst, outer.proto, outer.ttl) == (LB, BACKENDS[dec.backend], 4, 64)
    assert outer.flags == "DF" and outer.len == len(inner_before) + 20
    assert bytes(out[34:]) == inner_before
    assert pkt[Ether].dst == mac_for_ip(BACKENDS[dec.backend])


def test_tunnel_outer_id_changes_and_df_follows_the_inner_packet():
    dp = datapath("tunnel")
    a, _ = forward_one(dp, client_frame(tcp(), flags="DF"))
    b, _ = forward_one(dp, client_frame(tcp(sport=40001), flags=0))
    pa, pb = assert_checksums(a), assert_checksums(b)
    assert pa[IP].id != pb[IP].id
    assert pa[IP].flags == "DF" and pb[IP].flags == 0


def test_tunnel_too_big_with_df_answers_fragmentation_needed_with_the_usable_mtu():
    dp = datapath("tunnel")
    frame = client_frame(tcp(flags="A"), payload=b"z" * (1500 - 40))
    frames, dec = dp.handle(frame, 1.0)
    assert (dec.verdict, dec.reason) == ("reply", "frag_needed_icmp_sent")
    pkt = assert_checksums(frames[0])
    assert (pkt[IP].src, pkt[IP].dst) == (LB, CLIENT)
    assert (pkt[ICMP].type, pkt[ICMP].code, pkt[ICMP].nexthopmtu) == (3, 4, 1480)
    assert pkt[Ether].dst == GW_MAC
    quoted = pkt[ICMP].payload
    assert quoted.src == CLIENT and quoted.dst == VIP


def test_tunnel_too_big_without_df_is_dropped_by_name():
    dp = datapath("tunnel")
    frames, dec = dp.handle(client_frame(tcp(flags="A"), payload=b"z" * 1460, flags=0), 1.0)
    assert (frames, dec.reason) == ([], "too_big")


def test_tunnel_fits_exactly_at_mtu_minus_20():
    dp = datapath("tunnel")
    out, _ = forward_one(dp, client_frame(tcp(flags="A"), payload=b"z" * (1480 - 40)))
    assert len(out) == 14 + 1500


def test_dsr_changes_only_the_destination_and_source_macs():
    dp = datapath("dsr")
    frame = client_frame(tcp(), payload=b"abc")
    ip_before = bytes(frame[14:])
    out, dec = forward_one(dp, frame)
    assert bytes(out[14:]) == ip_before
    pkt = assert_checksums(out)
    assert (pkt[Ether].dst, pkt[Ether].src) == (mac_for_ip(BACKENDS[dec.backend]), LB_MAC)


def test_a_flow_keeps_its_backend():
    dp = datapath("nat")
    first = forward_one(dp, client_frame(tcp()))[1]
    for flags in ("A", "PA", "A", "FA"):
        dec = forward_one(dp, client_frame(tcp(flags=flags)))[1]
        assert dec.backend == first.backend and dec.flow_hit


def test_ip_options_are_carried_and_the_l4_header_found():
    from scapy.layers.inet import IPOption_RR

    dp = datapath("nat")
    frame = client_frame(tcp(), options=[IPOption_RR(routers=["0.0.0.0"] * 2)])
    assert frame[14] & 15 > 5
    out, dec = forward_one(dp, frame)
    pkt = assert_checksums(out)
    assert pkt[IP].ihl > 5 and pkt[TCP].dport == 80 and pkt[IP].dst == BACKENDS[dec.backend]


def test_partial_checksum_is_updated_with_the_pseudo_header_rule():
    """An unfinished TCP checksum holds the pseudo-header sum; after DNAT it must hold the new one."""
    from pktlb.core.checksum import pseudo_header_sum
    from pktlb.core.packet.addr import ip_to_int

    dp = datapath("nat")
    frame = client_frame(tcp(), payload=b"p" * 7)
    seg_len = len(frame) - 34
    partial = pseudo_header_sum(ip_to_int(CLIENT), ip_to_int(VIP), 6, seg_len)
    frame[50:52] = partial.to_bytes(2, "big")
    frames, dec = dp.handle(frame, 1.0, partial=True)
    out = frames[0]
    be = ip_to_int(BACKENDS[dec.backend])
    assert int.from_bytes(out[50:52], "big") == pseudo_header_sum(ip_to_int(CLIENT), be, 6, seg_len)
    assert dec.partial_out
    # The kernel finishes it as the complement of the sum over the segment: scapy agrees.
    from pktlb.core.checksum import checksum

    out[50:52] = checksum(out[34:]).to_bytes(2, "big")
    assert_checksums(out)


def test_partial_checksum_is_finished_in_software_for_the_tunnel():
    from pktlb.core.checksum import pseudo_header_sum
    from pktlb.core.packet.addr import ip_to_int

    dp = datapath("tunnel")
    frame = client_frame(tcp(), payload=b"q" * 9)
    frame[50:52] = pseudo_header_sum(ip_to_int(CLIENT), ip_to_int(VIP), 6, len(frame) - 34).to_bytes(2, "big")
    frames, dec = dp.handle(frame, 1.0, partial=True)
    assert not dec.partial_out
    assert_checksums(frames[0])
