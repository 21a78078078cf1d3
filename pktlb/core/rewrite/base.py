"""The rewriter interface (what a mode does to a packet, and its traits) and the in-place helpers the modes share.

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

What the rest of pktlb must know about a mode (replies through the LB, SNAT, encapsulation
overhead, what backends must set up) is the rewriter's ``traits`` (``traits.ModeTraits``); the
modes are listed in ``registry``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from pktlb.core.checksum import fold
from pktlb.core.packet.ipv4 import U16
from pktlb.core.rewrite.traits import ModeTraits

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
    traits: ClassVar[ModeTraits]
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

    def relay_icmp_error(self, frame: bytearray, icmp: int, end: int, svc: ServiceView, be: BackendView,
                         entry: FlowEntry | None, snap: Snapshot) -> Result:
        """An ICMP error to the VIP about one of the flow's replies, toward the flow's backend.  The
        modes that leave the IP packet alone forward it as they forward the flow's packets."""
        return self.inbound(frame, 14, icmp, 0, svc, be, entry, snap, False)  # type: ignore[arg-type]
