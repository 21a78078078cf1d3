"""The PACKET_FANOUT_CBPF program that steers each frame to the worker that can handle it.

With ``pktlb run --workers N`` every worker's AF_PACKET socket joins one fanout group.  Plain
``PACKET_FANOUT_HASH`` spreads flows well, but a full-NAT reply (backend -> SNAT:port) is a
different 5-tuple from its request, so it lands on an arbitrary worker whose flow table lacks the
flow.  Each worker owns a disjoint slice of every SNAT port range (``flowtable.SnatPorts``), so
the reply's destination port names its worker; this classic-BPF program computes that index:

    frame to a full-NAT SNAT address, TCP/UDP, unfragmented:  min((dport - first) // span, N - 1)
    ICMP error to a SNAT address, quoting a TCP/UDP header:   the same, of the quoted source port
    other ICMP error quoting a TCP/UDP header:                the hash of the flow it quotes
    anything else:                                            a hash of (src, dst, ports)

An ICMP error a backend sends about a full-NAT flow (fragmentation needed, port unreachable)
quotes the packet the LB sent it, SNAT:port -> backend, so the quoted source port names the
worker whose flow table holds the flow, as a reply's destination port does.  An ICMP error to a
VIP (a router's fragmentation-needed about the LB's reply to a client) quotes the reply, VIP:port
-> client:port; hashing its addresses and swapped ports gives the client flow's own hash.

The kernel takes the returned value modulo the group size and hands the frame to that member of
the group's array, which is in join order: the workers must join one after the other, worker 0
first (``daemon.workers`` does so).  NAT replies need no steering: their reverse rewrite comes
from the snapshot, not from per-flow state.

The kernel runs a fanout program on the frame as the stack received it: the data starts at the IP
header, not at the Ethernet header as in a socket filter.  So the program reads the packet through
SKF_NET_OFF (offsets from the network header, wherever the data starts) and tests the EtherType
through the ``protocol`` ancillary load.

Why not the skb hash (``ld rxhash``)?  On a veth nothing is obliged to have computed it; where it
is still 0 every frame would go to worker 0.  The hash below is computed from the headers, the
same in every run, so a student (and ``worker_for``) can predict where a flow goes.
"""

from __future__ import annotations

from collections.abc import Iterable

from pktlb.adapters.bpf import (
    BPF_A,
    BPF_ADD,
    BPF_ALU,
    BPF_AND,
    BPF_B,
    BPF_DIV,
    BPF_H,
    BPF_IMM,
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JSET,
    BPF_K,
    BPF_LD,
    BPF_LSH,
    BPF_MEM,
    BPF_MISC,
    BPF_MUL,
    BPF_OR,
    BPF_RET,
    BPF_RSH,
    BPF_ST,
    BPF_SUB,
    BPF_TAX,
    BPF_W,
    BPF_X,
    BPF_XOR,
    Assembler,
    Insn,
    ancillary,
    pack_filters,
)
from pktlb.core.config import Config
from pktlb.core.packet.addr import ip_to_int
from pktlb.core.packet.ethernet import ETH_P_IP
from pktlb.core.packet.icmp import ERROR_TYPES, ICMP_LEN
from pktlb.core.packet.ipv4 import FRAG_OFFSET_MASK, OFF_DST, OFF_FRAG, OFF_PROTO, OFF_SRC
from pktlb.core.rewrite.registry import traits_of
from pktlb.core.snapshot import Snapshot

PACKET_FANOUT_CBPF = 6
SKF_NET_OFF = -0x100000  # classic-BPF loads at SKF_NET_OFF + n read byte n of the network header
SKF_AD_PROTOCOL = 0  # ancillary load: the frame's EtherType (skb->protocol, host order)
PACKET_FANOUT_DATA = 22
_GOLDEN = 0x9E3779B1  # Knuth's multiplicative hashing constant (2**32 / phi)
_MIX = 0x85EBCA6B  # MurmurHash3's first finaliser multiplier

SnatRange = tuple[int | str, int, int]  # (SNAT address, first port, last port)


def _net(offset: int) -> int:
    return (SKF_NET_OFF + offset) & 0xFFFFFFFF


def slice_span(first: int, last: int, workers: int) -> int:
    """Ports per worker slice, as ``flowtable.SnatPorts`` cuts the range (the last worker takes the rest)."""
    return (last - first + 1) // workers


def worker_for_port(port: int, first: int, last: int, workers: int) -> int:
    """Which worker owns ``port`` of the SNAT range (the reference the BPF program must agree with)."""
    span = slice_span(first, last, workers)
    if span == 0:
        return workers - 1
    return min((port - first) // span, workers - 1)


def header_hash(src: int, dst: int, ports: int) -> int:
    """The program's hash of a frame (``ports`` = sport << 16 | dport, 0 without ports); kernel takes it mod N."""
    h = ((src ^ dst ^ ports) * _GOLDEN) & 0xFFFFFFFF
    h ^= h >> 16
    h = (h * _MIX) & 0xFFFFFFFF
    return h ^ (h >> 13)


def snat_ranges(snap: Snapshot) -> list[SnatRange]:
    """(SNAT address, first, last) for every full-NAT service in the snapshot."""
    return sorted({(svc.snat, *svc.snat_ports) for svc in snap.services.values() if svc.rewriter.traits.needs_snat})


def config_snat_ranges(config: Config) -> list[SnatRange]:
    """The same ranges as ``snat_ranges``, read from a config not yet installed (to check a reload)."""
    return sorted({(ip_to_int(svc.snat_address), *svc.snat_ports) for svc in config.services
                   if traits_of(svc.mode).needs_snat and svc.snat_address})


def build_fanout_program(workers: int, ranges: Iterable[SnatRange] = ()) -> list[Insn]:
    """The classic-BPF program returning a worker index (see the module docstring)."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    asm = Assembler()
    asm.ld(BPF_H, ancillary(SKF_AD_PROTOCOL))
    asm.jump(BPF_JEQ, ETH_P_IP, None, "other")
    by_addr: dict[int, list[tuple[int, int]]] = {}
    for addr, first, last in ranges:
        if not 0 < first <= last <= 65535:
            raise ValueError(f"bad SNAT port range {first}-{last}")
        by_addr.setdefault(addr if isinstance(addr, int) else ip_to_int(addr), []).append((first, last))
    if by_addr:
        asm.ld(BPF_B, _net(OFF_PROTO))  # full-NAT replies are TCP or UDP, and not fragments
        asm.jump(BPF_JEQ, 6, "snat-proto", None)
        asm.jump(BPF_JEQ, 17, "snat-proto", None)
        asm.jump(BPF_JEQ, 1, "snat-icmp", "hash")
        _icmp_error_port(asm, sorted(by_addr), workers)
        asm.label("snat-proto")
        asm.ld(BPF_H, _net(OFF_FRAG))
        asm.jump(BPF_JSET, FRAG_OFFSET_MASK, "hash", None)
        asm.ld(BPF_W, _net(OFF_DST))
        for i, addr in enumerate(sorted(by_addr)):
            asm.jump(BPF_JEQ, addr, f"snat-{i}", None)
        asm.ja("hash")
        for i, addr in enumerate(sorted(by_addr)):
            asm.label(f"snat-{i}")
            asm.ldx_ihl(_net(0))
            asm.ld_ind(BPF_H, _net(2))  # destination port
            asm.label(f"snat-port-{i}")  # A = the port that names the worker
            for first, last in sorted(by_addr[addr]):
                _range_to_worker(asm, first, last, workers)
            asm.ja("hash")  # a port outside every range: not a full-NAT reply
    asm.label("hash")
    _hash(asm)
    asm.label("other")
    asm.ret(0)  # not IPv4 (ARP): worker 0
    return asm.assemble()


def _icmp_error_port(asm: Assembler, addrs: list[int], workers: int) -> None:
    """At "snat-icmp": an unfragmented ICMP error to SNAT address i quoting TCP/UDP jumps to
    "snat-port-i" with A = the quoted source port; anything else to "hash"."""
    asm.label("snat-icmp")
    asm.ld(BPF_H, _net(OFF_FRAG))
    asm.jump(BPF_JSET, FRAG_OFFSET_MASK, "hash", None)
    asm.ldx_ihl(_net(0))  # X = outer header length; the ICMP header (8 bytes) follows it
    asm.ld_ind(BPF_B, _net(0))  # ICMP type
    for kind in sorted(ERROR_TYPES):
        asm.jump(BPF_JEQ, kind, "icmp-error", None)
    asm.ja("hash")
    asm.label("icmp-error")
    asm.ld_ind(BPF_B, _net(ICMP_LEN + OFF_PROTO))  # the quoted header's protocol
    asm.jump(BPF_JEQ, 6, "icmp-quoted", None)
    asm.jump(BPF_JEQ, 17, "icmp-quoted", "hash")
    asm.label("icmp-quoted")
    asm.ld_ind(BPF_B, _net(ICMP_LEN))  # X += the quoted header's length (classic BPF has no indirect MSH)
    asm.emit(BPF_ALU | BPF_AND | BPF_K, 0x0F)
    asm.emit(BPF_ALU | BPF_LSH | BPF_K, 2)
    asm.emit(BPF_ALU | BPF_ADD | BPF_X)
    asm.emit(BPF_MISC | BPF_TAX)
    asm.ld(BPF_W, _net(OFF_DST))
    for i, addr in enumerate(addrs):
        asm.jump(BPF_JEQ, addr, f"icmp-to-{i}", None)
    asm.ja("hash")
    for i in range(len(addrs)):
        asm.label(f"icmp-to-{i}")
        asm.ld_ind(BPF_H, _net(ICMP_LEN))  # the quoted source port: outer + quoted header length + 8
        asm.ja(f"snat-port-{i}")


def _range_to_worker(asm: Assembler, first: int, last: int, workers: int) -> None:
    """A = the destination port; return its worker if it is in [first, last], else fall through."""
    skip = asm.new_label("not-in-range")
    inside = asm.new_label("in-range")
    asm.jump(BPF_JGE, first, None, skip)
    asm.jump(BPF_JGT, last, skip, inside)
    asm.label(inside)
    span = slice_span(first, last, workers)
    if span == 0:
        asm.ret(workers - 1)
    else:
        asm.emit(BPF_ALU | BPF_SUB | BPF_K, first)
        asm.emit(BPF_ALU | BPF_DIV | BPF_K, span)
        clamp = asm.new_label("clamp")
        asm.jump(BPF_JGE, workers - 1, clamp, None)
        asm.emit(BPF_RET | BPF_A)
        asm.label(clamp)
        asm.ret(workers - 1)
    asm.label(skip)


def _hash(asm: Assembler) -> None:
    """A = header_hash(src, dst, ports); return it.  An ICMP error is hashed as the flow it is about."""
    no_ports = asm.new_label("no-ports")
    mix = asm.new_label("mix")
    final = asm.new_label("final")
    asm.ld(BPF_B, _net(OFF_PROTO))
    asm.jump(BPF_JEQ, 6, "ports", None)
    asm.jump(BPF_JEQ, 17, "ports", None)
    asm.jump(BPF_JEQ, 1, "icmp-hash", no_ports)
    _icmp_flow_hash_input(asm, no_ports, final)
    asm.label("ports")
    asm.ld(BPF_H, _net(OFF_FRAG))
    asm.jump(BPF_JSET, FRAG_OFFSET_MASK, no_ports, None)
    asm.ldx_ihl(_net(0))
    asm.ld_ind(BPF_W, _net(0))  # sport << 16 | dport
    asm.ja(mix)
    asm.label(no_ports)
    asm.emit(BPF_LD | BPF_W | BPF_IMM, 0)
    asm.label(mix)
    asm.emit(BPF_MISC | BPF_TAX)
    asm.ld(BPF_W, _net(OFF_SRC))
    asm.emit(BPF_ALU | BPF_XOR | BPF_X)
    asm.emit(BPF_MISC | BPF_TAX)
    asm.ld(BPF_W, _net(OFF_DST))
    asm.emit(BPF_ALU | BPF_XOR | BPF_X)
    asm.label(final)  # A = src ^ dst ^ ports
    asm.emit(BPF_ALU | BPF_MUL | BPF_K, _GOLDEN)
    _xor_shift(asm, 16)
    asm.emit(BPF_ALU | BPF_MUL | BPF_K, _MIX)
    _xor_shift(asm, 13)
    asm.emit(BPF_RET | BPF_A)


def _icmp_flow_hash_input(asm: Assembler, no_ports: str, final: str) -> None:
    """At "icmp-hash": for an unfragmented ICMP error quoting TCP/UDP, jump to ``final`` with
    A = quoted src ^ quoted dst ^ (quoted dport << 16 | quoted sport).

    The quoted packet went the other way (LB -> client for an error about a reply), so its ports
    swapped back make this the hash of the client's own flow: the error reaches the worker that
    holds that flow (``header_hash`` XORs the addresses, so their order does not matter)."""
    asm.label("icmp-hash")
    asm.ld(BPF_H, _net(OFF_FRAG))
    asm.jump(BPF_JSET, FRAG_OFFSET_MASK, no_ports, None)
    asm.ldx_ihl(_net(0))
    asm.ld_ind(BPF_B, _net(0))
    for kind in sorted(ERROR_TYPES):
        asm.jump(BPF_JEQ, kind, "icmp-hash-error", None)
    asm.ja(no_ports)
    asm.label("icmp-hash-error")
    asm.ld_ind(BPF_B, _net(ICMP_LEN + OFF_PROTO))
    asm.jump(BPF_JEQ, 6, "icmp-hash-quoted", None)
    asm.jump(BPF_JEQ, 17, "icmp-hash-quoted", no_ports)
    asm.label("icmp-hash-quoted")
    asm.ld_ind(BPF_W, _net(ICMP_LEN + OFF_SRC))  # quoted source address
    asm.emit(BPF_ST, 0)
    asm.ld_ind(BPF_W, _net(ICMP_LEN + OFF_DST))  # quoted destination address
    asm.emit(BPF_ST, 1)
    asm.ld_ind(BPF_B, _net(ICMP_LEN))  # X = outer + quoted header length
    asm.emit(BPF_ALU | BPF_AND | BPF_K, 0x0F)
    asm.emit(BPF_ALU | BPF_LSH | BPF_K, 2)
    asm.emit(BPF_ALU | BPF_ADD | BPF_X)
    asm.emit(BPF_MISC | BPF_TAX)
    asm.ld_ind(BPF_W, _net(ICMP_LEN))  # quoted sport << 16 | dport
    asm.emit(BPF_ST, 2)
    asm.emit(BPF_ALU | BPF_LSH | BPF_K, 16)
    asm.emit(BPF_MISC | BPF_TAX)
    asm.emit(BPF_LD | BPF_W | BPF_MEM, 2)
    asm.emit(BPF_ALU | BPF_RSH | BPF_K, 16)
    asm.emit(BPF_ALU | BPF_OR | BPF_X)  # dport << 16 | sport
    asm.emit(BPF_MISC | BPF_TAX)
    asm.emit(BPF_LD | BPF_W | BPF_MEM, 0)
    asm.emit(BPF_ALU | BPF_XOR | BPF_X)
    asm.emit(BPF_MISC | BPF_TAX)
    asm.emit(BPF_LD | BPF_W | BPF_MEM, 1)
    asm.emit(BPF_ALU | BPF_XOR | BPF_X)
    asm.ja(final)


def _xor_shift(asm: Assembler, bits: int) -> None:
    """A ^= A >> bits (through X)."""
    asm.emit(BPF_MISC | BPF_TAX)
    asm.emit(BPF_ALU | BPF_RSH | BPF_K, bits)
    asm.emit(BPF_ALU | BPF_XOR | BPF_X)


def fanout_program(snap: Snapshot, workers: int) -> bytes:
    """The packed program for a snapshot's full-NAT ranges, ready for ``RawPort.set_fanout_program``."""
    return pack_filters(build_fanout_program(workers, snat_ranges(snap)))
