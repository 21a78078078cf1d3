"""A two-armed lab built with plain `ip` commands, for the netlink cache and guard tests (root only).

    c (198.18.201.2, .3) --c-lb/lb-c-- lb --lb-s/s-lb-- s (198.18.202.2, .3)
       lb-c 198.18.201.1/24                 lb-s 198.18.202.1/24

Namespaces get a random ``pktlb-nl<hex>-`` prefix and are deleted by ``teardown`` (also after a failure).
"""

from __future__ import annotations

import json
import secrets
import subprocess

from pktlb.core.packet.addr import mac_to_bytes


def sh(*argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=15)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done


class TwoArm:
    """Three namespaces joined by two veth pairs; ``lb`` has routes over both."""

    def __init__(self) -> None:
        self.prefix = f"pktlb-nl{secrets.token_hex(3)}-"
        self.created: list[str] = []

    def ns(self, node: str) -> str:
        return self.prefix + node

    def ip(self, node: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", self.ns(node), *args, check=check)

    def build(self) -> None:
        for node in ("lb", "c", "s"):
            sh("ip", "netns", "add", self.ns(node))
            self.created.append(self.ns(node))
            self.ip(node, "link", "set", "lo", "up")
        for side, net in (("c", "201"), ("s", "202")):
            self.ip("lb", "link", "add", f"lb-{side}", "type", "veth", "peer", "name", f"{side}-lb",
                    "netns", self.ns(side))
            self.ip("lb", "addr", "add", f"198.18.{net}.1/24", "dev", f"lb-{side}")
            self.ip(side, "addr", "add", f"198.18.{net}.2/24", "dev", f"{side}-lb")
            self.ip(side, "addr", "add", f"198.18.{net}.3/24", "dev", f"{side}-lb")
            self.ip("lb", "link", "set", f"lb-{side}", "up")
            self.ip(side, "link", "set", f"{side}-lb", "up")
            # A host that changes its MAC announces it (gratuitous ARP), as real servers do.
            sh("ip", "netns", "exec", self.ns(side), "sysctl", "-qw", f"net.ipv4.conf.{side}-lb.arp_notify=1")
        for route in (["198.18.210.0/24", "via", "198.18.201.2"],
                      ["198.18.211.0/24", "via", "198.18.202.2"],
                      ["198.18.211.128/25", "via", "198.18.201.2"],
                      ["198.18.212.0/24", "via", "198.18.201.2", "metric", "200"],
                      ["198.18.212.0/24", "via", "198.18.202.2", "metric", "100"],
                      ["default", "via", "198.18.202.2"],
                      ["blackhole", "198.18.213.0/24"],
                      ["unreachable", "198.18.214.0/24"],
                      ["local", "198.18.215.0/24", "dev", "lo", "table", "local"]):
            self.ip("lb", "route", "add", *route)

    def teardown(self) -> None:
        for ns in reversed(self.created):
            sh("ip", "netns", "del", ns, check=False)

    def mac(self, node: str, ifname: str) -> bytes:
        return mac_to_bytes(json.loads(self.ip(node, "-j", "link", "show", ifname).stdout)[0]["address"])

    def route_get(self, dst: str) -> tuple[str, str] | None:
        """(device, next hop) as the kernel chooses them for ``dst``; None if it would not forward."""
        done = self.ip("lb", "-j", "route", "get", dst, check=False)
        if done.returncode != 0:
            return None
        found = json.loads(done.stdout)[0]
        if found.get("type", "unicast") != "unicast" or found.get("dev") == "lo":
            return None
        return found["dev"], found.get("gateway", dst)
