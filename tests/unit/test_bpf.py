"""The engine's kernel receive filter, run through a pure-Python classic-BPF interpreter
(``bpf_interpreter.py``; no root, no tcpdump).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from pktlb.adapters import bpf as B
from tests.unit.bpf_interpreter import check, run

# ---------------------------------------------------------------- fixtures

VIP, VIP2, SNAT = "198.18.0.10", "198.18.0.11", "198.18.0.20"
BACKEND, CLIENT, LB_ADDR, OTHER = "198.18.1.2", "198.18.5.5", "198.18.0.1", "198.18.9.9"
MAC = {"src": "02:00:c6:12:05:05", "dst": "02:00:c6:12:00:01"}


def frame(ip_layer) -> bytes:
    return bytes(Ether(**MAC) / ip_layer)


def policy() -> list[B.Insn]:
    return B.build_filter(
        dst_services={("tcp", VIP, 80), ("udp", VIP, 53), ("tcp", VIP2, 443)},
        src_services={("tcp", BACKEND, 8080)},
        dst_addrs=[SNAT],
        icmp_dst_addrs=[LB_ADDR],
        local_addrs=[LB_ADDR],
    )


def kept(program: list[B.Insn], raw: bytes, **meta) -> bool:
    verdict = run(program, raw, **meta)
    return verdict != 0


# ---------------------------------------------------------------- the assembler itself


def test_encodings_match_what_tcpdump_prints_for_ip_and_tcp_dst_port_80():
    # `tcpdump -dd "ip and tcp dst port 80"`, recorded once so this test needs no tcpdump.
    expected = [(0x28, 0, 0, 0x0C), (0x15, 0, 8, 0x800), (0x30, 0, 0, 0x17), (0x15, 0, 6, 0x06),
                (0x28, 0, 0, 0x14), (0x45, 4, 0, 0x1FFF), (0xB1, 0, 0, 0x0E), (0x48, 0, 0, 0x10),
                (0x15, 0, 1, 0x50), (0x06, 0, 0, 0x40000), (0x06, 0, 0, 0)]
    asm = B.Assembler()
    asm.ld(B.BPF_H, 12)
    asm.jump(B.BPF_JEQ, 0x800, None, "drop")
    asm.ld(B.BPF_B, 23)
    asm.jump(B.BPF_JEQ, 6, None, "drop")
    asm.ld(B.BPF_H, 20)
    asm.jump(B.BPF_JSET, 0x1FFF, "drop", None)
    asm.ldx_ihl(14)
    asm.ld_ind(B.BPF_H, 16)
    asm.jump(B.BPF_JEQ, 80, None, "drop")
    asm.ret(0x40000)
    asm.label("drop")
    asm.ret(0)
    assert asm.assemble() == expected


def test_ancillary_loads_encode_like_tcpdump_vlan_and_inbound():
    # `tcpdump -dd vlan` starts with ldb [vlanp]; `tcpdump -dd inbound` with ldh [type].
    program = B.build_filter(dst_addrs=[VIP])
    assert program[0] == (0x28, 0, 0, 0xFFFFF004)
    assert program[3] == (0x30, 0, 0, 0xFFFFF030)


def test_far_conditional_jump_is_refused_and_labels_are_unique():
    asm = B.Assembler()
    asm.jump(B.BPF_JEQ, 1, "far", None)
    for _ in range(300):
        asm.ret(0)
    asm.label("far")
    asm.ret(1)
    with pytest.raises(ValueError, match="out of range"):
        asm.assemble()
    asm.label("far")
    with pytest.raises(ValueError, match="twice"):
        asm.assemble()


def test_pack_round_trips_eight_bytes_per_instruction():
    program = policy()
    raw = B.pack_filters(program)
    assert len(raw) == 8 * len(program)
    assert B.unpack_filters(raw) == program


def test_programs_pass_the_kernel_checker_rules_and_disassemble():
    for program in (policy(), B.build_filter(dst_services={("tcp", VIP, 80)}, accept_vlan=True),
                    B.build_filter()):
        check(program)
        assert len(B.disassemble(program).splitlines()) == len(program)


# ---------------------------------------------------------------- the policy


def test_vip_service_port_is_kept_other_ports_are_dropped():
    program = policy()
    assert kept(program, frame(IP(src=CLIENT, dst=VIP) / TCP(dport=80, flags="S")))
    assert kept(program, frame(IP(src=CLIENT, dst=VIP2) / TCP(dport=443)))
    assert not kept(program, frame(IP(src=CLIENT, dst=VIP) / TCP(dport=81)))
    assert not kept(program, frame(IP(src=CLIENT, dst=VIP2) / TCP(dport=80)))  # port of the other VIP
    assert not kept(program, frame(IP(src=CLIENT, dst=VIP) / UDP(dport=80)))  # right port, wrong protocol


def test_a_kept_frame_is_kept_whole_even_past_64_kib():
    big = frame(IP(src=CLIENT, dst=VIP) / TCP(dport=80)) + bytes(70000)
    assert run(policy(), big) == B.ACCEPT_WHOLE


def test_udp_flood_to_ports_no_service_uses_is_dropped():
    program = policy()
    assert kept(program, frame(IP(src=CLIENT, dst=VIP) / UDP(sport=1234, dport=53)))
    flood_ports = [p for p in range(1, 65536, 97) if p != 53]
    assert not any(kept(program, frame(IP(src=CLIENT, dst=VIP) / UDP(sport=7, dport=p))) for p in flood_ports)


@pytest.mark.parametrize("option_words", [1, 3, 10])
def test_ip_options_move_the_ports_and_are_followed(option_words):
    program = policy()
    options = b"\x01" * (4 * option_words)  # NOPs: IHL = 5 + option_words
    to_80 = IP(src=CLIENT, dst=VIP, options=[options]) / TCP(dport=80)
    assert to_80.ihl is None and IP(bytes(to_80)).ihl == 5 + option_words
    assert kept(program, frame(to_80))
    # Dport 81, but the 2 bytes a fixed 20-byte header offset would read spell 80: must still be dropped.
    decoy = IP(src=CLIENT, dst=VIP, options=[b"\x00\x50" + b"\x01" * (4 * option_words - 2)]) / TCP(dport=81)
    assert not kept(program, frame(decoy))


def test_backend_replies_are_kept_from_the_service_port_only():
    program = policy()
    assert kept(program, frame(IP(src=BACKEND, dst=CLIENT) / TCP(sport=8080, dport=40000, flags="SA")))
    assert not kept(program, frame(IP(src=BACKEND, dst=CLIENT) / TCP(sport=22, dport=40000)))
    assert not kept(program, frame(IP(src=BACKEND, dst=CLIENT) / UDP(sport=8080, dport=40000)))
    assert kept(program, frame(IP(src=BACKEND, dst=CLIENT) / ICMP(type=3, code=3)))  # errors about flows


def test_what_a_backend_sends_to_the_lb_itself_is_left_to_the_lbs_kernel():
    """Health-check replies (TCP, HTTP, ICMP echo) from a NAT backend to the LB's prober, and fragments of
    them, are not the engine's: only frames to the clients are NAT replies."""
    program = policy()
    assert kept(program, frame(IP(src=BACKEND, dst=CLIENT) / TCP(sport=8080, dport=40000, flags="A")))
    assert not kept(program, frame(IP(src=BACKEND, dst=LB_ADDR) / TCP(sport=8080, dport=40000, flags="SA")))
    assert not kept(program, frame(IP(src=BACKEND, dst=LB_ADDR) / UDP(sport=8080, dport=40000)))
    assert not kept(program, frame(IP(src=BACKEND, dst=LB_ADDR, proto=6, frag=9) / (b"z" * 40)))
    # A destination clause still keeps what is addressed to a local address: ICMP to the LB (icmp_dst_addrs
    # here, not in the engine's filter), the SNAT range.
    assert kept(program, frame(IP(src=BACKEND, dst=LB_ADDR) / ICMP(type=0)))
    snat_is_local = B.build_filter(dst_services={("tcp", SNAT, (20000, 59999))}, src_services={("tcp", BACKEND, 80)},
                                   local_addrs=[SNAT, LB_ADDR])
    check(snat_is_local)
    assert kept(snat_is_local, frame(IP(src=BACKEND, dst=SNAT) / TCP(sport=80, dport=20001)))
    assert not kept(snat_is_local, frame(IP(src=BACKEND, dst=SNAT) / TCP(sport=80, dport=19999)))
    assert kept(snat_is_local, frame(IP(src=BACKEND, dst=CLIENT) / TCP(sport=80, dport=19999)))
    # Without local addresses the old policy holds (the cut is emitted only when asked for).
    assert kept(B.build_filter(src_services={("tcp", BACKEND, 80)}), frame(IP(src=BACKEND, dst=LB_ADDR) / TCP(sport=80)))


def test_the_engines_filter_drops_health_check_replies_to_the_lb_and_keeps_nat_replies():
    from pktlb.adapters.configfile import load_config
    from pktlb.core.snapshot import build_snapshot
    from pktlb.daemon.filter import engine_filter_program

    program = engine_filter_program(build_snapshot(load_config("examples/nat.toml")))
    check(program)
    be, lb, client = "198.18.0.11", "198.18.0.2", "198.18.1.10"
    assert kept(program, frame(IP(src=client, dst="198.19.0.100") / TCP(sport=40000, dport=80, flags="S")))
    assert kept(program, frame(IP(src=be, dst=client) / TCP(sport=80, dport=40000, flags="SA")))
    assert not kept(program, frame(IP(src=be, dst=lb) / TCP(sport=80, dport=40000, flags="SA")))
    assert not kept(program, frame(IP(src=be, dst=lb) / ICMP(type=0)))


def test_icmp_is_kept_to_vips_and_lb_addresses_only():
    program = policy()
    assert kept(program, frame(IP(src=CLIENT, dst=VIP) / ICMP()))
    assert kept(program, frame(IP(src=CLIENT, dst=LB_ADDR) / ICMP()))
    assert not kept(program, frame(IP(src=CLIENT, dst=OTHER) / ICMP()))
    assert not kept(program, frame(IP(src=CLIENT, dst=LB_ADDR) / TCP(dport=80)))


def test_unrelated_traffic_arp_and_ipv6_are_dropped():
    program = policy()
    assert not kept(program, frame(IP(src=CLIENT, dst=OTHER) / TCP(dport=80)))
    assert not kept(program, bytes(Ether(**MAC) / ARP(pdst=VIP, psrc=CLIENT)))
    assert not kept(program, bytes(Ether(**MAC) / IPv6(dst="2001:db8::1") / TCP(dport=80)))
    assert not kept(program, bytes(Ether(**MAC, type=0x0800)))  # IPv4 ethertype, no header: loads fail


def test_any_traffic_to_dst_addrs_and_port_ranges():
    program = policy()
    assert kept(program, frame(IP(src=BACKEND, dst=SNAT) / TCP(sport=8080, dport=31000)))
    assert kept(program, frame(IP(src=OTHER, dst=SNAT) / UDP(dport=9)))
    ranged = B.build_filter(dst_services={("tcp", SNAT, (20000, 59999)), ("udp", VIP, 0)})
    assert kept(ranged, frame(IP(dst=SNAT) / TCP(dport=20000)))
    assert kept(ranged, frame(IP(dst=SNAT) / TCP(dport=59999)))
    assert not kept(ranged, frame(IP(dst=SNAT) / TCP(dport=19999)))
    assert not kept(ranged, frame(IP(dst=SNAT) / TCP(dport=60000)))
    assert kept(ranged, frame(IP(dst=VIP) / UDP(dport=12345)))  # port 0: every port of that protocol


def test_fragments_to_a_vip_reach_the_engine_as_designed():
    program = policy()
    first = IP(src=CLIENT, dst=VIP, flags="MF", frag=0) / UDP(dport=53) / (b"x" * 64)
    assert kept(program, frame(first))  # the first fragment has ports: matched like any datagram
    first_other_port = IP(src=CLIENT, dst=VIP, flags="MF", frag=0) / UDP(dport=54) / (b"x" * 64)
    assert not kept(program, frame(first_other_port))
    later = IP(src=CLIENT, dst=VIP, proto=17, frag=9) / (b"\x00\x35" * 40)
    assert kept(program, frame(later))  # no ports to match: kept so the engine can count it
    assert not kept(program, frame(IP(src=CLIENT, dst=OTHER, proto=17, frag=9) / (b"y" * 80)))
    # A non-first fragment whose payload happens to start with "port 80" is not matched by ports.
    no_service = B.build_filter(dst_addrs=[SNAT], dst_services={("tcp", VIP, 80)})
    assert kept(no_service, frame(IP(dst=VIP, proto=6, frag=100) / (b"\x00\x50" * 20)))


def test_frames_the_host_sends_are_dropped_first():
    program = policy()
    raw = frame(IP(src=CLIENT, dst=VIP) / TCP(dport=80))
    assert not kept(program, raw, pkttype=B.PACKET_OUTGOING)
    assert kept(program, raw, pkttype=0)
    assert kept(B.build_filter(dst_addrs=[VIP], reject_outgoing=False), raw, pkttype=B.PACKET_OUTGOING)


def test_vlan_tagged_frames_need_accept_vlan():
    plain, tagged_ok = policy(), B.build_filter(dst_services={("tcp", VIP, 80)}, accept_vlan=True)
    untagged = frame(IP(src=CLIENT, dst=VIP) / TCP(dport=80))
    in_data = bytes(Ether(**MAC) / Dot1Q(vlan=7) / IP(src=CLIENT, dst=VIP) / TCP(dport=80))
    in_data_other_port = bytes(Ether(**MAC) / Dot1Q(vlan=7) / IP(src=CLIENT, dst=VIP) / TCP(dport=81))
    assert not kept(plain, untagged, vlan_tag_present=True)  # tag moved to metadata by the kernel
    assert not kept(plain, in_data)
    assert kept(tagged_ok, untagged, vlan_tag_present=True)
    assert kept(tagged_ok, in_data)
    assert not kept(tagged_ok, in_data_other_port)


def test_hundreds_of_vips_stay_within_jump_limits():
    vips = [f"198.18.{i // 200}.{i % 200 + 1}" for i in range(450)]
    program = B.build_filter(dst_addrs=vips, dst_services={("tcp", v, 80) for v in vips[:40]})
    check(program)
    assert all(kept(program, frame(IP(dst=v) / UDP(dport=1))) for v in vips[::7])
    assert not kept(program, frame(IP(dst="198.18.200.1") / UDP(dport=1)))


def test_unknown_protocol_and_bad_port_are_refused():
    with pytest.raises(ValueError, match="unknown protocol"):
        B.build_filter(dst_services={("sctp", VIP, 80)})
    with pytest.raises(ValueError, match="port"):
        B.build_filter(dst_services={("tcp", VIP, (90, 80))})


# ---------------------------------------------------------------- the policy against a reference model

ADDRS = [VIP, VIP2, SNAT, BACKEND, CLIENT, LB_ADDR, OTHER]


def reference_keep(src: str, dst: str, proto: int, sport: int, dport: int, frag: int) -> bool:
    services = {(6, VIP, 80), (17, VIP, 53), (6, VIP2, 443)}
    if frag == 0 and (proto, dst, dport) in services and proto in (6, 17):
        return True
    if dst == SNAT:
        return True
    if proto == 1 and dst in (VIP, VIP2, LB_ADDR):
        return True
    if frag != 0 and dst in (VIP, VIP2):
        return True
    if dst == LB_ADDR:  # local: no source clause keeps it
        return False
    if frag == 0 and proto == 6 and src == BACKEND and sport == 8080:
        return True
    if proto == 1 and src == BACKEND:
        return True
    return frag != 0 and src == BACKEND


def raw_ipv4(src: str, dst: str, proto: int, sport: int, dport: int, frag: int, option_words: int) -> bytes:
    ihl = 5 + option_words
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + 8, 1, frag, 64, proto, 0,
                         bytes(int(p) for p in src.split(".")), bytes(int(p) for p in dst.split(".")))
    return b"\x02" * 12 + b"\x08\x00" + header + b"\x01" * (4 * option_words) + struct.pack("!HHI", sport, dport, 0)


@settings(max_examples=400, deadline=None)
@given(src=st.sampled_from(ADDRS), dst=st.sampled_from(ADDRS), proto=st.sampled_from([1, 6, 17, 47]),
       sport=st.sampled_from([53, 80, 443, 8080, 40000]), dport=st.sampled_from([53, 80, 443, 8080, 9]),
       frag=st.sampled_from([0, 0, 0, 1, 185]), option_words=st.integers(0, 10))
def test_filter_agrees_with_a_python_reference_of_the_policy(src, dst, proto, sport, dport, frag, option_words):
    raw = raw_ipv4(src, dst, proto, sport, dport, frag, option_words)
    assert kept(policy(), raw) == reference_keep(src, dst, proto, sport, dport, frag)
