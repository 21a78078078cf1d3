"""A small classic-BPF assembler and the engine's kernel receive filter.

The filter runs in the kernel on every frame an AF_PACKET socket would receive; a frame it returns 0
for never reaches Python.  That is how a UDP flood to ports no service uses is dropped cheaply.

Everything here is pure: ``build_filter`` returns ``(code, jt, jf, k)`` tuples, ``pack_filters`` the
``struct sock_filter[]`` bytes that ``SO_ATTACH_FILTER`` points at (packet_socket builds the ``sock_fprog``
around them, since that struct holds a pointer).  ``disassemble`` prints a program like ``tcpdump -d``.

Policy (a disjunction: a frame is kept if any clause holds, else dropped):
  * IPv4 to an address of ``dst_addrs`` (any protocol, any port);
  * ``dst_services`` ``(proto, addr, port)``: proto to addr:port, plus ICMP to addr and IPv4 fragments
    with a non-zero offset to addr (they carry no ports; the engine counts them);
  * IPv4 from an address of ``src_addrs``;
  * ``src_services`` ``(proto, addr, port)``: proto from addr:port (backend replies), plus ICMP and
    non-first fragments from addr;
  * ICMP to an address of ``icmp_dst_addrs`` (LB-owned addresses).
The source clauses (``src_addrs``, ``src_services`` and their ICMP and fragments) never keep a frame
addressed to one of ``local_addrs`` (the LB's own addresses): a backend's answer to the LB itself,
such as a health-check reply, is for the LB's kernel, not the engine; only a destination clause
keeps such a frame.
A port may be an int, an inclusive ``(first, last)`` range, or 0 for every port of that protocol.
Frames the host itself sends (PACKET_OUTGOING) and, unless ``accept_vlan``, frames that carried a
VLAN tag are dropped first.  Port loads handle IP options through ``ldxb 4*([off]&0xf)``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from pktlb.core.packet.addr import ip_to_int
from pktlb.core.packet.ethernet import ETH_LEN, ETH_P_8021Q, ETH_P_IP, ETHERTYPE_OFF, VLAN_TAG_LEN
from pktlb.core.packet.ipv4 import (
    FRAG_OFFSET_MASK,
    OFF_DST,
    OFF_FRAG,
    OFF_PROTO,
    OFF_SRC,
    PROTO_ICMP,
    PROTO_NUMBERS,
)

Insn = tuple[int, int, int, int]

# Instruction classes, sizes, modes and operations (linux/bpf_common.h).
BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = range(8)
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_LEN, BPF_MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH, BPF_NEG, BPF_MOD, BPF_XOR = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0)
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40
BPF_K, BPF_X, BPF_A = 0x00, 0x08, 0x10
BPF_TAX, BPF_TXA = 0x00, 0x80

# Ancillary loads (linux/filter.h): negative offsets the kernel answers from skb metadata.
SKF_AD_OFF = -0x1000
SKF_AD_PKTTYPE = 4
SKF_AD_VLAN_TAG_PRESENT = 48
PACKET_OUTGOING = 4

IPPROTO_ICMP = PROTO_ICMP
PROTOCOLS = PROTO_NUMBERS  # icmp, tcp, udp (and ipip) by name
# Returned for a kept frame: "keep it all" (a GSO super-frame must never be trimmed by the filter).
ACCEPT_WHOLE = 0xFFFFFFFF
BPF_MAXINSNS = 4096
_ADDRS_PER_CLAUSE = 200  # keeps every conditional jump under the 255-instruction limit
SOCK_FILTER = struct.Struct("=HBBI")

Addr = str | int
Port = int | tuple[int, int]
Service = tuple[str | int, Addr, Port]


def ancillary(offset: int) -> int:
    """The load offset of ancillary field ``offset`` (an SKF_AD_* number): SKF_AD_OFF + offset, unsigned."""
    return (SKF_AD_OFF + offset) & 0xFFFFFFFF


class Assembler:
    """Collects instructions whose jump targets may be labels; ``assemble`` resolves them.

    Conditional jumps take ``jt``/``jf`` as a label name or ``None`` (the next instruction); their
    offsets must fit in 8 bits.  ``ja`` takes a label and may jump up to 2**32 instructions.
    """

    def __init__(self) -> None:
        # A label (str), ("ja", label), or (code, jt label, jf label, k).
        self._items: list[str | tuple[str, str] | tuple[int, str | None, str | None, int]] = []
        self._serial = 0

    def new_label(self, hint: str) -> str:
        self._serial += 1
        return f"{hint}.{self._serial}"

    def label(self, name: str) -> None:
        self._items.append(name)

    def emit(self, code: int, k: int = 0, jt: str | None = None, jf: str | None = None) -> None:
        self._items.append((code, jt, jf, k & 0xFFFFFFFF))

    def ld(self, size: int, offset: int) -> None:
        self.emit(BPF_LD | size | BPF_ABS, offset)

    def ld_ind(self, size: int, offset: int) -> None:
        self.emit(BPF_LD | size | BPF_IND, offset)

    def ldx_ihl(self, offset: int) -> None:
        """X = 4 * (byte at offset & 0xf): the IPv4 header length, options included."""
        self.emit(BPF_LDX | BPF_B | BPF_MSH, offset)

    def jump(self, op: int, k: int, jt: str | None, jf: str | None) -> None:
        self.emit(BPF_JMP | op | BPF_K, k, jt, jf)

    def ja(self, target: str) -> None:
        self._items.append(("ja", target))

    def ret(self, k: int) -> None:
        self.emit(BPF_RET | BPF_K, k)

    def assemble(self) -> list[Insn]:
        positions: dict[str, int] = {}
        count = 0
        for item in self._items:
            if isinstance(item, str):
                if item in positions:
                    raise ValueError(f"label {item!r} defined twice")
                positions[item] = count
            else:
                count += 1
        program: list[Insn] = []
        for item in self._items:
            if isinstance(item, str):
                continue
            here = len(program) + 1
            if len(item) == 2:  # ("ja", label)
                program.append((BPF_JMP | BPF_JA, 0, 0, positions[item[1]] - here))
                continue
            code, jt, jf, k = item
            offsets = [0 if t is None else positions[t] - here for t in (jt, jf)]
            if not all(0 <= off <= 255 for off in offsets):
                raise ValueError(f"jump out of range at instruction {here - 1}: {offsets}")
            program.append((code, offsets[0], offsets[1], k))
        if len(program) > BPF_MAXINSNS:
            raise ValueError(f"program has {len(program)} instructions, the kernel allows {BPF_MAXINSNS}")
        return program


def _addr(value: Addr) -> int:
    return value if isinstance(value, int) else ip_to_int(value)


def _proto(value: str | int) -> int:
    if isinstance(value, int):
        return value
    try:
        return PROTOCOLS[value.lower()]
    except KeyError:
        raise ValueError(f"unknown protocol {value!r}; expected one of {sorted(PROTOCOLS)}") from None


def _port_range(port: Port) -> tuple[int, int]:
    first, last = (port, port) if isinstance(port, int) else port
    if not (0 <= first <= last <= 65535):
        raise ValueError(f"bad port or port range {port!r}")
    return first, last


@dataclass
class _Side:
    """The address field and port offset one side of the policy tests."""

    addr_off: int  # 16 for the destination, 12 for the source (from the IPv4 header start)
    port_off: int  # 2 for the destination port, 0 for the source port
    services: dict[tuple[int, int], list[tuple[int, int]]] = field(default_factory=dict)

    def add(self, services: Iterable[Service]) -> None:
        for proto, addr, port in services:
            self.services.setdefault((_addr(addr), _proto(proto)), []).append(_port_range(port))

    def addrs(self) -> list[int]:
        return sorted({addr for addr, _ in self.services})


def _match_addrs(asm: Assembler, addrs: list[int], accept: str, fail: str | None) -> None:
    """A = the address already loaded; jump to accept if it is one of addrs, else to fail (None: fall through)."""
    for i, addr in enumerate(addrs):
        asm.jump(BPF_JEQ, addr, accept, fail if i == len(addrs) - 1 else None)


def _clause_addr_set(asm: Assembler, l3: int, addr_off: int, addrs: Iterable[int], accept_len: int,
                     proto: int | None = None, fragments_only: bool = False) -> None:
    """Keep the frame if the address at l3+addr_off is in addrs (and the protocol/fragment test holds)."""
    ordered = sorted(set(addrs))
    for start in range(0, len(ordered), _ADDRS_PER_CLAUSE):
        chunk = ordered[start:start + _ADDRS_PER_CLAUSE]
        accept, fail = asm.new_label("keep"), asm.new_label("next")
        if proto is not None:
            asm.ld(BPF_B, l3 + OFF_PROTO)
            asm.jump(BPF_JEQ, proto, None, fail)
        if fragments_only:
            asm.ld(BPF_H, l3 + OFF_FRAG)
            asm.jump(BPF_JSET, FRAG_OFFSET_MASK, None, fail)
        asm.ld(BPF_W, l3 + addr_off)
        _match_addrs(asm, chunk, accept, fail)
        asm.label(accept)
        asm.ret(accept_len)
        asm.label(fail)


def _clause_service(asm: Assembler, l3: int, side: _Side, addr: int, proto: int,
                    ranges: list[tuple[int, int]], accept_len: int) -> None:
    """Keep proto frames with addr on this side and a port in one of ranges (0 = any port)."""
    accept, fail = asm.new_label("keep"), asm.new_label("next")
    asm.ld(BPF_W, l3 + side.addr_off)
    asm.jump(BPF_JEQ, addr, None, fail)
    asm.ld(BPF_B, l3 + OFF_PROTO)
    asm.jump(BPF_JEQ, proto, None, fail)
    if (0, 65535) not in ranges and (0, 0) not in ranges:
        asm.ld(BPF_H, l3 + OFF_FRAG)
        asm.jump(BPF_JSET, FRAG_OFFSET_MASK, fail, None)  # a non-first fragment has no ports
        asm.ldx_ihl(l3)
        asm.ld_ind(BPF_H, l3 + side.port_off)
        merged = sorted(set(ranges))
        for i, (first, last) in enumerate(merged):
            next_range = fail if i == len(merged) - 1 else asm.new_label("range")
            if first == last:
                asm.jump(BPF_JEQ, first, accept, next_range)
            else:
                inside = asm.new_label("ge")
                asm.jump(BPF_JGE, first, inside, next_range)
                asm.label(inside)
                asm.jump(BPF_JGT, last, next_range, accept)
            if next_range != fail:
                asm.label(next_range)
    asm.label(accept)
    asm.ret(accept_len)
    asm.label(fail)


def _ipv4_block(asm: Assembler, l3: int, dst: _Side, src: _Side, dst_addrs: set[int], src_addrs: set[int],
                icmp_dst: set[int], local: set[int], accept_len: int) -> None:
    # Destination clauses first, then the local-address cut, then the source clauses.
    for (addr, proto), ranges in sorted(dst.services.items()):
        _clause_service(asm, l3, dst, addr, proto, ranges, accept_len)
    if dst_addrs:
        _clause_addr_set(asm, l3, OFF_DST, dst_addrs, accept_len)
    icmp_to = icmp_dst | set(dst.addrs())
    if icmp_to:
        _clause_addr_set(asm, l3, OFF_DST, icmp_to, accept_len, proto=IPPROTO_ICMP)
    if dst.addrs():
        _clause_addr_set(asm, l3, OFF_DST, dst.addrs(), accept_len, fragments_only=True)
    if local and (src.services or src_addrs):
        drop, sources = asm.new_label("local"), asm.new_label("sources")
        for start in range(0, len(local), _ADDRS_PER_CLAUSE):
            asm.ld(BPF_W, l3 + OFF_DST)
            _match_addrs(asm, sorted(local)[start:start + _ADDRS_PER_CLAUSE], drop, None)
        asm.ja(sources)
        asm.label(drop)
        asm.ret(0)
        asm.label(sources)
    for (addr, proto), ranges in sorted(src.services.items()):
        _clause_service(asm, l3, src, addr, proto, ranges, accept_len)
    if src_addrs:
        _clause_addr_set(asm, l3, OFF_SRC, src_addrs, accept_len)
    if src.addrs():
        _clause_addr_set(asm, l3, OFF_SRC, src.addrs(), accept_len, proto=IPPROTO_ICMP)
        _clause_addr_set(asm, l3, OFF_SRC, src.addrs(), accept_len, fragments_only=True)
    asm.ret(0)


def build_filter(*, dst_addrs: Iterable[Addr] = (), dst_services: Iterable[Service] = (),
                 src_addrs: Iterable[Addr] = (), src_services: Iterable[Service] = (),
                 icmp_dst_addrs: Iterable[Addr] = (), local_addrs: Iterable[Addr] = (), accept_vlan: bool = False,
                 reject_outgoing: bool = True, accept_len: int = ACCEPT_WHOLE) -> list[Insn]:
    """The engine's receive filter as classic-BPF instructions (policy in the module docstring).

    ``accept_vlan`` also keeps frames whose 802.1Q tag the kernel moved to metadata (the filter then
    sees them untagged) and frames with the tag still in the data (the IPv4 tests shift by 4 bytes).
    """
    dst, src = _Side(addr_off=OFF_DST, port_off=2), _Side(addr_off=OFF_SRC, port_off=0)
    dst.add(dst_services)
    src.add(src_services)
    dst_set, src_set = {_addr(a) for a in dst_addrs}, {_addr(a) for a in src_addrs}
    icmp_set, local_set = {_addr(a) for a in icmp_dst_addrs}, {_addr(a) for a in local_addrs}
    asm = Assembler()
    if reject_outgoing:
        asm.ld(BPF_H, ancillary(SKF_AD_PKTTYPE))
        asm.jump(BPF_JEQ, PACKET_OUTGOING, None, "not-outgoing")
        asm.ret(0)
        asm.label("not-outgoing")
    if not accept_vlan:
        asm.ld(BPF_B, ancillary(SKF_AD_VLAN_TAG_PRESENT))
        asm.jump(BPF_JEQ, 0, "untagged", None)
        asm.ret(0)
        asm.label("untagged")
    asm.ld(BPF_H, ETHERTYPE_OFF)
    asm.jump(BPF_JEQ, ETH_P_IP, "ipv4", None)
    if accept_vlan:
        asm.ja("not-ipv4")
    else:
        asm.ret(0)
    asm.label("ipv4")
    _ipv4_block(asm, ETH_LEN, dst, src, dst_set, src_set, icmp_set, local_set, accept_len)
    if accept_vlan:
        asm.label("not-ipv4")
        asm.jump(BPF_JEQ, ETH_P_8021Q, None, "drop")
        asm.ld(BPF_H, ETHERTYPE_OFF + VLAN_TAG_LEN)
        asm.jump(BPF_JEQ, ETH_P_IP, "tagged-ipv4", "drop")
        asm.label("drop")
        asm.ret(0)
        asm.label("tagged-ipv4")
        _ipv4_block(asm, ETH_LEN + VLAN_TAG_LEN, dst, src, dst_set, src_set, icmp_set, local_set, accept_len)
    return asm.assemble()


def pack_filters(program: Iterable[Insn]) -> bytes:
    """The ``struct sock_filter[]`` array (native byte order) for SO_ATTACH_FILTER."""
    return b"".join(SOCK_FILTER.pack(*insn) for insn in program)


def unpack_filters(raw: bytes) -> list[Insn]:
    return [SOCK_FILTER.unpack_from(raw, off) for off in range(0, len(raw), SOCK_FILTER.size)]


_SIZE = {BPF_W: "", BPF_H: "h", BPF_B: "b"}
_JUMP = {BPF_JEQ: "jeq", BPF_JGT: "jgt", BPF_JGE: "jge", BPF_JSET: "jset"}
_AD_NAMES = {ancillary(SKF_AD_PKTTYPE): "type", ancillary(SKF_AD_VLAN_TAG_PRESENT): "vlanp"}


def disassemble(program: list[Insn]) -> str:
    """One line per instruction in ``tcpdump -d`` style (covers what build_filter emits)."""
    lines = []
    for pc, (code, jt, jf, k) in enumerate(program):
        cls, size, mode = code & 0x07, code & 0x18, code & 0xE0
        if cls == BPF_LD and mode == BPF_ABS:
            text = f"ld{_SIZE[size]} [{_AD_NAMES.get(k, k)}]"
        elif cls == BPF_LD and mode == BPF_IND:
            text = f"ld{_SIZE[size]} [x + {k}]"
        elif cls == BPF_LDX and mode == BPF_MSH:
            text = f"ldxb 4*([{k}]&0xf)"
        elif cls == BPF_JMP and code & 0xF0 == BPF_JA:
            text = f"ja {pc + 1 + k}"
        elif cls == BPF_JMP:
            text = f"{_JUMP[code & 0xF0]} #{k:#x} jt {pc + 1 + jt} jf {pc + 1 + jf}"
        elif cls == BPF_RET:
            text = f"ret #{k}"
        else:
            text = f"op {code:#04x} {jt} {jf} {k:#x}"
        lines.append(f"({pc:03d}) {text}")
    return "\n".join(lines)
