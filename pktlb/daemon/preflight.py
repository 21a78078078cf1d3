"""Start-up checks of a config against the namespace, through the netlink cache: errors that name key and value.

`pktlb run` refuses to start on any of these (issue 14's bad input): an interface that does not
exist, a VIP that is also a local address (the kernel would answer for it), a backend without a
route.  ``default_interfaces`` is what ``lb.interface`` left out means: every interface that is up,
except loopback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pktlb.core.config import Config
from pktlb.core.routing import Egress, Link

LOOPBACK = 772  # ARPHRD_LOOPBACK


class RoutingView(Protocol):
    """What the checks ask of the routing cache (``pktlb.adapters.netlink.NetlinkCache`` has it)."""

    def links(self) -> list[Link]: ...

    def local_interface(self, address: str) -> str | None: ...

    def egress(self, dst: str) -> Egress | None: ...


def default_interfaces(cache: RoutingView) -> list[str]:
    """Every interface that is up (with carrier), loopback excepted, in index order."""
    return [link.name for link in cache.links() if link.up and link.kind != LOOPBACK]


def startup_errors(config: Config, interfaces: Sequence[str], cache: RoutingView,
                   interface_key: str = "lb.interface") -> list[str]:
    """One message per problem, each naming the config key and its value; empty when all is well."""
    errors = []
    known = {link.name for link in cache.links()}
    for name in interfaces:
        if name not in known:
            errors.append(f"{interface_key}: no interface named {name!r} in this network namespace "
                          f"(there are: {', '.join(sorted(known)) or 'none'})")
    if not interfaces:
        errors.append(f"{interface_key}: no interface to serve on (none is up besides loopback)")
    for i, svc in enumerate(config.services):
        owner = cache.local_interface(svc.vip)
        if owner is not None:
            errors.append(f"service[{i}].vip = {svc.vip!r}: a local address of this namespace (on {owner}); the "
                          f"kernel would answer VIP traffic itself: remove it (ip addr del {svc.vip}/32 dev {owner})")
        for j, be in enumerate(svc.backends):
            if cache.egress(be.address) is None:
                errors.append(f"service[{i}].backend[{j}].address = {be.address!r}: no route to it in this "
                              "network namespace")
    return errors
