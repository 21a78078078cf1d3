"""pktlb is not an open relay: it forwards only configured VIP/port/protocol traffic, only to configured
backends, and sends nothing to the outside with a source it does not own.

Every frame the engine emits is one of three things:
  * toward a backend (Ethernet destination a backend's MAC): the IP destination is that backend's
    address (the outer one for the tunnel; the VIP itself in dsr, where only the MAC changes); the IP
    source is the client's own (nat, dsr, tunnel inner), the SNAT address (fullnat) or the LB (tunnel outer);
  * toward the clients (the gateway's MAC), rewritten: the IP source is the VIP;
  * an answer the LB makes itself (echo reply, time exceeded, fragmentation needed): to the sender of
    the frame only (its MAC and address), from the VIP or the LB's address.
Property tests check that for hostile frames from ``fuzz_frames``' strategies; example tests
check the cases by name: backends' real addresses, the LB, unknown ports and protocols, spoofed
sources, replies from a wrong port or host.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.layers.l2 import Ether

from pktlb.core import decision as d
from pktlb.core.packet.addr import ip_to_int, mac_to_bytes
from pktlb.lab.addressing import mac_for_ip
from tests.frames import (
    BACKENDS,
    CLIENT,
    GW_MAC,
    LB,
    LB_MAC,
    SNAT,
    VIP,
    backend_frame,
    client_frame,
    datapath,
    tcp,
    udp,
)
from tests.unit.fuzz_frames import (
    BACKEND_MACS,
    EXAMPLES,
    MODES,
    draw_reply_to_open_flow,
    ethernet_frame,
    fresh_datapath,
    ipv4_packet,
    run_frame,
)

VIP_I, LB_I, SNAT_I, CLIENT_I = ip_to_int(VIP), ip_to_int(LB), ip_to_int(SNAT), ip_to_int(CLIENT)
BACKEND_ADDRS = {name: ip_to_int(a) for name, a in BACKENDS.items()}
MAC_TO_BACKEND = {mac: name for name, mac in BACKEND_MACS.items()}
GW_MAC_B = mac_to_bytes(GW_MAC)


def _addr(frame: bytes | bytearray, off: int) -> int:
    return int.from_bytes(frame[off:off + 4], "big")


def assert_not_relayed(mode: str, inp: bytes, frames: list[bytearray], dec: d.Decision) -> None:
    """Every emitted frame goes to a backend, to the clients from the VIP, or back to the sender."""
    if not frames:
        return
    in_src_mac, in_src, in_dst = bytes(inp[6:12]), _addr(inp, 26), _addr(inp, 30)
    # Only traffic to an address the LB owns, or a reply from a backend, can make it emit anything.
    assert in_dst in (VIP_I, SNAT_I) or in_src in BACKEND_ADDRS.values(), (mode, dec)
    for out in frames:
        eth_dst, src, dst = bytes(out[0:6]), _addr(out, 26), _addr(out, 30)
        made_here = dec.reason in (d.ECHO_REPLY, d.TIME_EXCEEDED, d.FRAG_NEEDED, "ttl_expired")
        if made_here:
            assert (eth_dst, dst) == (in_src_mac, in_src), ("LB answers go to the sender only", dec)
            assert src in (VIP_I, LB_I), dec
        elif eth_dst in MAC_TO_BACKEND:
            name = MAC_TO_BACKEND[eth_dst]
            assert dec.reason in (d.INBOUND, d.ICMP_ERROR_TO_BACKEND) and dec.backend == name, dec
            if mode == "tunnel":
                assert (out[23], src, dst) == (4, LB_I, BACKEND_ADDRS[name]), "outer header LB -> backend"
                assert (_addr(out, 46), _addr(out, 50)) == (in_src, VIP_I), "inner packet untouched"
            elif mode == "dsr":
                assert (src, dst) == (in_src, VIP_I), "dsr changes only the MAC"
            else:
                assert dst == BACKEND_ADDRS[name]
                assert src == (SNAT_I if mode == "fullnat" else in_src)
        else:
            assert eth_dst == GW_MAC_B, ("a frame to an unknown MAC", dec)
            assert dec.reason in (d.OUTBOUND, d.ICMP_ERROR_TO_CLIENT) and mode in ("nat", "fullnat"), dec
            assert src == VIP_I, "to the outside only from the VIP"


# -- properties ------------------------------------------------------------------------------------
RELAY = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.data_too_large])


@RELAY
@given(st.lists(ethernet_frame(), min_size=1, max_size=6), st.sampled_from(MODES))
def test_hostile_frames_are_never_relayed(frames, mode):
    dp = fresh_datapath(mode)
    for frame, clean in frames:
        inp = bytes(frame)
        out, dec = run_frame(dp, frame, clean)
        if len(inp) >= 34 and inp[12:14] == b"\x08\x00":
            assert_not_relayed(mode, inp, out, dec)
        else:
            assert not out


@RELAY
@given(st.sampled_from(MODES), st.sampled_from(sorted(BACKENDS)), st.data())
def test_frames_claiming_to_come_from_a_backend_are_never_relayed(mode, name, data):
    dp = fresh_datapath(mode)
    dst = data.draw(st.sampled_from([CLIENT_I, SNAT_I, VIP_I, LB_I, *BACKEND_ADDRS.values()]))
    packet, clean = data.draw(ipv4_packet(src=BACKEND_ADDRS[name], dst=dst, proto=data.draw(st.sampled_from([6, 17, 1]))))
    src_mac = data.draw(st.sampled_from([BACKEND_MACS[name], GW_MAC_B]))
    frame = bytearray(mac_to_bytes(LB_MAC) + src_mac + b"\x08\x00") + packet
    inp = bytes(frame)
    out, dec = run_frame(dp, frame, clean)
    if len(packet) >= 20:
        assert_not_relayed(mode, inp, out, dec)


@RELAY
@given(st.sampled_from(MODES), st.data())
def test_replies_to_open_flows_go_out_only_from_the_vip(mode, data):
    dp = fresh_datapath(mode)
    for _ in range(data.draw(st.integers(1, 4))):
        frame, clean = draw_reply_to_open_flow(data, dp)
        inp = bytes(frame)
        out, dec = run_frame(dp, frame, clean)
        if len(inp) >= 34:
            assert_not_relayed(mode, inp, out, dec)
        if out and dec.reason == d.OUTBOUND:
            l4 = 14 + (out[0][14] & 15) * 4
            assert int.from_bytes(out[0][l4:l4 + 2], "big") in (80, 53), "replies leave from the service port"


@RELAY
@given(st.sampled_from(MODES), st.sampled_from([VIP, SNAT, LB]), st.sampled_from([6, 17, 1]), st.data())
def test_spoofed_lb_sources_to_the_vip_are_dropped(mode, source, proto, data):
    if source == SNAT and mode != "fullnat":
        source = LB  # SNAT is an LB-owned address only in full-NAT
    dp = fresh_datapath(mode)
    packet, clean = data.draw(ipv4_packet(src=ip_to_int(source), dst=VIP_I, proto=proto))
    frame = bytearray(mac_to_bytes(LB_MAC) + GW_MAC_B + b"\x08\x00") + packet
    out, dec = run_frame(dp, frame, clean)
    assert out == [] and dec.verdict == d.DROP


# -- examples --------------------------------------------------------------------------------------
def nothing_sent(dp, frame, reason: str | None = None) -> d.Decision:
    frames, dec = dp.handle(bytearray(frame), 1.5)
    assert frames == [] and dec.verdict == d.DROP, dec
    if reason:
        assert dec.reason == reason, dec
    return dec


@pytest.mark.parametrize("mode", MODES)
def test_traffic_to_backends_real_addresses_and_to_the_lb_is_ignored(mode):
    dp = datapath(mode)
    for address in BACKENDS.values():
        nothing_sent(dp, client_frame(tcp(), dst=address), "not_for_vip")
        nothing_sent(dp, client_frame(udp(dport=5353), dst=address), "not_for_vip")
        nothing_sent(dp, bytes(Ether(src=GW_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=address) / ICMP()), "not_for_vip")
    nothing_sent(dp, client_frame(tcp(), dst=LB), "lb_local")
    nothing_sent(dp, client_frame(tcp(), dst="203.0.113.7"), "not_for_vip")
    assert dp.stats.forwarded == 0 and len(dp.flows) == 0


@pytest.mark.parametrize("mode", MODES)
def test_only_configured_ports_and_protocols_on_the_vip(mode):
    dp = datapath(mode)
    for frame in (client_frame(tcp(dport=443)), client_frame(tcp(dport=53)), client_frame(udp(dport=80)),
                  client_frame(udp(dport=5353))):
        nothing_sent(dp, frame, "no_service")
    gre = bytes(Ether(src=GW_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, proto=47) / b"gre!")
    nothing_sent(dp, gre, "unsupported_protocol")
    ipip = bytes(Ether(src=GW_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, proto=4) / IP(src=CLIENT, dst=LB) / TCP())
    nothing_sent(dp, ipip, "unsupported_protocol")
    # The configured ones are forwarded (so the drops above are about the port, not the frame).
    assert dp.handle(client_frame(tcp()), 1.0)[1].verdict == d.FORWARD
    assert dp.handle(client_frame(udp()), 1.0)[1].verdict == d.FORWARD


@pytest.mark.parametrize("mode", MODES)
def test_spoofed_sources_are_dropped(mode):
    dp = datapath(mode)
    own = [VIP, LB] + ([SNAT] if mode == "fullnat" else [])
    for source in own:
        nothing_sent(dp, client_frame(tcp(), src=source), "spoofed_source")
        nothing_sent(dp, client_frame(udp(), src=source), "spoofed_source")
        nothing_sent(dp, bytes(Ether(src=GW_MAC, dst=LB_MAC) / IP(src=source, dst=VIP) / ICMP()), "spoofed_source")


def test_nat_replies_only_from_a_backends_service_port():
    dp = datapath("nat")
    dp.handle(client_frame(tcp()), 1.0)
    for address in BACKENDS.values():
        nothing_sent(dp, backend_frame(TCP(sport=8080, dport=40000, flags="SA"), address), "not_for_vip")
        nothing_sent(dp, backend_frame(TCP(sport=22, dport=40000), address), "not_for_vip")
        nothing_sent(dp, backend_frame(UDP(sport=53, dport=40000), address), "not_for_vip")  # dns backends use 5353
    nothing_sent(dp, backend_frame(TCP(sport=80, dport=40000), "198.18.0.99"), "not_for_vip")
    frames, dec = dp.handle(backend_frame(TCP(sport=80, dport=40000, flags="SA"), BACKENDS["be1"]), 2.0)
    assert dec.reason == d.OUTBOUND
    pkt = Ether(bytes(frames[0]))
    assert (pkt[IP].src, pkt[TCP].sport, pkt[Ether].dst) == (VIP, 80, GW_MAC)


def test_fullnat_replies_only_from_the_flows_backend_and_port():
    dp = datapath("fullnat")
    frames, dec = dp.handle(client_frame(tcp()), 1.0)
    port = Ether(bytes(frames[0]))[TCP].sport
    own = BACKENDS[dec.backend]
    others = [a for n, a in BACKENDS.items() if n != dec.backend] + ["198.18.0.99", CLIENT]
    for address in others:
        nothing_sent(dp, backend_frame(TCP(sport=80, dport=port), address, dst=SNAT), "no_flow")
    for sport in (22, 81, 20000, 40000):
        nothing_sent(dp, backend_frame(TCP(sport=sport, dport=port), own, dst=SNAT), "no_flow")
    nothing_sent(dp, backend_frame(TCP(sport=80, dport=port + 1), own, dst=SNAT), "no_flow")
    nothing_sent(dp, backend_frame(UDP(sport=80, dport=port), own, dst=SNAT), "no_flow")
    frames, dec = dp.handle(backend_frame(TCP(sport=80, dport=port, flags="SA"), own, dst=SNAT), 2.0)
    assert dec.reason == d.OUTBOUND
    pkt = Ether(bytes(frames[0]))
    assert (pkt[IP].src, pkt[IP].dst, pkt[TCP].sport, pkt[TCP].dport) == (VIP, CLIENT, 80, 40000)


def test_icmp_errors_from_backends_are_relayed_only_about_their_own_flows():
    dp = datapath("nat")
    be = BACKENDS["be2"]
    quote = IPerror(src=CLIENT, dst=be, proto=17) / UDPerror(sport=40000, dport=5353)
    # addressed to someone other than the client the error is about: not relayed
    wrong = Ether(src=mac_for_ip(be), dst=LB_MAC) / IP(src=be, dst="203.0.113.7") / ICMP(type=3, code=3) / quote
    nothing_sent(dp, bytes(wrong), "not_for_vip")
    # about another backend's flow
    other = IPerror(src=CLIENT, dst=BACKENDS["be1"], proto=17) / UDPerror(sport=40000, dport=5353)
    nothing_sent(dp, bytes(Ether(src=mac_for_ip(be), dst=LB_MAC) / IP(src=be, dst=CLIENT) / ICMP(type=3) / other))

    dp = datapath("fullnat")
    frames, dec = dp.handle(client_frame(tcp()), 1.0)
    port = Ether(bytes(frames[0]))[TCP].sport
    own = BACKENDS[dec.backend]
    stranger = next(a for n, a in BACKENDS.items() if n != dec.backend)
    quote = IPerror(src=SNAT, dst=stranger, proto=6) / TCPerror(sport=port, dport=80)
    err = Ether(src=mac_for_ip(own), dst=LB_MAC) / IP(src=own, dst=SNAT) / ICMP(type=3, code=4) / quote
    nothing_sent(dp, bytes(err), "icmp_no_flow")
    quote = IPerror(src=SNAT, dst=own, proto=6) / TCPerror(sport=port, dport=80)
    err = Ether(src=mac_for_ip(own), dst=LB_MAC) / IP(src=own, dst=SNAT) / ICMP(type=3, code=4) / quote
    frames, dec = dp.handle(bytearray(bytes(err)), 2.0)
    assert dec.reason == d.ICMP_ERROR_TO_CLIENT
    assert_not_relayed("fullnat", bytes(err), frames, dec)


@pytest.mark.parametrize("mode", ["dsr", "tunnel"])
def test_dsr_and_tunnel_keep_the_clients_source_as_designed(mode):
    dp = datapath(mode)
    inp = client_frame(tcp())
    frames, dec = dp.handle(bytearray(inp), 1.0)
    assert dec.reason == d.INBOUND
    assert_not_relayed(mode, bytes(inp), frames, dec)
    pkt = Ether(bytes(frames[0]))
    inner = pkt[IP].payload if mode == "tunnel" else pkt[IP]
    assert (inner.src, inner.dst) == (CLIENT, VIP)


@pytest.mark.parametrize("ttl", [0, 1])
@pytest.mark.parametrize("mode", ["nat", "fullnat"])
def test_icmp_errors_with_an_expiring_ttl_are_not_relayed(mode, ttl):
    """Regression: TTL 0 used to raise inside the relay (internal_error); TTL 1 left with TTL 0."""
    dp = datapath(mode)
    dp.handle(client_frame(tcp()), 1.0)
    err = ICMP(type=3, code=4, nexthopmtu=1400) / IPerror(src=VIP, dst=CLIENT, proto=6) / \
        TCPerror(sport=80, dport=40000, flags="A")
    frame = Ether(src=GW_MAC, dst=LB_MAC) / IP(src="198.18.1.1", dst=VIP, ttl=ttl) / err
    nothing_sent(dp, bytes(frame), "ttl_expired")
