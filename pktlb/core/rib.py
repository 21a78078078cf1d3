"""A namespace's links, addresses, routes and neighbours as plain data, changed one message at a time.

``RoutingState`` is what the netlink cache holds, without the socket: ``apply`` takes one decoded
notification (a new or deleted link, address, route or neighbour) and returns the kinds it changed;
``begin_dump`` / ``apply_dumped`` / ``end_dump`` replace one kind with a fresh dump while
notifications keep arriving (they are applied to both the current and the fresh copy, in order, so
the result is the kernel's state whatever interleaving the socket delivered).

It also does what the kernel does silently: when a link goes administratively down, the IPv4
routes through it and its neighbours are gone, and the kernel sends no RTM_DELROUTE for them, so
``apply`` drops them and answers ``resync-routes`` to ask for a fresh route dump.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pktlb.core.routing import (
    RTN_LOCAL,
    TABLE_LOCAL,
    Egress,
    Link,
    LocalAddress,
    Neighbour,
    Route,
    RouteTable,
    egress_for,
    select_route,
)

RESYNC_ROUTES = "resync-routes"


@dataclass
class _Fresh:
    """What a dump in progress has collected so far."""

    kind: str
    links: dict[int, Link] = field(default_factory=dict)
    addresses: dict[tuple[int, int, int], LocalAddress] = field(default_factory=dict)
    tables: dict[int, RouteTable] = field(default_factory=dict)
    entries: dict[tuple[int, int], Neighbour] = field(default_factory=dict)


class RoutingState:
    def __init__(self) -> None:
        self.links: dict[int, Link] = {}
        self.addresses: dict[tuple[int, int, int], LocalAddress] = {}
        self.tables: dict[int, RouteTable] = {}
        self.entries: dict[tuple[int, int], Neighbour] = {}  # every IPv4 neighbour entry, any state
        self.neighbours: dict[tuple[int, int], bytes] = {}  # (ifindex, address) -> MAC, usable ones only
        self._names: dict[str, int] = {}
        self._fresh: _Fresh | None = None

    # -- questions -------------------------------------------------------------------------------
    def route(self, address: int) -> Route | None:
        return select_route(self.tables, address)

    def egress(self, address: int) -> Egress | None:
        return egress_for(select_route(self.tables, address), address, self.links, self.neighbours)

    def link(self, name_or_index: str | int) -> Link | None:
        index = self._names.get(name_or_index) if isinstance(name_or_index, str) else name_or_index
        return self.links.get(index) if index is not None else None

    def ifname(self, index: int) -> str:
        link = self.links.get(index)
        return link.name if link is not None else f"if{index}"

    def local_interface(self, address: int) -> str | None:
        for entry in self.addresses.values():
            if entry.address == address:
                return self.ifname(entry.ifindex)
        table = self.tables.get(TABLE_LOCAL)
        route = table.lookup(address) if table is not None else None
        if route is not None and route.kind == RTN_LOCAL:
            return self.ifname(route.hops[0].ifindex) if route.hops else "lo"
        return None

    # -- notifications ---------------------------------------------------------------------------
    def apply(self, kind: str, new: bool, record: object) -> set[str]:
        """Apply one notification; the kinds it changed (plus ``resync-routes`` when routes must be re-read)."""
        if self._fresh is not None and self._fresh.kind == kind:
            _apply_to(self._fresh, kind, new, record)
        if kind == "link" and isinstance(record, Link):
            return self._link(new, record)
        if kind == "addr" and isinstance(record, LocalAddress):
            return self._address(new, record)
        if kind == "route" and isinstance(record, Route):
            return self._route(new, record)
        if kind == "neigh" and isinstance(record, Neighbour):
            return self._neighbour(new, record)
        return set()

    def _link(self, new: bool, link: Link) -> set[str]:
        old = self.links.get(link.index)
        if not new:
            if old is None:
                return set()
            self._forget_link(old)
            return {"link", "addr", "route", "neigh"}
        if old == link:
            return set()
        if old is not None and old.name != link.name:
            self._names.pop(old.name, None)
        self.links[link.index] = link
        self._names[link.name] = link.index
        if old is not None and old.admin_up and not link.admin_up:
            self._drop_routes_via(link.index)
            self._drop_neighbours_on(link.index)
            return {"link", "route", "neigh", RESYNC_ROUTES}
        return {"link"}

    def _address(self, new: bool, entry: LocalAddress) -> set[str]:
        key = (entry.ifindex, entry.address, entry.prefix)
        if new:
            if self.addresses.get(key) == entry:
                return set()
            self.addresses[key] = entry
            return {"addr"}
        if self.addresses.pop(key, None) is None:
            return set()
        return {"addr", RESYNC_ROUTES}  # routes using it as source vanish without notice

    def _route(self, new: bool, route: Route) -> set[str]:
        table = self.tables.setdefault(route.table, RouteTable())
        if new:
            table.add(route)
            return {"route"}
        return {"route"} if table.remove(route) else set()

    def _neighbour(self, new: bool, entry: Neighbour) -> set[str]:
        key = (entry.ifindex, entry.address)
        old_mac = self.neighbours.get(key)
        if new:
            self.entries[key] = entry
        else:
            self.entries.pop(key, None)
        if new and entry.usable:
            assert entry.mac is not None
            self.neighbours[key] = entry.mac
        else:
            self.neighbours.pop(key, None)
        return {"neigh"} if self.neighbours.get(key) != old_mac else set()

    def _forget_link(self, link: Link) -> None:
        self.links.pop(link.index, None)
        if self._names.get(link.name) == link.index:
            self._names.pop(link.name)
        for key in [k for k in self.addresses if k[0] == link.index]:
            del self.addresses[key]
        self._drop_routes_via(link.index)
        self._drop_neighbours_on(link.index)

    def _drop_routes_via(self, index: int) -> None:
        for table in self.tables.values():
            table.remove_where(r for r in table if r.hops and all(h.ifindex == index for h in r.hops))

    def _drop_neighbours_on(self, index: int) -> None:
        for key in [k for k in self.entries if k[0] == index]:
            del self.entries[key]
        for key in [k for k in self.neighbours if k[0] == index]:
            del self.neighbours[key]

    # -- dumps -----------------------------------------------------------------------------------
    def begin_dump(self, kind: str) -> None:
        self._fresh = _Fresh(kind)

    def apply_dumped(self, kind: str, record: object) -> None:
        if self._fresh is not None and self._fresh.kind == kind:
            _apply_to(self._fresh, kind, True, record)

    def abort_dump(self) -> None:
        self._fresh = None

    def end_dump(self) -> set[str]:
        """Replace the dumped kind with what the dump found; the kinds that differ."""
        fresh, self._fresh = self._fresh, None
        if fresh is None:
            return set()
        if fresh.kind == "link":
            changed = fresh.links != self.links
            self.links = fresh.links
            self._names = {link.name: index for index, link in self.links.items()}
        elif fresh.kind == "addr":
            changed = fresh.addresses != self.addresses
            self.addresses = fresh.addresses
        elif fresh.kind == "route":
            changed = _route_sets(fresh.tables) != _route_sets(self.tables)
            self.tables = fresh.tables
        else:
            changed = fresh.entries != self.entries
            self.entries = fresh.entries
            self.neighbours = {k: e.mac for k, e in fresh.entries.items() if e.usable and e.mac is not None}
        return {fresh.kind} if changed else set()


def _route_sets(tables: dict[int, RouteTable]) -> set[Route]:
    return {route for table in tables.values() for route in table}


def _apply_to(fresh: _Fresh, kind: str, new: bool, record: object) -> None:
    if kind == "link" and isinstance(record, Link):
        if new:
            fresh.links[record.index] = record
        else:
            fresh.links.pop(record.index, None)
    elif kind == "addr" and isinstance(record, LocalAddress):
        key = (record.ifindex, record.address, record.prefix)
        if new:
            fresh.addresses[key] = record
        else:
            fresh.addresses.pop(key, None)
    elif kind == "route" and isinstance(record, Route):
        table = fresh.tables.setdefault(record.table, RouteTable())
        if new:
            table.add(record)
        else:
            table.remove(record)
    elif kind == "neigh" and isinstance(record, Neighbour):
        if new:
            fresh.entries[(record.ifindex, record.address)] = record
        else:
            fresh.entries.pop((record.ifindex, record.address), None)
