"""Where each frame the engine emits leaves, and to which MAC: the kernel's routes and neighbours.

The pure data path rewrites addresses and ports; it does not know the namespace.  Before a frame
is sent, ``Egress.target`` picks the interface the routing table chooses for the frame's next
destination and writes the Ethernet addresses: the next hop's MAC (from the neighbour table, kept
current by ``pktlb.adapters.netlink.NetlinkCache``), then the egress interface's own MAC.

    frame toward a backend (inbound, ICMP error relayed to it)  -> route to the backend's address
        (nat, fullnat: the rewritten destination; tunnel: the outer destination; dsr: the backend,
        whose address is not in the frame, hence the decision's backend)
    anything else (nat/fullnat replies, the LB's own ICMP)     -> route to the frame's destination,
        or to ``lb.gateway`` when the config names one (an override)

A next hop the kernel has not resolved yet is asked for (RTM_NEWNEIGH with NTF_USE, at most once a
second per next hop) and the frame is dropped under ``no_neighbour``; nothing is ever sent to a
guessed MAC.  Answers are memoised per destination until the cache reports any change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple, final

from pktlb.core.decision import FORWARD, ICMP_ERROR_TO_BACKEND, INBOUND, Decision
from pktlb.core.packet.addr import int_to_ip, ip_to_int, mac_to_bytes
from pktlb.core.packet.frame import dst_addr
from pktlb.core.snapshot import Snapshot

log = logging.getLogger("pktlb.engine")
MEMO_MAX = 1 << 16

# Drop reasons of this stage (also in pktlb.core.decision.DROP_REASONS).
NO_ROUTE, NO_NEIGHBOUR, LINK_DOWN = "no_route", "no_neighbour", "link_down"


@final  # final: `type(where) is Route` then tells a checker the other branch holds a drop reason
class Route(NamedTuple):
    """Where a frame leaves: the port that sends it and the 12 bytes of Ethernet addresses (dst, src)."""

    port: Any
    l2: bytes


class Egress:
    """Routes frames out of the right port.  ``port_for(ifindex, ifname)`` returns the port that sends
    on an interface (the forwarder opens a send-only one for an interface it does not receive on)."""

    def __init__(self, cache: Any, port_for: Callable[[int, str], Any]) -> None:
        self.cache, self.port_for = cache, port_for
        self.memo: dict[int, Route] = {}
        self.to_backend: dict[tuple[str | None, str | None], int] = {}
        self.mac_overrides: dict[int, bytes] = {}
        self.gateway: int | None = None
        self.gateway_mac: bytes | None = None
        self.unresolved: dict[int, str] = {}  # next hop -> reason, for `pktlb stats`

    def install(self, snap: Snapshot) -> None:
        """Take the backends, configured MACs and gateway override of a new snapshot."""
        lb = snap.config.lb
        self.gateway = ip_to_int(lb.gateway) if lb.gateway else None
        self.gateway_mac = mac_to_bytes(lb.gateway_mac) if lb.gateway_mac else None
        self.to_backend = {(svc.name, be.name): be.addr for svc in snap.services.values() for be in svc.backends}
        self.mac_overrides = {ip_to_int(be.address): mac_to_bytes(be.mac)
                              for svc in snap.config.services for be in svc.backends if be.mac}
        self.memo.clear()

    def forget(self, _kinds: object = None) -> None:
        """Drop every memoised answer (the routing cache changed)."""
        self.memo.clear()

    def target(self, frame: bytearray, dec: Decision) -> Route | str:
        """The Route for ``frame``, or a drop reason (a str: tell them apart with ``type(x) is Route``)."""
        if dec.verdict == FORWARD and (dec.reason == INBOUND or dec.reason == ICMP_ERROR_TO_BACKEND):
            dst = self.to_backend.get((dec.service, dec.backend))
            if dst is None:
                return NO_ROUTE
            found = self.memo.get(dst)
            return found if found is not None else self._resolve(dst, True)
        dst = dst_addr(frame)
        found = self.memo.get(dst)
        return found if found is not None else self._resolve(dst, False)

    def _resolve(self, dst: int, to_backend: bool) -> Route | str:
        hop, override = dst, self.mac_overrides.get(dst) if to_backend else None
        if not to_backend and self.gateway is not None:
            hop, override = self.gateway, self.gateway_mac
        found = self.cache.egress(hop)
        if found is None or len(found.mac) != 6:
            return self._fail(hop, NO_ROUTE)
        if not found.up:
            return self._fail(hop, LINK_DOWN)
        mac = override or found.next_hop_mac
        if mac is None:  # the cache has asked the kernel to resolve it; a notification will follow
            return self._fail(found.next_hop, NO_NEIGHBOUR)
        if self.unresolved:
            self.unresolved.pop(hop, None)
            self.unresolved.pop(found.next_hop, None)
        result = Route(self.port_for(found.ifindex, found.ifname), bytes(mac) + bytes(found.mac))
        if len(self.memo) >= MEMO_MAX:
            self.memo.clear()
        self.memo[dst] = result
        return result

    def _fail(self, hop: int, reason: str) -> str:
        if self.unresolved.get(hop) != reason and len(self.unresolved) < 1024:
            self.unresolved[hop] = reason
            log.info("next hop %s: %s (frames toward it are dropped until it resolves)", int_to_ip(hop), reason)
        return reason

    def path_mtus(self, snap: Snapshot) -> dict[str, int]:
        """Backend address -> MTU of the path toward it (route metric, else the egress interface's)."""
        mtus = {}
        for svc in snap.services.values():
            for be in svc.backends:
                found = self.cache.egress(be.addr)
                if found is not None:
                    mtus[be.address] = found.path_mtu
        return mtus

    def summary(self) -> dict[str, object]:
        return {"memoised": len(self.memo),
                "unresolved": {int_to_ip(hop): reason for hop, reason in list(self.unresolved.items())[:32]}}


def await_next_hops(cache: Any, snap: Snapshot, timeout: float) -> bool:
    """Ask the kernel for every backend's next hop and wait, bounded (start-up only, never the packet
    loop), until each is resolved or has no route; False if some are still unresolved."""
    addresses = [be.addr for svc in snap.services.values() for be in svc.backends]
    for address in addresses:
        cache.egress(address)

    def resolved() -> bool:
        found = [cache.egress(address) for address in addresses]
        return all(e is None or e.next_hop_mac is not None for e in found)

    return bool(cache.wait(resolved, timeout))
