"""Every drop reason, TTL handling and ICMP (echo, errors relayed by the flow they quote)."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from pktlb.core.decision import DROP_REASONS
from pktlb.core.snapshot import DOWN, build_snapshot
from pktlb.lab.addressing import lab_macs, mac_for_ip
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
)


def dropped(dp, frame, reason, now=1.0):
    frames, dec = dp.handle(bytearray(frame), now)
    assert (dec.verdict, dec.reason) == ("drop", reason), dec
    assert reason in DROP_REASONS
    return frames, dec


def good() -> bytearray:
    return client_frame(tcp())


def test_link_and_ip_layer_drops():
    dp = datapath("nat")
    dropped(dp, b"\x00" * 10, "truncated")
    dropped(dp, bytes(Ether(dst=LB_MAC) / ARP()), "not_ipv4")
    dropped(dp, bytes(Ether(dst=LB_MAC) / IPv6(dst="2001:db8::1") / TCP()), "not_ipv4")
    dropped(dp, bytes(Ether(dst=LB_MAC) / Dot1Q(vlan=5) / IP(dst=VIP) / TCP(dport=80)), "vlan_tagged")
    dropped(dp, client_frame(tcp(), dst_mac="02:00:00:00:00:99"), "not_our_mac")
    dropped(dp, good()[:30], "truncated")
    frame = good()
    frame[14] = 0x65
    dropped(dp, frame, "bad_ip_version")
    frame = good()
    frame[14] = 0x44
    dropped(dp, frame, "bad_header_length")
    frame = good()
    frame[14] = 0x4F
    dropped(dp, frame, "bad_header_length")
    frame = good()
    frame[16:18] = (2000).to_bytes(2, "big")
    dropped(dp, frame, "bad_total_length")
    frame = good()
    frame[16:18] = (10).to_bytes(2, "big")
    dropped(dp, frame, "bad_total_length")
    frame = good()
    frame[24] ^= 0xFF
    dropped(dp, frame, "bad_ip_checksum")


def test_classification_drops():
    dp = datapath("nat")
    dropped(dp, client_frame(tcp(), dst="198.19.0.200"), "not_for_vip")
    dropped(dp, client_frame(tcp(dport=443)), "no_service")
    dropped(dp, bytes(Ether(src=GW_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, proto=47) / b"gre!"), "unsupported_protocol")
    dropped(dp, client_frame(tcp(), src=VIP), "spoofed_source")
    dropped(dp, client_frame(tcp(), src=LB), "spoofed_source")
    dropped(dp, client_frame(tcp(), dst=LB), "lb_local")
    dropped(dp, client_frame(tcp(), dst=BACKENDS["be1"]), "not_for_vip")


def test_fragments_are_recognised_and_dropped_by_name():
    dp = datapath("nat")
    dropped(dp, client_frame(tcp(), flags="MF"), "fragment")
    frame = bytes(Ether(src=GW_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, frag=100, proto=6) / (b"x" * 24))
    dropped(dp, frame, "fragment")


def test_bad_l4_headers():
    dp = datapath("nat")
    short_tcp = bytes(Ether(src=GW_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, proto=6) / b"\x9c\x40\x00\x50")
    dropped(dp, short_tcp, "bad_l4_header")
    frame = client_frame(tcp())
    frame[46] = 0x30  # data offset 3 words
    dropped(dp, frame, "bad_l4_header")
    bad_udp = client_frame(UDP(sport=1, dport=53, len=200))
    dropped(dp, bad_udp, "bad_l4_header")


def test_no_live_backend_and_backend_down_policies():
    dp = datapath("nat")
    cfg = dp.config
    down_all = {("web", n): DOWN for n in BACKENDS}
    dp.swap(build_snapshot(cfg, states=down_all, generation=2, macs=lab_macs(cfg)))
    dropped(dp, good(), "no_live_backend")

    dp = datapath("nat", on_down="drop")
    _, dec = dp.handle(good(), 1.0)
    dp.swap(build_snapshot(dp.config, states={("web", dec.backend): DOWN}, generation=2, macs=lab_macs(dp.config)))
    dropped(dp, client_frame(tcp(flags="A")), "backend_down")


def test_reschedule_moves_a_flow_off_a_down_backend():
    dp = datapath("nat")
    _, first = dp.handle(good(), 1.0)
    dp.swap(build_snapshot(dp.config, states={("web", first.backend): DOWN}, generation=2, macs=lab_macs(dp.config)))
    frames, dec = dp.handle(client_frame(tcp(flags="A")), 2.0)
    assert dec.verdict == "forward" and dec.backend != first.backend
    assert dp.flows.lookup(dec.flow_key, 2.0).backend == dec.backend


def test_fullnat_reply_without_a_flow_and_from_the_wrong_backend():
    dp = datapath("fullnat")
    dropped(dp, backend_frame(TCP(sport=80, dport=20000), BACKENDS["be1"], dst=SNAT), "no_flow")
    frames, dec = dp.handle(good(), 1.0)
    port = Ether(bytes(frames[0]))[TCP].sport
    other = next(a for n, a in BACKENDS.items() if n != dec.backend)
    dropped(dp, backend_frame(TCP(sport=80, dport=port), other, dst=SNAT), "no_flow")


@pytest.mark.parametrize("mode", ["nat", "fullnat"])
def test_ttl_1_through_a_nat_lb_gets_time_exceeded(mode):
    dp = datapath(mode)
    frames, dec = dropped(dp, client_frame(tcp(), ttl=1), "ttl_expired")
    pkt = assert_checksums(frames[0])
    assert (pkt[IP].src, pkt[IP].dst, pkt[ICMP].type, pkt[ICMP].code) == (LB, CLIENT, 11, 0)
    assert pkt[Ether].dst == GW_MAC
    assert pkt[IPerror].dst == VIP


@pytest.mark.parametrize("mode", ["dsr", "tunnel"])
def test_ttl_1_passes_through_l2_and_tunnel_modes_but_ttl_0_does_not(mode):
    dp = datapath(mode)
    frames, dec = dp.handle(client_frame(tcp(), ttl=1), 1.0)
    assert dec.verdict == "forward"
    dropped(dp, client_frame(tcp(sport=40001), ttl=0), "ttl_expired")


def test_echo_request_to_the_vip_is_answered_by_the_lb():
    dp = datapath("dsr")
    frame = bytes(Ether(src=GW_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, ttl=60) / ICMP(id=7, seq=3) / b"ping")
    frames, dec = dp.handle(bytearray(frame), 1.0)
    assert (dec.verdict, dec.reason) == ("reply", "echo_reply")
    pkt = assert_checksums(frames[0])
    assert (pkt[IP].src, pkt[IP].dst, pkt[ICMP].type, pkt[ICMP].id, pkt[ICMP].seq) == (VIP, CLIENT, 0, 7, 3)
    assert (pkt[Ether].dst, pkt[Ether].src, bytes(pkt[ICMP].payload)) == (GW_MAC, LB_MAC, b"ping")


def test_other_icmp_to_the_vip():
    dp = datapath("nat")
    dropped(dp, bytes(Ether(src=GW_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP) / ICMP(type=13)), "icmp_unsupported")
    dropped(dp, bytes(Ether(src=GW_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP) / ICMP(type=3, code=4) / b"abc"),
            "icmp_malformed")
    err = ICMP(type=3, code=4, nexthopmtu=1400) / IPerror(src=VIP, dst=CLIENT) / TCPerror(sport=80, dport=45555)
    dropped(dp, bytes(Ether(src=GW_MAC, dst=LB_MAC) / IP(src="198.18.1.1", dst=VIP) / err), "icmp_no_flow")


def _frag_needed_for(client_port: int):
    err = ICMP(type=3, code=4, nexthopmtu=1400) / IPerror(src=VIP, dst=CLIENT, proto=6) / \
        TCPerror(sport=80, dport=client_port, flags="A")
    return bytearray(bytes(Ether(src=GW_MAC, dst=LB_MAC) / IP(src="198.18.1.1", dst=VIP) / err))


@pytest.mark.parametrize("mode", ["nat", "fullnat", "dsr", "tunnel"])
def test_frag_needed_about_a_flow_reaches_that_flows_backend(mode):
    dp = datapath(mode)
    frames, first = dp.handle(good(), 1.0)
    snat_port = Ether(bytes(frames[0]))[TCP].sport
    frames, dec = dp.handle(_frag_needed_for(40000), 2.0)
    assert (dec.verdict, dec.reason, dec.backend) == ("forward", "icmp_error_to_backend", first.backend)
    pkt = assert_checksums(frames[0])
    be = BACKENDS[first.backend]
    if mode == "tunnel":
        assert (pkt[IP].proto, pkt[IP].dst) == (4, be)
        return
    assert pkt[Ether].dst == mac_for_ip(be)
    if mode == "dsr":
        assert pkt[IP].dst == VIP and pkt[IPerror].src == VIP
    elif mode == "nat":
        assert (pkt[IP].dst, pkt[IPerror].src, pkt[TCPerror].sport, pkt[IPerror].dst) == (be, be, 80, CLIENT)
    else:
        assert (pkt[IP].dst, pkt[IP].src, pkt[IPerror].src, pkt[IPerror].dst, pkt[TCPerror].dport) == \
            (be, SNAT, be, SNAT, snat_port)


def test_icmp_error_from_a_nat_backend_reaches_the_client_as_from_the_vip():
    dp = datapath("nat")
    be = BACKENDS["be2"]
    err = ICMP(type=3, code=3) / IPerror(src=CLIENT, dst=be, proto=17) / UDP(sport=40000, dport=5353)
    frame = bytes(Ether(src="02:00:c6:12:00:0c", dst=LB_MAC) / IP(src=be, dst=CLIENT) / err)
    frames, dec = dp.handle(bytearray(frame), 1.0)
    assert (dec.verdict, dec.reason) == ("forward", "icmp_error_to_client")
    pkt = assert_checksums(frames[0])
    assert (pkt[IP].src, pkt[IP].dst, pkt[IPerror].dst, pkt[Ether].dst) == (VIP, CLIENT, VIP, GW_MAC)
    assert pkt[IPerror].payload.dport == 53


def test_counters_add_up():
    dp = datapath("nat")
    dp.handle(good(), 1.0)
    dp.handle(client_frame(tcp(dport=443)), 1.0)
    dp.handle(bytearray(b"\x00" * 5), 1.0)
    s = dp.stats
    assert (s.received, s.forwarded, s.dropped) == (3, 1, 2) and s.balanced()


def test_a_syn_reusing_a_closed_flows_tuple_is_a_new_flow():
    dp = datapath("nat", scheduler="rr")
    first = dp.handle(client_frame(tcp(flags="S")), 1.0)[1]
    dp.handle(client_frame(tcp(flags="FA")), 1.1)
    again = dp.handle(client_frame(tcp(flags="S")), 1.2)[1]
    assert (first.flow_hit, again.flow_hit) == (False, False)
    assert again.backend != first.backend  # round robin moved on: it really was scheduled again
    retransmit = dp.handle(client_frame(tcp(flags="S")), 1.3)[1]
    assert retransmit.flow_hit and retransmit.backend == again.backend
