"""Facts about one host or lab node that `pktlb doctor` judges: sysctls, links, routes, offloads.

Read only, with `ip -j`, `sysctl`, `ethtool -k` and `nft list tables`, run inside the node's
namespace (or in the current one for a real host), each with a timeout.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from typing import Any

from pktlb.lab.netns import CommandError, Namespace

FACT_TIMEOUT = 10.0


@dataclass
class Link:
    ifname: str
    mtu: int
    mac: str | None
    up: bool  # administratively up and carrier present (LOWER_UP; a TUN device needs a process attached)
    addresses: list[str]  # "a.b.c.d/len"
    kind: str  # "veth", "tun", "ipip", "loopback", ...


@dataclass
class NodeFacts:
    name: str
    role: str  # router, lb, backend, client
    namespace: str | None  # None: the current (root) namespace of a real host
    mode: str | None
    engine: str | None
    vip: str
    vip_network: str
    decap_kind: str | None = None
    lb_address: str = "198.18.0.2"
    tier: bool = False  # the lab is an LB tier (pktlb/lab/tier): nat replies go via the router
    topology: str = "one-arm"  # two-arm: the LB is the backends' gateway and routes (ip_forward=1)
    router_address: str = "198.18.0.1"
    sysctls: dict[str, str] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)
    routes: list[dict[str, Any]] = field(default_factory=list)
    offloads: dict[str, dict[str, bool]] = field(default_factory=dict)  # ifname -> {"tx": on, "tso": on, "gso": on}
    nft_tables: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def sysctl(self, key: str, default: int = 0) -> int:
        try:
            return int(self.sysctls.get(key, default))
        except ValueError:
            return default

    def effective(self, name: str, ifname: str) -> int:
        """rp_filter, arp_ignore, arp_announce: the kernel uses the larger of `all` and the interface."""
        return max(self.sysctl(f"net.ipv4.conf.all.{name}"), self.sysctl(f"net.ipv4.conf.{ifname}.{name}"))

    @property
    def netns(self) -> Namespace:
        return Namespace(self.namespace)

    def fix_prefix(self) -> str:
        return self.netns.shell_prefix()

    def data_links(self) -> list[Link]:
        """The interfaces that carry traffic to or from other hosts: up, with an address, not lo or a tunnel."""
        return [link for link in self.links.values() if link.kind not in ("loopback", "tun", "ipip")
                and not link.ifname.startswith(("lo", "tunl", "pktlbtun")) and link.up and link.addresses]


OFFLOAD_NAMES = {"tx-checksumming": "tx", "tcp-segmentation-offload": "tso", "generic-segmentation-offload": "gso"}


def collect(node: NodeFacts) -> NodeFacts:
    """Fill in a node's facts; commands that fail are noted in ``node.errors``, not raised."""
    node.sysctls = _sysctls(node)
    node.links = _links(node)
    node.routes = _json(node, ["ip", "-j", "route", "show"]) or []
    if shutil.which("ethtool"):
        for link in node.data_links():
            node.offloads[link.ifname] = _offloads(node, link.ifname)
    else:
        node.errors.append("ethtool is not installed (apt-get install ethtool): offloads not checked")
    if node.role == "lb" and shutil.which("nft"):
        out = _text(node, ["nft", "list", "tables"])
        node.nft_tables = [line.split()[-1] for line in out.splitlines() if line.startswith("table")]
    return node


def _text(node: NodeFacts, argv: list[str]) -> str:
    try:
        return node.netns.run(argv, timeout=FACT_TIMEOUT, check=False).stdout
    except CommandError as exc:
        node.errors.append(str(exc))
        return ""


def _json(node: NodeFacts, argv: list[str]) -> Any:
    out = _text(node, argv)
    try:
        return json.loads(out) if out.strip() else None
    except json.JSONDecodeError:
        node.errors.append(f"unreadable output of {' '.join(argv)}")
        return None


def _sysctls(node: NodeFacts) -> dict[str, str]:
    out = _text(node, ["sysctl", "-a", "--pattern", r"^net\.ipv4\.(ip_forward$|conf\.)"])
    values = {}
    for line in out.splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            values[key.strip()] = value.strip()
    return values


def _links(node: NodeFacts) -> dict[str, Link]:
    links = {}
    for entry in _json(node, ["ip", "-j", "-d", "addr", "show"]) or []:
        flags = entry.get("flags", [])
        kind = (entry.get("linkinfo") or {}).get("info_kind") or entry.get("link_type", "")
        addresses = [f"{a['local']}/{a['prefixlen']}" for a in entry.get("addr_info", []) if a.get("family") == "inet"]
        links[entry["ifname"]] = Link(entry["ifname"], int(entry.get("mtu", 0)), entry.get("address"),
                                      "UP" in flags and "LOWER_UP" in flags, addresses, kind)
    return links


def _offloads(node: NodeFacts, ifname: str) -> dict[str, bool]:
    out = _text(node, ["ethtool", "-k", ifname])
    found = {}
    for line in out.splitlines():
        name, _, value = line.partition(":")
        if name in OFFLOAD_NAMES:
            found[OFFLOAD_NAMES[name]] = value.strip().startswith("on")
    return found
