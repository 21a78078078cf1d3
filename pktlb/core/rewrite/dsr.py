"""``dsr``: direct server return.  Only the Ethernet header changes; the IP packet is untouched.

The backend holds the VIP on ``lo`` (with arp_ignore=1/arp_announce=2 so it never answers ARP for
it), accepts the packet as its own, and replies straight to the client through the router.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pktlb.core.packet.frame import MACS
from pktlb.core.rewrite.base import Result, Rewriter
from pktlb.core.rewrite.traits import ModeTraits

if TYPE_CHECKING:
    from pktlb.core.flowtable import FlowEntry
    from pktlb.core.snapshot import BackendView, ServiceView, Snapshot


class DsrRewriter(Rewriter):
    name = "dsr"
    traits = ModeTraits(keeps_ports=True, recomputes_backend=True, vip_on_backend=True, backends_on_link=True,
                        arp_quiet_backend=True, loose_rp_backend=True)
    summary = "destination MAC -> backend MAC; IP packet untouched; replies bypass the LB"

    def inbound(self, frame: bytearray, ip: int, l4: int, csum_off: int, svc: ServiceView, be: BackendView,
                entry: FlowEntry | None, snap: Snapshot, partial: bool) -> Result:
        frame[MACS] = be.l2  # both MACs in one slice assignment, precomputed per backend
        return [frame]
