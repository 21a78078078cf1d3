"""The decision record the engine returns for every frame, and the named drop reasons.

Every frame gets exactly one decision: a verdict (forward, reply or drop) and a reason from the
tables below, so counters always add up: received = forwarded + replied + dropped by reason.
"""

from __future__ import annotations

from typing import final

FORWARD = "forward"  # rewritten and sent on (to a backend, or a reply back to the client)
REPLY = "reply"  # the LB answered itself (ICMP echo reply, time exceeded, fragmentation needed)
DROP = "drop"

# Reasons for FORWARD / REPLY.
INBOUND = "inbound"
OUTBOUND = "outbound"  # a NAT/full-NAT reply rewritten back to the VIP
ICMP_ERROR_TO_BACKEND = "icmp_error_to_backend"
ICMP_ERROR_TO_CLIENT = "icmp_error_to_client"
ECHO_REPLY = "echo_reply"
TIME_EXCEEDED = "ttl_expired_icmp_sent"
FRAG_NEEDED = "frag_needed_icmp_sent"

# Drop reasons, each with a one-line meaning (shown by `pktlb stats` and the docs).
DROP_REASONS: dict[str, str] = {
    "truncated": "frame shorter than the headers it claims",
    "not_ipv4": "ethertype is not IPv4 (ARP, IPv6, ...)",
    "vlan_tagged": "802.1Q tagged frame: pktlb serves untagged segments",
    "not_our_mac": "destination MAC is neither the LB's nor broadcast",
    "bad_ip_version": "IP version field is not 4",
    "bad_header_length": "IHL under 5 words or beyond the frame",
    "bad_total_length": "IP total length under the header or beyond the frame",
    "bad_ip_checksum": "IPv4 header checksum does not verify",
    "fragment": "IPv4 fragment: pktlb balances unfragmented flows only",
    "not_for_vip": "destination is not a VIP and the packet is no reply pktlb must rewrite",
    "lb_local": "addressed to the LB's own address (health-check replies): its kernel handles it",
    "no_service": "VIP matched but no service for this protocol and port",
    "unsupported_protocol": "IP protocol pktlb does not balance (not TCP, UDP or ICMP)",
    "bad_l4_header": "TCP/UDP header truncated or with a bad length",
    "ttl_expired": "TTL would reach 0 (an ICMP time exceeded was sent where allowed)",
    "no_live_backend": "no backend is up for the service",
    "backend_down": "the flow's backend is down and the service drops such flows",
    "gso_unsupported": "a UDP GSO super-frame cannot be tunnelled (only TCP is cut in software): GSO off",
    "bad_gso": "a GSO super-frame with a segment size of 0, below 8 bytes' worth, or a bad TCP header",
    "too_big": "encapsulated packet exceeds the MTU and DF is clear (pktlb does not fragment)",
    "snat_ports_exhausted": "no free full-NAT source port",
    "no_flow": "reply for a full-NAT port with no flow",
    "spoofed_source": "source address is one of the LB's own (VIP, SNAT or LB address)",
    "icmp_unsupported": "ICMP type pktlb does not handle for a VIP",
    "icmp_no_flow": "ICMP error quoting a flow pktlb does not know",
    "icmp_malformed": "ICMP message too short or quoting a malformed header",
    "no_route": "no route in the LB's namespace toward the frame's next destination",
    "no_neighbour": "the next hop's MAC is not resolved yet (the kernel was asked to resolve it)",
    "link_down": "the interface the route chooses has no carrier or is down",
    "internal_error": "a bug in pktlb: the frame was dropped, please report it",
}


@final
class Drop(str):
    """A drop reason a stage or a rewriter returns instead of frames.  A ``str`` (it prints and compares as
    the reason's name) of its own, final type, so ``type(x) is Drop`` (cheaper than isinstance on the hot
    path) tells it from a list of frames, for a checker too."""

    __slots__ = ()


class Decision:
    """What the engine did with one frame; cheap to create (slots), easy to print or serialise."""

    __slots__ = ("verdict", "reason", "service", "backend", "mode", "flow_hit", "detail", "partial_out",
                 "new_flow", "flow_key")

    def __init__(self, verdict: str, reason: str, service: str | None = None, backend: str | None = None,
                 mode: str | None = None, flow_hit: bool | None = None, detail: str = "") -> None:
        self.verdict = verdict
        self.reason = reason
        self.service = service
        self.backend = backend
        self.mode = mode
        self.flow_hit = flow_hit
        self.detail = detail
        self.partial_out = False
        self.new_flow = False
        self.flow_key: tuple[int, int, int, int, int] | None = None

    def as_dict(self) -> dict[str, object]:
        return {"verdict": self.verdict, "reason": self.reason, "service": self.service, "backend": self.backend,
                "mode": self.mode, "flow_hit": self.flow_hit, "detail": self.detail}

    def __repr__(self) -> str:
        return f"Decision({self.as_dict()!r})"


def drop(reason: str, detail: str = "", service: str | None = None, mode: str | None = None) -> Decision:
    return Decision(DROP, reason, service=service, mode=mode, detail=detail)
