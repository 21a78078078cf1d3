"""Route selection as a pure function: the records a routing cache holds and the kernel's IPv4 choice.

``RouteTable`` is one routing table (main, local, default ...) indexed for longest-prefix match;
``select_route`` walks the tables in the order of Linux's default policy rules (local, main,
default) and ``egress_for`` turns the chosen route into what a sender needs: the interface, its MAC
and MTU, the next hop and the next hop's MAC.  The netlink adapter (``pktlb.adapters.netlink``)
fills these records from the kernel and keeps them current; the tests feed them by hand.

Limits (the same as the adapter's): IPv4 only; policy rules other than the three defaults are not
followed; routes with a TOS selector are ignored; of a multipath route the first next hop whose
link is up is used (the kernel hashes the flow); a route kept while its link has no carrier is
still chosen, as the kernel does with ``ignore_routes_with_linkdown=0``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

TABLE_DEFAULT, TABLE_MAIN, TABLE_LOCAL = 253, 254, 255
LOOKUP_ORDER = (TABLE_LOCAL, TABLE_MAIN, TABLE_DEFAULT)  # the kernel's default rules 0, 32766, 32767

# Route types (rtm_type), named as `ip route` names them.
RTN_UNICAST, RTN_LOCAL, RTN_BROADCAST, RTN_ANYCAST, RTN_MULTICAST = 1, 2, 3, 4, 5
RTN_BLACKHOLE, RTN_UNREACHABLE, RTN_PROHIBIT, RTN_THROW = 6, 7, 8, 9
ROUTE_KINDS = {RTN_UNICAST: "unicast", RTN_LOCAL: "local", RTN_BROADCAST: "broadcast",
               RTN_ANYCAST: "anycast", RTN_MULTICAST: "multicast", RTN_BLACKHOLE: "blackhole",
               RTN_UNREACHABLE: "unreachable", RTN_PROHIBIT: "prohibit", RTN_THROW: "throw"}

# Link flags (IFF_*) and neighbour states (NUD_*) the selection reads.
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
NUD_INCOMPLETE, NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE = 0x01, 0x02, 0x04, 0x08, 0x10
NUD_FAILED, NUD_NOARP, NUD_PERMANENT = 0x20, 0x40, 0x80
NUD_USABLE = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP | NUD_PERMANENT

_MASKS = tuple((0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF for n in range(33))


def mask(prefix: int) -> int:
    return _MASKS[prefix]


@dataclass(frozen=True, slots=True)
class NextHop:
    ifindex: int
    gateway: int | None = None  # None: the destination is on the link


@dataclass(frozen=True, slots=True)
class Route:
    network: int
    prefix: int
    hops: tuple[NextHop, ...] = ()
    table: int = TABLE_MAIN
    kind: int = RTN_UNICAST
    metric: int = 0
    tos: int = 0
    mtu: int = 0  # the route's `mtu` metric; 0: the interface's
    source: int | None = None  # preferred source (`src`)

    @property
    def key(self) -> tuple[int, int, int, int, int]:
        """What makes a route unique in the kernel (IPv4): table, prefix, TOS and metric."""
        return (self.table, self.network, self.prefix, self.tos, self.metric)

    def covers(self, address: int) -> bool:
        return address & _MASKS[self.prefix] == self.network


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    name: str
    mac: bytes  # empty for devices without a link-layer address (TUN, ...)
    mtu: int
    flags: int = IFF_UP | IFF_LOWER_UP
    kind: int = 1  # ARPHRD_*: 1 Ethernet, 772 loopback, 65534 none (TUN)
    driver: str = ""  # the link's kind as `ip -d link` shows it: "veth", "bridge", "tun" ... ("" for a NIC)

    @property
    def admin_up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def up(self) -> bool:
        """Administratively up and with carrier (what ``ip link`` shows as ``UP,LOWER_UP``)."""
        return self.flags & (IFF_UP | IFF_LOWER_UP) == IFF_UP | IFF_LOWER_UP


@dataclass(frozen=True, slots=True)
class Egress:
    """Where a frame toward some destination leaves, and to which MAC."""

    ifindex: int
    ifname: str
    mac: bytes  # the interface's own MAC (the frame's source)
    mtu: int  # the interface's MTU
    path_mtu: int  # the route's mtu metric when set, else ``mtu``
    next_hop: int  # the gateway, or the destination itself when it is on the link
    next_hop_mac: bytes | None  # None: not (yet) resolved
    up: bool  # the interface is up with carrier
    source: int | None = None  # the route's preferred source address, if any


@dataclass(frozen=True, slots=True)
class LocalAddress:
    address: int
    prefix: int
    ifindex: int


@dataclass(frozen=True, slots=True)
class Neighbour:
    ifindex: int
    address: int
    mac: bytes | None
    state: int  # NUD_*

    @property
    def usable(self) -> bool:
        return neighbour_usable(self.state, self.mac)


class RouteTable:
    """One routing table, indexed by prefix length for longest-prefix match (lowest metric wins)."""

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self._by_key: dict[tuple[int, int, int, int, int], Route] = {}
        self._index: dict[int, dict[int, list[Route]]] = {}
        self._lengths: tuple[int, ...] = ()
        for route in routes:
            self.add(route)

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[Route]:
        return iter(list(self._by_key.values()))

    def add(self, route: Route) -> None:
        """Insert ``route``, replacing the one with the same key (as RTM_NEWROUTE does)."""
        if route.key in self._by_key:
            self.remove(route)
        self._by_key[route.key] = route
        if route.tos:
            return  # TOS-selected routes are kept (for listings) but never chosen
        bucket = self._index.setdefault(route.prefix, {}).setdefault(route.network, [])
        bucket.append(route)
        bucket.sort(key=lambda r: r.metric)
        self._lengths = tuple(sorted(self._index, reverse=True))

    def remove(self, route: Route) -> bool:
        old = self._by_key.pop(route.key, None)
        if old is None:
            return False
        by_net = self._index.get(old.prefix, {})
        bucket = by_net.get(old.network, [])
        if old in bucket:
            bucket.remove(old)
        if not bucket:
            by_net.pop(old.network, None)
        if not by_net:
            self._index.pop(old.prefix, None)
            self._lengths = tuple(sorted(self._index, reverse=True))
        return True

    def remove_where(self, doomed: Iterable[Route]) -> int:
        return sum(self.remove(route) for route in list(doomed))

    def lookup(self, address: int) -> Route | None:
        """The most specific route covering ``address`` with the lowest metric, or None."""
        index = self._index
        for length in self._lengths:
            bucket = index[length].get(address & _MASKS[length])
            if bucket:
                return bucket[0]
        return None


def select_route(tables: Mapping[int, RouteTable], address: int) -> Route | None:
    """The route the kernel's default rules pick for ``address``: local, then main, then default.

    A ``throw`` route ends the lookup in its table and the next table is tried, as with rules.
    """
    for table_id in LOOKUP_ORDER:
        table = tables.get(table_id)
        if table is None:
            continue
        route = table.lookup(address)
        if route is not None and route.kind != RTN_THROW:
            return route
    return None


def pick_hop(route: Route, links: Mapping[int, Link]) -> NextHop | None:
    """The first next hop whose link is up, else the first one (None for a route without any)."""
    if not route.hops:
        return None
    for hop in route.hops:
        link = links.get(hop.ifindex)
        if link is not None and link.up:
            return hop
    return route.hops[0]


def egress_for(route: Route | None, address: int, links: Mapping[int, Link],
               neighbours: Mapping[tuple[int, int], bytes]) -> Egress | None:
    """What sending to ``address`` over ``route`` needs; None when the route forwards nothing.

    None for: no route, a route that is not unicast (local, broadcast, blackhole, unreachable,
    prohibit ...), a route without next hop, or a next hop on an interface nobody knows.
    ``neighbours`` maps (interface index, address) to a usable MAC only.
    """
    if route is None or route.kind != RTN_UNICAST:
        return None
    hop = pick_hop(route, links)
    if hop is None:
        return None
    link = links.get(hop.ifindex)
    if link is None:
        return None
    next_hop = hop.gateway if hop.gateway is not None else address
    return Egress(ifindex=link.index, ifname=link.name, mac=link.mac, mtu=link.mtu,
                  path_mtu=route.mtu or link.mtu, next_hop=next_hop,
                  next_hop_mac=neighbours.get((link.index, next_hop)), up=link.up, source=route.source)


def neighbour_usable(state: int, mac: bytes | None) -> bool:
    """A neighbour entry whose MAC may be used: a usable state and a non-zero address."""
    return bool(state & NUD_USABLE) and mac is not None and any(mac)
