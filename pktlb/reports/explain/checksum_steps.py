"""The RFC 1624 arithmetic behind each checksum the data path changed, shown step by step.

For a header whose checksum HC covers 16-bit words m, changing some words m -> m' gives
HC' = ~(~HC + sum(~m + m')) in one's-complement arithmetic (RFC 1624 eqn. 3).  Given the frame
before and after the data path, this module finds the changed covered words (the IPv4 header's
own words; for TCP/UDP the pseudo-header, header and payload words; for ICMP its message), redoes
the update with every intermediate value, and asks scapy to recompute the field in full.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scapy.layers.l2 import Ether
from scapy.packet import NoPayload

from pktlb.core.checksum import delta16, fold, update, update_l4
from pktlb.core.packet.ipv4 import PROTO_ICMP, PROTO_UDP

_IP_WORDS = ("version/IHL/TOS", "total length", "identification", "flags/fragment offset", "TTL/protocol",
             "header checksum", "source address (high)", "source address (low)",
             "destination address (high)", "destination address (low)")
_PSEUDO_WORDS = ("pseudo: source address (high)", "pseudo: source address (low)",
                 "pseudo: destination address (high)", "pseudo: destination address (low)",
                 "pseudo: zero/protocol", "pseudo: L4 length")
_L4_WORDS = {
    6: ("source port", "destination port", "sequence number (high)", "sequence number (low)",
        "acknowledgment (high)", "acknowledgment (low)", "data offset/flags", "window", "checksum",
        "urgent pointer"),
    17: ("source port", "destination port", "length", "checksum"),
    1: ("type/code", "checksum", "identifier / rest of header", "sequence / rest of header"),
}
_L4_NAMES = {6: "TCP", 17: "UDP", 1: "ICMP"}
_CSUM_WORD = {6: 8, 17: 3, 1: 1}  # index of the checksum word in each L4 header


@dataclass(frozen=True)
class WordChange:
    word: str
    old: int
    new: int

    @property
    def term(self) -> int:
        """~m + m', folded: this word's contribution to the update."""
        return delta16(self.old, self.new)

    def as_dict(self) -> dict[str, object]:
        return {"word": self.word, "old": f"0x{self.old:04x}", "new": f"0x{self.new:04x}",
                "term": f"0x{self.term:04x}"}


@dataclass
class ChecksumStep:
    header: str  # "IP header", "TCP", "UDP", "ICMP" (with " (inner)" inside a tunnel)
    old: int  # the field before
    written: int  # the field the data path wrote
    changes: list[WordChange]
    incremental: int | None = None  # HC' by RFC 1624 (None when the update does not apply)
    raw_sum: int = 0  # ~HC + every term, before folding
    scapy: int | None = None  # scapy's full recomputation of the field in the output frame
    engine_delta: tuple[str, int] | None = None  # (where it lives, value) of the engine's precomputed delta
    notes: list[str] = field(default_factory=list)

    @property
    def terms_sum(self) -> int:
        return fold(sum(c.term for c in self.changes))

    @property
    def delta_matches(self) -> bool | None:
        if self.engine_delta is None:
            return None
        return self.terms_sum % 0xFFFF == self.engine_delta[1] % 0xFFFF  # 0x0000 and 0xffff are both zero

    @property
    def agrees(self) -> bool:
        return self.scapy is not None and self.written == self.scapy and self.incremental in (None, self.written)

    def as_dict(self) -> dict[str, object]:
        return {
            "header": self.header, "old": hexed(self.old), "new": hexed(self.written),
            "changed_words": [c.as_dict() for c in self.changes],
            "not_old": hexed(~self.old & 0xFFFF), "sum": f"0x{self.raw_sum:x}", "folded": hexed(fold(self.raw_sum)),
            "incremental": hexed(self.incremental), "scapy": hexed(self.scapy), "agrees": self.agrees,
            "engine_delta": None if self.engine_delta is None else
            {"source": self.engine_delta[0], "value": hexed(self.engine_delta[1]),
             "sum_of_terms": hexed(self.terms_sum), "matches": self.delta_matches},
            "notes": self.notes,
        }


def hexed(value: int | None) -> str | None:
    return None if value is None else f"0x{value:04x}"


def _words(data: bytes) -> list[int]:
    if len(data) & 1:
        data += b"\0"
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


def apply_update(step: ChecksumStep, udp: bool = False) -> None:
    """Fill ``step.raw_sum`` and ``step.incremental`` from its old checksum and changed words (RFC 1624 eqn. 3)."""
    delta = sum(c.term for c in step.changes)
    step.raw_sum = (~step.old & 0xFFFF) + delta
    if udp and update(step.old, delta) == 0:
        step.notes.append("a computed UDP checksum of 0 is sent as 0xffff (RFC 768)")
    step.incremental = update_l4(step.old, delta, udp=udp)  # the function the rewriters run on the frame


def ip_header_step(before: bytes, after: bytes, ip_b: int, ip_a: int, label: str = "IP header") -> ChecksumStep | None:
    """The IPv4 header checksum update between the header at ``ip_b`` (before) and ``ip_a`` (after)."""
    ihl_b, ihl_a = (before[ip_b] & 15) * 4, (after[ip_a] & 15) * 4
    old_words, new_words = _words(before[ip_b:ip_b + ihl_b]), _words(after[ip_a:ip_a + ihl_a])
    step = ChecksumStep(label, old_words[5], new_words[5], [])
    if ihl_a != ihl_b:
        step.notes.append("header length changed: the checksum must be computed in full")
    else:
        step.changes = [WordChange(_IP_WORDS[i] if i < 10 else f"option word {i - 10}", o, n)
                        for i, (o, n) in enumerate(zip(old_words, new_words, strict=True)) if i != 5 and o != n]
        if not step.changes and step.old == step.written:
            return None
        apply_update(step)
    step.scapy = scapy_checksum(after, ip_a)
    return step


def l4_step(before: bytes, after: bytes, ip_b: int, ip_a: int, label: str | None = None) -> ChecksumStep | None:
    """The TCP, UDP or ICMP checksum update of the packet whose IP header is at ``ip_b`` / ``ip_a``."""
    proto = before[ip_b + 9]
    if proto not in _L4_WORDS or after[ip_a + 9] != proto:
        return None
    covered_b, l4_b = _covered(before, ip_b)
    covered_a, l4_a = _covered(after, ip_a)
    names = (_PSEUDO_WORDS if proto != PROTO_ICMP else ()) + _L4_WORDS[proto]
    skip = len(_PSEUDO_WORDS if proto != PROTO_ICMP else ()) + _CSUM_WORD[proto]
    old_words, new_words = _words(covered_b), _words(covered_a)
    old, written = old_words[skip], new_words[skip]
    step = ChecksumStep(label or _L4_NAMES[proto], old, written, [])
    if proto == PROTO_UDP and old == 0:
        if written != 0:
            step.notes.append("UDP checksum was 0 (none) but the output has one")
        else:
            step.notes.append("UDP checksum 0 means 'no checksum' (RFC 768): left as 0, nothing to update")
            return step
    if len(covered_a) != len(covered_b):
        step.notes.append("length changed: the checksum must be computed in full")
    else:
        step.changes = [WordChange(names[i] if i < len(names) else f"payload word {i - len(names)}", o, n)
                        for i, (o, n) in enumerate(zip(old_words, new_words, strict=True)) if i != skip and o != n]
        if not step.changes and old == written:
            return None
        apply_update(step, udp=proto == PROTO_UDP)
    step.scapy = scapy_checksum(after, l4_a)
    return step


def _covered(frame: bytes, ip: int) -> tuple[bytes, int]:
    """(bytes the L4 checksum covers, pseudo-header first for TCP/UDP; offset of the L4 header)."""
    ihl = (frame[ip] & 15) * 4
    total = int.from_bytes(frame[ip + 2:ip + 4], "big")
    l4 = ip + ihl
    body = bytes(frame[l4:ip + total])
    proto = frame[ip + 9]
    if proto == PROTO_ICMP:
        return body, l4
    pseudo = bytes(frame[ip + 12:ip + 20]) + bytes([0, proto]) + len(body).to_bytes(2, "big")
    return pseudo + body, l4


def scapy_checksum(frame: bytes, offset: int) -> int | None:
    """scapy's own full computation of the checksum of the header at ``offset`` in ``frame``."""
    depth = _depth_at(Ether(bytes(frame)), offset)
    if depth is None:
        return None
    pkt = Ether(bytes(frame))
    target = _layer_at(pkt, depth)
    del target.chksum
    return int(_layer_at(Ether(bytes(pkt)), depth).chksum)


def _depth_at(pkt, offset: int) -> int | None:
    at, depth, layer = 0, 0, pkt
    while not isinstance(layer, NoPayload):
        if at == offset and depth > 0 and any(f.name == "chksum" for f in layer.fields_desc):
            return depth
        at += len(bytes(layer)) - len(bytes(layer.payload))
        depth += 1
        layer = layer.payload
    return None


def _layer_at(pkt, depth: int):
    for _ in range(depth):
        pkt = pkt.payload
    return pkt
