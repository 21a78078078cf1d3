"""What a forwarding mode asks of the rest of pktlb: one record of traits per rewriter.

The engine, the snapshot, the kernel filter, the config checks, the host checks, the lab and the
reports ask these questions instead of testing a mode's name, so a new mode is one new rewriter
with its traits, not a hunt through the tree.  ``traits_of`` answers for a name that is no packet
mode (``l7``, an unknown word in a recorded lab) with a record where every trait is off.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModeTraits:
    # The data path.
    replies_via_lb: bool = False  # the backend's replies come back through the LB, which rewrites them (outbound)
    reverse_nat: bool = False  # replies are known by the backend's address:port and rewritten back to the VIP;
    #                            backends must route clients via the LB (nat)
    needs_snat: bool = False  # the LB sources packets from its own SNAT address and port range (fullnat)
    decrements_ttl: bool = False  # the LB routes the packet: TTL - 1, time exceeded at 1
    keeps_ports: bool = False  # the ports are not rewritten: backends must listen on the service port
    encap_overhead: int = 0  # bytes put in front of the client's IP packet (the engine cuts GSO super-frames)
    finishes_checksum: bool = False  # an unfinished (partial) L4 checksum leaves finished
    recomputes_backend: bool = False  # no per-flow state on the wire: consistent hashing finds a flow's backend
    # What the backends (and the network between) must provide.
    vip_on_backend: bool = False  # backends accept packets addressed to the VIP as their own
    backends_on_link: bool = False  # only the MAC is rewritten: backends share the LB's L2 segment
    arp_quiet_backend: bool = False  # backends must not answer ARP for the VIP
    loose_rp_backend: bool = False  # backends see client sources on an unexpected path (rp_filter loose/off)
    needs_decapsulator: bool = False  # backends strip an outer header first (tunl0 or `pktlb decap`)


NO_TRAITS = ModeTraits()
