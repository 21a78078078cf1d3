"""``dsr``: direct server return.  Only the Ethernet header changes; the IP packet is untouched.

The backend holds the VIP on ``lo`` (with arp_ignore=1/arp_announce=2 so it never answers ARP for
it), accepts the packet as its own, and replies straight to the client through the router.
"""

from __future__ import annotations

from pktlb.core.packet.frame import MACS
from pktlb.core.rewrite.base import Result, Rewriter
from pktlb.core.rewrite.traits import ModeTraits


class DsrRewriter(Rewriter):
    name = "dsr"
    traits = ModeTraits(keeps_ports=True, recomputes_backend=True, vip_on_backend=True, backends_on_link=True,
                        arp_quiet_backend=True, loose_rp_backend=True)
    summary = "destination MAC -> backend MAC; IP packet untouched; replies bypass the LB"

    def inbound(self, frame, ip, l4, csum_off, svc, be, entry, snap, partial) -> Result:  # type: ignore[override]
        frame[MACS] = be.l2  # both MACs in one slice assignment, precomputed per backend
        return [frame]
