"""The rewriter interface, its registry, and the in-place field helpers the modes share.

A rewriter changes a frame in place (or, for the tunnel, grows it) and returns the frames to
emit, or a drop-reason string.  Arguments are positional and precomputed by the engine so the
per-packet cost stays a few slice assignments and integer operations:

    frame     the received frame (bytearray), rewritten in place
    ip, l4    offsets of the IPv4 and L4 headers
    csum_off  offset of the L4 checksum field, or 0 when there is none to update (UDP checksum 0)
    svc, be   the ServiceView and BackendView
    entry     the FlowEntry (full-NAT keeps per-flow deltas there)
    snap      the Snapshot (LB MAC and address, gateway MAC)
    partial   True when the L4 checksum field is unfinished (CHECKSUM_PARTIAL from a veth peer)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from pktlb.core.checksum import fold
from pktlb.core.packet.ipv4 import U16

if TYPE_CHECKING:
    from pktlb.core.flowtable import FlowEntry, FlowTable
    from pktlb.core.snapshot import BackendView, ServiceView, Snapshot

Result = list[bytearray] | str
_unpack16 = U16.unpack_from
_pack16 = U16.pack_into


def apply_delta(frame: bytearray, off: int, delta: int) -> None:
    """RFC 1624 update of the finished checksum at ``off``."""
    c = _unpack16(frame, off)[0]
    _pack16(frame, off, ~fold((~c & 0xFFFF) + delta) & 0xFFFF)


def apply_l4_delta(frame: bytearray, off: int, delta: int, pseudo_delta: int, partial: bool, udp: bool) -> None:
    """Update a TCP/UDP checksum: the full delta when finished, the address-only delta when partial
    (an unfinished field holds only the pseudo-header sum; the kernel adds the header and data later)."""
    c = _unpack16(frame, off)[0]
    if partial:
        _pack16(frame, off, fold(c + pseudo_delta))
        return
    c = ~fold((~c & 0xFFFF) + delta) & 0xFFFF
    if udp and c == 0:
        c = 0xFFFF  # RFC 768: a computed 0 is sent as all ones; 0 means "no checksum"
    _pack16(frame, off, c)


class Rewriter(ABC):
    name: ClassVar[str]
    replies_via_lb: ClassVar[bool]  # do the backend's replies come back through the LB?
    summary: ClassVar[str]

    @abstractmethod
    def inbound(self, frame: bytearray, ip: int, l4: int, csum_off: int, svc: ServiceView, be: BackendView,
                entry: FlowEntry, snap: Snapshot, partial: bool) -> Result:
        """Client -> VIP packet toward the chosen backend."""

    def outbound(self, frame: bytearray, ip: int, l4: int, csum_off: int, svc: ServiceView, be: BackendView,
                 entry: FlowEntry | None, snap: Snapshot, partial: bool) -> Result:
        """Backend -> client reply coming back through the LB (NAT modes only)."""
        return "not_for_vip"

    def on_new_flow(self, entry: FlowEntry, svc: ServiceView, be: BackendView, flows: FlowTable) -> str | None:
        """Per-flow set-up on a miss or a reschedule (full-NAT allocates its port here); a drop reason or None."""
        return None


REGISTRY: dict[str, Rewriter] = {}


def register(cls: type[Rewriter]) -> type[Rewriter]:
    REGISTRY[cls.name] = cls()
    return cls


def get_rewriter(name: str) -> Rewriter:
    from pktlb.core.rewrite import dsr, fullnat, nat, tunnel  # noqa: F401  (each registers itself)

    if name not in REGISTRY:
        raise ValueError(f"unknown mode {name!r}: expected one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]
