"""Kernel routes and next-hop objects for the router's resilient ECMP (pyroute2 to read, `ip` to write).

``multipath_routes(table)`` reads one kernel table's IPv4 routes as {prefix: gateways} (a route with
RTA_MULTIPATH gives all its gateways); ``RouteEvents`` is a netlink socket subscribed to IPv4 route
changes that the caller selects on.  Next-hop objects and resilient groups are written with
``ip nexthop`` / ``ip route`` (pyroute2 0.9 has no next-hop object API): ``run_ip`` runs one such
command with a timeout in the caller's own namespace.
"""

from __future__ import annotations

import ipaddress
import subprocess
from typing import Any

RTMGRP_IPV4_ROUTE = 0x40
IP_TIMEOUT = 5.0


class NexthopError(RuntimeError):
    pass


def _gateway_of(attrs: Any) -> str | None:
    for key, value in attrs:
        if key == "RTA_GATEWAY":
            return str(value)
    return None


def multipath_routes(ipr: Any, table: int) -> dict[str, tuple[str, ...]]:
    """{'198.19.0.100/32': ('198.18.0.201', '198.18.0.202')} for every IPv4 route of ``table``
    that goes via a gateway (sorted, so equal sets compare equal)."""
    found: dict[str, tuple[str, ...]] = {}
    for msg in ipr.route("dump", family=2, table=table):
        if msg.get_attr("RTA_TABLE") != table:
            continue
        dst = msg.get_attr("RTA_DST") or "0.0.0.0"
        prefix = str(ipaddress.IPv4Network(f"{dst}/{msg['dst_len']}"))
        gateways: list[str] = []
        multipath = msg.get_attr("RTA_MULTIPATH")
        if multipath:
            for hop in multipath:
                gw = _gateway_of(hop.get("attrs", []))
                if gw:
                    gateways.append(gw)
        else:
            gw = msg.get_attr("RTA_GATEWAY")
            if gw:
                gateways.append(str(gw))
        if gateways:
            found[prefix] = tuple(sorted(set(gateways), key=lambda a: int(ipaddress.IPv4Address(a))))
    return found


class RouteEvents:
    """A netlink socket that turns readable when any IPv4 route changes (``fileno``/``drain``)."""

    def __init__(self) -> None:
        from pyroute2 import IPRoute

        self.ipr = IPRoute()
        self.ipr.bind(groups=RTMGRP_IPV4_ROUTE)
        self.reader = IPRoute()  # dumps go on a socket of their own, not mixed with events

    def fileno(self) -> int:
        return int(self.ipr.fileno())

    def drain(self) -> int:
        """Read the pending notifications (their content does not matter: the caller re-dumps)."""
        return len(list(self.ipr.get()))

    def routes(self, table: int) -> dict[str, tuple[str, ...]]:
        return multipath_routes(self.reader, table)

    def close(self) -> None:
        self.ipr.close()
        self.reader.close()


def run_ip(args: list[str]) -> str:
    """Run ``ip ARGS`` in this namespace; NexthopError with its message when it fails."""
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NexthopError(f"ip {' '.join(args)}: {exc}") from None
    if done.returncode != 0:
        raise NexthopError(f"ip {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout
