"""The rewriter interface: what a mode does to a packet, and its traits (checksum updates: ``core.checksum``).

A rewriter changes a frame in place (or, for the tunnel, grows it) and returns the frames to
emit, or a ``Drop`` (a named reason).  Arguments are positional and precomputed by the engine so the
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

from pktlb.core.decision import Drop
from pktlb.core.packet.frame import IP
from pktlb.core.rewrite.traits import ModeTraits

if TYPE_CHECKING:
    from pktlb.core.flowtable import FlowEntry, FlowTable
    from pktlb.core.snapshot import BackendView, ServiceView, Snapshot

Result = list[bytearray] | Drop  # the frames to emit, or why not
NOT_FOR_VIP = Drop("not_for_vip")


class Rewriter(ABC):
    name: ClassVar[str]
    traits: ClassVar[ModeTraits]
    summary: ClassVar[str]

    @abstractmethod
    def inbound(self, frame: bytearray, ip: int, l4: int, csum_off: int, svc: ServiceView, be: BackendView,
                entry: FlowEntry | None, snap: Snapshot, partial: bool) -> Result:
        """Client -> VIP packet toward the chosen backend."""

    def outbound(self, frame: bytearray, ip: int, l4: int, csum_off: int, svc: ServiceView, be: BackendView,
                 entry: FlowEntry | None, snap: Snapshot, partial: bool) -> Result:
        """Backend -> client reply coming back through the LB (NAT modes only)."""
        return NOT_FOR_VIP

    def on_new_flow(self, entry: FlowEntry, svc: ServiceView, be: BackendView, flows: FlowTable) -> str | None:
        """Per-flow set-up on a miss or a reschedule (full-NAT allocates its port here); a drop reason or None."""
        return None

    def relay_icmp_error(self, frame: bytearray, icmp: int, end: int, svc: ServiceView, be: BackendView,
                         entry: FlowEntry | None, snap: Snapshot) -> Result:
        """An ICMP error to the VIP about one of the flow's replies, toward the flow's backend.  The
        modes that leave the IP packet alone forward it as they forward the flow's packets."""
        return self.inbound(frame, IP, icmp, 0, svc, be, entry, snap, False)
