"""The multi-core steering's fanout program (``pktlb.adapters.fanout``), run through the test classic-BPF
interpreter (``bpf_interpreter.py``): full-NAT replies and ICMP errors about them reach the worker owning
their port, everything else is hashed evenly (no root, no lab).
"""

from __future__ import annotations

from collections import Counter

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption
from scapy.layers.l2 import ARP, Ether

from pktlb.adapters import bpf as B
from pktlb.adapters.fanout import (
    build_fanout_program,
    config_snat_ranges,
    fanout_program,
    header_hash,
    snat_ranges,
    worker_for_port,
)
from pktlb.core.config import parse_config
from pktlb.core.datapath import DataPath
from pktlb.core.flowtable import SnatPorts
from pktlb.core.packet.addr import ip_to_int
from tests.unit.bpf_interpreter import check, run

# ---------------------------------------------------------------- a fanout-program interpreter

def run_fanout(program: list[B.Insn], frame: bytes) -> int:
    """Run a fanout program the way the kernel does: the data starts at the network header, SKF_NET_OFF
    loads read from it, the protocol ancillary load gives the EtherType.  Out-of-frame loads return 0."""
    return run(program, frame[14:], protocol=int.from_bytes(frame[12:14], "big"), network=0)


def udp(src: str, dst: str, sport: int, dport: int, frag: int = 0) -> bytes:
    return bytes(Ether() / IP(src=src, dst=dst, frag=frag) / UDP(sport=sport, dport=dport) / b"x")


SNAT, FIRST, LAST = "198.18.0.3", 20000, 59999


@pytest.mark.parametrize("workers", [2, 3, 4, 7])
def test_full_nat_replies_go_to_the_worker_owning_their_port(workers):
    program = build_fanout_program(workers, [(SNAT, FIRST, LAST)])
    check(program)
    slices = [SnatPorts(FIRST, LAST, w, workers).range for w in range(workers)]
    for port in [FIRST, FIRST + 1, LAST, LAST - 1] + [lo for lo, _ in slices] + [hi for _, hi in slices]:
        owner = next(w for w, (lo, hi) in enumerate(slices) if lo <= port <= hi)
        assert worker_for_port(port, FIRST, LAST, workers) == owner
        assert run_fanout(program, udp("198.18.0.11", SNAT, 80, port)) % workers == owner, port


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("inner_options", [b"", b"\x01\x01\x01\x00"])
def test_icmp_errors_about_full_nat_flows_go_to_the_worker_owning_the_quoted_port(workers, inner_options):
    program = build_fanout_program(workers, [(SNAT, FIRST, LAST)])
    slices = [SnatPorts(FIRST, LAST, w, workers).range for w in range(workers)]
    for owner, (lo, hi) in enumerate(slices):
        for port in (lo, hi):
            quoted = IP(src=SNAT, dst="198.18.0.11", options=inner_options) / UDP(sport=port, dport=80)
            for icmp in (ICMP(type=3, code=4, nexthopmtu=1400), ICMP(type=3, code=3), ICMP(type=11)):
                frame = bytes(Ether() / IP(src="198.18.0.11", dst=SNAT) / icmp / bytes(quoted))
                assert run_fanout(program, frame) % workers == owner, (port, icmp.type)
            tcp = IP(src=SNAT, dst="198.18.0.11", options=inner_options) / TCP(sport=port, dport=80)
            frame = bytes(Ether() / IP(src="198.18.0.11", dst=SNAT) / ICMP(type=3, code=4) / bytes(tcp)[:28 + len(inner_options)])
            assert run_fanout(program, frame) % workers == owner
    # not an error, or quoting ICMP: hashed like any frame without ports
    echo = bytes(Ether() / IP(src="198.18.0.11", dst=SNAT) / ICMP(type=0) / bytes(20))
    assert run_fanout(program, echo) == header_hash(ip_to_int("198.18.0.11"), ip_to_int(SNAT), 0)
    quoted = IP(src="198.18.1.10", dst="198.18.0.11") / UDP(sport=FIRST, dport=80)
    other = bytes(Ether() / IP(src="198.18.0.11", dst="198.18.1.10") / ICMP(type=3, code=3) / bytes(quoted))
    # an error to another address is hashed as the flow it quotes (here client:FIRST -> backend:80)
    assert run_fanout(program, other) == header_hash(ip_to_int("198.18.1.10"), ip_to_int("198.18.0.11"),
                                                     (80 << 16) | FIRST)
    pinged = IP(src=SNAT, dst="198.18.0.11") / ICMP(type=8)
    frame = bytes(Ether() / IP(src="198.18.0.11", dst=SNAT) / ICMP(type=3, code=1) / bytes(pinged))
    assert run_fanout(program, frame) == header_hash(ip_to_int("198.18.0.11"), ip_to_int(SNAT), 0)


@pytest.mark.parametrize("inner_options", [[], [IPOption(b"\x01\x01\x01\x00")]])
def test_icmp_errors_to_a_vip_are_hashed_as_the_client_flow_they_are_about(inner_options):
    program = build_fanout_program(3, [(SNAT, FIRST, LAST)])
    check(program)
    vip, client = ip_to_int("198.19.0.100"), ip_to_int("198.18.1.10")
    for cport in (40000, 40001, 51234):
        flow = run_fanout(program, udp("198.18.1.10", "198.19.0.100", cport, 80))
        assert flow == header_hash(client, vip, (cport << 16) | 80)
        reply = IP(src="198.19.0.100", dst="198.18.1.10", options=inner_options) / TCP(sport=80, dport=cport)
        error = bytes(Ether() / IP(src="198.18.1.1", dst="198.19.0.100") / ICMP(type=3, code=4) / bytes(reply)[:28 + len(bytes(IP(options=inner_options))) - 20])
        assert run_fanout(program, error) == flow, cport  # the same worker as the client's own packets


def test_other_frames_are_hashed_and_spread_evenly():
    program = build_fanout_program(2, [(SNAT, FIRST, LAST)])
    spread: Counter[int] = Counter()
    for i in range(4096):
        src, sport = ip_to_int("198.18.1.100") + i % 64, 10000 + i
        frame = udp(f"198.18.1.{100 + i % 64}", "198.19.0.100", sport, 5000)
        value = run_fanout(program, frame)
        assert value == header_hash(src, ip_to_int("198.19.0.100"), (sport << 16) | 5000)
        spread[value % 2] += 1
    assert abs(spread[0] - spread[1]) < 0.05 * 4096, spread
    # a port outside the SNAT range, or a fragment, is not a full-NAT reply: hashed too
    assert run_fanout(program, udp("198.18.0.11", SNAT, 80, 100)) == header_hash(
        ip_to_int("198.18.0.11"), ip_to_int(SNAT), (80 << 16) | 100)
    fragment = udp("198.18.0.11", SNAT, 80, FIRST + 30000, frag=10)
    assert run_fanout(program, fragment) == header_hash(ip_to_int("198.18.0.11"), ip_to_int(SNAT), 0)


def test_non_ip_frames_go_to_worker_zero_and_bad_ranges_are_refused():
    program = build_fanout_program(3)
    assert run_fanout(program, bytes(Ether() / ARP())) == 0
    with pytest.raises(ValueError):
        build_fanout_program(0)
    with pytest.raises(ValueError):
        build_fanout_program(2, [(SNAT, 30000, 20000)])
    assert worker_for_port(FIRST, FIRST, FIRST + 1, 4) == 3  # fewer ports than workers: the last takes all


def test_fanout_program_reads_the_snapshots_full_nat_ranges():
    text = "\n".join(["[[service]]", 'name = "a"', 'vip = "198.19.0.100"', "port = 80", 'mode = "fullnat"',
                      f'snat_address = "{SNAT}"', "snat_ports = [30000, 39999]",
                      "[[service.backend]]", 'address = "198.18.0.11"'])
    config = parse_config(text + "\n")
    snap = DataPath(config).snapshot
    assert snat_ranges(snap) == [(ip_to_int(SNAT), 30000, 39999)] == config_snat_ranges(config)
    assert len(fanout_program(snap, 2)) % 8 == 0


def test_a_program_classic_bpf_cannot_jump_across_is_refused_not_truncated():
    many = [(f"198.18.0.{100 + i}", 20000 + 1000 * i, 20999 + 1000 * i) for i in range(40)]
    with pytest.raises(ValueError, match="jump out of range"):
        build_fanout_program(4, many)
