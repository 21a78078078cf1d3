"""The lab's address conventions: a deterministic, locally administered MAC for every lab address.

Only the lab and what replays lab traffic (``pktlb replay``, ``pktlb explain``, the bench's
per-stage profile, the tests) use these MACs.  The engine never does: it learns next hops from the
kernel's routing and neighbour tables (``pktlb.adapters.netlink``), and a MAC it cannot resolve is
a counted drop, never a guess.
"""

from __future__ import annotations

from pktlb.core.config import Config
from pktlb.core.packet.addr import bytes_to_mac, ip_to_int

LAB_MAC_NOTE = "MACs not in the config are the lab's convention 02:00:<address> (pktlb.lab.addressing)"


def mac_for_ip(address: str) -> str:
    """The lab's deterministic, locally administered MAC for an address: 02:00 + the four address bytes."""
    value = ip_to_int(address)
    return bytes_to_mac(bytes([2, 0]) + value.to_bytes(4, "big"))


def lab_macs(config: Config) -> dict[str, str]:
    """Address -> lab MAC for every address a snapshot of ``config`` needs a MAC for (the LB, its
    gateway, each backend), as ``build_snapshot(macs=...)`` takes them."""
    addresses = [config.lb.address] + ([config.lb.gateway] if config.lb.gateway else [])
    addresses += [be.address for svc in config.services for be in svc.backends]
    return {address: mac_for_ip(address) for address in addresses}
