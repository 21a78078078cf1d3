"""A pure-Python classic-BPF interpreter for the tests (no root, no tcpdump): the engine's receive filter
(test_bpf.py, test_hostile.py) and the fanout steering programs (test_fanout_program.py) run here.

It follows the kernel's semantics (net/core/filter.c): 32-bit unsigned registers, a load outside the
frame or a division by zero ends the program with 0 (drop), ancillary loads at SKF_AD_OFF + n read skb
metadata (here the packet type, VLAN-tag-present and the EtherType, passed in), loads at SKF_NET_OFF + n
read byte n of the network header (``network`` bytes into the data).  ``check`` applies the kernel's
classic checker rules.
"""

from __future__ import annotations

from pktlb.adapters import bpf as B

_MASK = 0xFFFFFFFF
_SIZES = {B.BPF_W: 4, B.BPF_H: 2, B.BPF_B: 1}


class _Drop(Exception):
    pass


_SKF_NET_OFF = -0x100000


def _load(frame: bytes, offset: int, size: int, network: int = 14) -> int:
    offset = offset - (1 << 32) if offset & 0x80000000 else offset  # k is unsigned; negative = special area
    if _SKF_NET_OFF <= offset < B.SKF_AD_OFF:
        offset = network + offset - _SKF_NET_OFF
    if offset < 0 or offset + size > len(frame):
        raise _Drop
    return int.from_bytes(frame[offset:offset + size], "big")


def _alu(op: int, a: int, operand: int) -> int:
    if op in (B.BPF_DIV, B.BPF_MOD) and operand == 0:
        raise _Drop
    result = {
        B.BPF_ADD: lambda: a + operand, B.BPF_SUB: lambda: a - operand, B.BPF_MUL: lambda: a * operand,
        B.BPF_DIV: lambda: a // operand, B.BPF_MOD: lambda: a % operand, B.BPF_OR: lambda: a | operand,
        B.BPF_AND: lambda: a & operand, B.BPF_XOR: lambda: a ^ operand,
        B.BPF_LSH: lambda: a << (operand & 31), B.BPF_RSH: lambda: a >> (operand & 31), B.BPF_NEG: lambda: -a,
    }[op]()
    return result & _MASK


def run(program: list[B.Insn], frame: bytes, *, pkttype: int = 0, vlan_tag_present: bool = False,
        protocol: int = 0, network: int = 14) -> int:
    """Run ``program`` over ``frame`` (its network header ``network`` bytes in); returns what it returns (0 = drop)."""
    ancillary = {B.ancillary(B.SKF_AD_PKTTYPE): pkttype, B.ancillary(B.SKF_AD_VLAN_TAG_PRESENT): int(vlan_tag_present),
                 B.ancillary(0): protocol}  # SKF_AD_PROTOCOL
    a = x = 0
    mem = [0] * 16
    pc = 0
    try:
        while True:
            code, jt, jf, k = program[pc]
            pc += 1
            cls, size, mode, src = code & 0x07, code & 0x18, code & 0xE0, code & 0x08
            if cls == B.BPF_LD:
                if mode == B.BPF_ABS and k in ancillary:
                    a = ancillary[k]
                elif mode == B.BPF_ABS:
                    a = _load(frame, k, _SIZES[size], network)
                elif mode == B.BPF_IND:
                    a = _load(frame, (x + k) & _MASK, _SIZES[size], network)
                elif mode == B.BPF_IMM:
                    a = k
                elif mode == B.BPF_LEN:
                    a = len(frame)
                elif mode == B.BPF_MEM:
                    a = mem[k]
                else:
                    raise ValueError(f"bad ld {code:#x}")
            elif cls == B.BPF_LDX:
                if mode == B.BPF_MSH:
                    x = 4 * (_load(frame, k, 1, network) & 0xF)
                elif mode == B.BPF_IMM:
                    x = k
                elif mode == B.BPF_LEN:
                    x = len(frame)
                elif mode == B.BPF_MEM:
                    x = mem[k]
                else:
                    raise ValueError(f"bad ldx {code:#x}")
            elif cls == B.BPF_ST:
                mem[k] = a
            elif cls == B.BPF_STX:
                mem[k] = x
            elif cls == B.BPF_ALU:
                a = _alu(code & 0xF0, a, x if src else k)
            elif cls == B.BPF_JMP:
                op, operand = code & 0xF0, x if src else k
                if op == B.BPF_JA:
                    pc += k
                    continue
                taken = {B.BPF_JEQ: a == operand, B.BPF_JGT: a > operand, B.BPF_JGE: a >= operand,
                         B.BPF_JSET: bool(a & operand)}[op]
                pc += jt if taken else jf
            elif cls == B.BPF_RET:
                return (a if code & 0x18 == B.BPF_A else k) & _MASK
            elif cls == B.BPF_MISC:
                if code & 0xF8 == B.BPF_TAX:
                    x = a
                else:
                    a = x
    except _Drop:
        return 0


def check(program: list[B.Insn]) -> None:
    """What the kernel's classic checker insists on: size, jumps inside the program, a final ret."""
    if not 1 <= len(program) <= B.BPF_MAXINSNS:
        raise AssertionError(f"program length {len(program)}")
    for pc, (code, jt, jf, k) in enumerate(program):
        if code & 0x07 == B.BPF_JMP:
            targets = [pc + 1 + k] if code & 0xF0 == B.BPF_JA else [pc + 1 + jt, pc + 1 + jf]
            if any(t >= len(program) for t in targets):
                raise AssertionError(f"jump out of program at {pc}")
    if program[-1][0] & 0x07 != B.BPF_RET:
        raise AssertionError("last instruction is not ret")
