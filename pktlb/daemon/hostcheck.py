"""What would break each mode in this namespace: checks as pure functions over collected facts.

For `pktlb doctor` in any namespace (not only a lab's) and for warnings at `pktlb run`.  Facts are
plain records (``HostFacts``), filled by ``pktlb.daemon.host_facts`` from the kernel or by hand in
the tests; each check (listed in ``pktlb.daemon.hostcheck_registry``) reads them and returns
findings ``{check, node, ok, level, message, fix}`` (level ok, warn: works with a caveat, fail:
traffic will break), the same shape as the lab's doctor.  Two sides:

* the director (where the engine runs, facts + the engine's config): a VIP that is a local address,
  a VIP inside a connected subnet (nobody answers ARP for it), a backend without a route, over a
  link that is down, behind a gateway in DSR, without a resolved neighbour, a tunnel path MTU
  without room for the outer header, forwarding without the guard, TX checksum offload on veth,
  SNAT ports inside the kernel's own ephemeral range;
* a backend (facts + the services it serves, ``services``): the VIP on lo, arp_ignore and
  arp_announce for DSR, rp_filter for DSR and tunnel, the route back through the director for NAT.

This module holds the records; the checks are in ``hostcheck_director`` and ``hostcheck_backend``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from pktlb.core.packet.addr import in_network, ip_to_int
from pktlb.core.rewrite.registry import traits_of
from pktlb.core.rewrite.traits import ModeTraits


@dataclass(frozen=True)
class LinkFacts:
    name: str
    kind: str  # "veth", "loopback", "tun", "" (physical or unknown) ...
    mtu: int
    up: bool
    tx_checksum: bool | None = None  # ethtool's tx-checksumming; None: not known
    addresses: tuple[str, ...] = ()  # "a.b.c.d/len"


@dataclass(frozen=True)
class PathFacts:
    """The director's way to one backend, as its routing cache answers (None fields: no route)."""

    backend: str
    ifname: str | None
    next_hop: str | None
    mac_known: bool = False
    up: bool = False
    path_mtu: int = 0


@dataclass(frozen=True)
class ServiceFacts:
    name: str
    mode: str
    vip: str
    snat_address: str | None = None
    snat_ports: tuple[int, int] | None = None
    backends: tuple[str, ...] = ()


@dataclass
class HostFacts:
    node: str  # the namespace's name, or "host"
    sysctls: dict[str, int] = field(default_factory=dict)
    links: dict[str, LinkFacts] = field(default_factory=dict)
    local: dict[str, str] = field(default_factory=dict)  # address -> interface, for every address the kernel owns
    connected: list[tuple[str, str]] = field(default_factory=list)  # (network/len, ifname) of link-scope routes
    default_gateway: str | None = None
    services: list[ServiceFacts] = field(default_factory=list)
    paths: dict[str, PathFacts] = field(default_factory=dict)  # backend address -> path
    guard: bool = False  # the engine's guard table is installed
    local_port_range: tuple[int, int] = (32768, 60999)
    director: str | None = None  # on a backend: the director's address (NAT replies must route via it)
    netns_prefix: str = ""  # "ip netns exec NAME " for the fixes, empty for the current namespace
    errors: list[str] = field(default_factory=list)  # facts that could not be read (reported as warnings)

    def sysctl(self, key: str) -> int:
        return self.sysctls.get(key, 0)

    def effective(self, name: str, ifname: str) -> int:
        """rp_filter, arp_ignore, arp_announce: the kernel uses the larger of `all` and the interface."""
        return max(self.sysctl(f"net.ipv4.conf.all.{name}"), self.sysctl(f"net.ipv4.conf.{ifname}.{name}"))

    def data_links(self) -> list[LinkFacts]:
        return [link for link in self.links.values() if link.kind != "loopback" and link.up and link.addresses]


@dataclass
class Finding:
    check: str
    node: str
    ok: bool
    level: str  # ok | warn | fail
    message: str
    fix: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


Check = Callable[[HostFacts], list[Finding]]  # one check: the findings for one namespace


def ok(name: str, facts: HostFacts, message: str) -> Finding:
    return Finding(name, facts.node, True, "ok", message)


def bad(name: str, facts: HostFacts, message: str, fix: str, level: str = "fail") -> Finding:
    return Finding(name, facts.node, False, level, message, fix)


def needs(mode: str) -> ModeTraits:
    """What a mode asks of the network: its rewriter's traits (every trait off for l7 or an unknown mode)."""
    return traits_of(mode)


def in_cidr(address: str, cidr: str) -> bool:
    network, _, plen = cidr.partition("/")
    return in_network(ip_to_int(address), ip_to_int(network), int(plen or 32))
