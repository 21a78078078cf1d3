"""Route selection and the routing state without a kernel: longest-prefix match, metrics, the
default rules' table order, next hops, neighbours, silent flushes and dumps racing notifications."""

from __future__ import annotations

import random
from typing import Any

from pktlb.core.packet.addr import ip_to_int as ip
from pktlb.core.rib import RESYNC_ROUTES, RoutingState
from pktlb.core.routing import (
    IFF_LOWER_UP,
    IFF_UP,
    NUD_FAILED,
    NUD_INCOMPLETE,
    NUD_REACHABLE,
    NUD_STALE,
    RTN_BLACKHOLE,
    RTN_LOCAL,
    RTN_THROW,
    TABLE_LOCAL,
    Link,
    LocalAddress,
    Neighbour,
    NextHop,
    Route,
    RouteTable,
    egress_for,
    mask,
    select_route,
)

A, B = 2, 3
MAC_A, MAC_B, MAC_GW = b"\x02\0\0\0\0\x0a", b"\x02\0\0\0\0\x0b", b"\x02\0\0\0\0\x01"
LINKS = {A: Link(A, "eth-a", MAC_A, 1500), B: Link(B, "eth-b", MAC_B, 9000)}


def net(text: str, **kw: Any) -> Route:
    address, prefix = text.split("/")
    return Route(network=ip(address), prefix=int(prefix), **kw)


def on(index: int, gateway: str | None = None) -> tuple[NextHop, ...]:
    return (NextHop(index, ip(gateway) if gateway else None),)


def test_the_longest_prefix_wins_then_the_lowest_metric():
    table = RouteTable([
        net("0.0.0.0/0", hops=on(B, "198.18.2.1")),
        net("198.18.1.0/24", hops=on(A)),
        net("198.18.1.128/25", hops=on(B, "198.18.2.9"), metric=200),
        net("198.18.1.128/25", hops=on(A, "198.18.1.1"), metric=100),
    ])
    assert table.lookup(ip("198.18.1.5")).hops == on(A)
    assert table.lookup(ip("198.18.1.200")).hops == on(A, "198.18.1.1")
    assert table.lookup(ip("203.0.113.1")).prefix == 0
    table.remove(net("198.18.1.128/25", metric=100))
    assert table.lookup(ip("198.18.1.200")).hops == on(B, "198.18.2.9")
    table.remove(net("0.0.0.0/0"))
    assert table.lookup(ip("203.0.113.1")) is None


def test_a_new_route_with_the_same_key_replaces_the_old_one():
    table = RouteTable([net("198.18.5.0/24", hops=on(A))])
    table.add(net("198.18.5.0/24", hops=on(B, "198.18.2.1")))
    assert len(table) == 1 and table.lookup(ip("198.18.5.1")).hops == on(B, "198.18.2.1")


def test_lookup_agrees_with_a_linear_scan():
    rng = random.Random(7)
    routes = [Route(network=(rng.getrandbits(32) & mask(p)), prefix=p, hops=on(A), metric=rng.randrange(3))
              for p in (rng.choice((0, 8, 16, 20, 24, 28, 32)) for _ in range(300))]
    table = RouteTable(routes)
    kept = list(table)
    for _ in range(2000):
        address = rng.choice([r.network | rng.getrandbits(32 - r.prefix) for r in kept] + [rng.getrandbits(32)])
        covering = [r for r in kept if r.covers(address)]
        best = min(covering, key=lambda r: (-r.prefix, r.metric)) if covering else None
        found = table.lookup(address)
        assert (found.prefix, found.network, found.metric) == (best.prefix, best.network, best.metric) \
            if best else found is None


def test_tables_follow_the_default_rules_and_throw_goes_on():
    tables = {254: RouteTable([net("198.18.0.0/16", hops=on(A)), net("198.18.9.0/24", kind=RTN_THROW)]),
              253: RouteTable([net("198.18.9.0/24", hops=on(B, "198.18.2.1"))]),
              TABLE_LOCAL: RouteTable([net("198.18.1.1/32", hops=on(A), kind=RTN_LOCAL, table=TABLE_LOCAL)])}
    assert select_route(tables, ip("198.18.1.1")).kind == RTN_LOCAL
    assert select_route(tables, ip("198.18.1.2")).hops == on(A)
    assert select_route(tables, ip("198.18.9.9")).hops == on(B, "198.18.2.1")


def test_egress_names_interface_next_hop_and_neighbour():
    neighbours = {(B, ip("198.18.2.1")): MAC_GW}
    via_gw = egress_for(net("0.0.0.0/0", hops=on(B, "198.18.2.1"), mtu=1480), ip("203.0.113.7"), LINKS, neighbours)
    assert (via_gw.ifname, via_gw.mac, via_gw.mtu, via_gw.path_mtu) == ("eth-b", MAC_B, 9000, 1480)
    assert (via_gw.next_hop, via_gw.next_hop_mac, via_gw.up) == (ip("198.18.2.1"), MAC_GW, True)
    direct = egress_for(net("198.18.1.0/24", hops=on(A)), ip("198.18.1.7"), LINKS, neighbours)
    assert (direct.ifname, direct.next_hop, direct.next_hop_mac, direct.path_mtu) == \
        ("eth-a", ip("198.18.1.7"), None, 1500)
    for route in (None, net("198.18.1.0/24", kind=RTN_BLACKHOLE), net("198.18.1.0/24", hops=on(99)),
                  net("198.18.1.0/24")):
        assert egress_for(route, ip("198.18.1.7"), LINKS, neighbours) is None


def test_a_multipath_route_uses_the_first_hop_whose_link_is_up():
    links = dict(LINKS)
    links[A] = Link(A, "eth-a", MAC_A, 1500, flags=IFF_UP)  # no carrier
    route = net("0.0.0.0/0", hops=on(A, "198.18.1.1") + on(B, "198.18.2.1"))
    assert egress_for(route, ip("203.0.113.1"), links, {}).ifname == "eth-b"
    links[B] = Link(B, "eth-b", MAC_B, 9000, flags=0)
    down = egress_for(route, ip("203.0.113.1"), links, {})
    assert down.ifname == "eth-a" and not down.up


def test_neighbour_states_decide_whether_a_mac_is_usable():
    state = RoutingState()
    gw = ip("198.18.2.1")
    for nud, usable in ((NUD_INCOMPLETE, False), (NUD_REACHABLE, True), (NUD_STALE, True), (NUD_FAILED, False)):
        state.apply("neigh", True, Neighbour(B, gw, MAC_GW if nud != NUD_INCOMPLETE else None, nud))
        assert (state.neighbours.get((B, gw)) == MAC_GW) is usable
    state.apply("neigh", True, Neighbour(B, gw, b"\x02\0\0\0\0\x02", NUD_STALE))
    assert state.neighbours[(B, gw)] == b"\x02\0\0\0\0\x02"
    assert state.apply("neigh", False, Neighbour(B, gw, None, 0)) == {"neigh"}
    assert (B, gw) not in state.neighbours


def filled_state() -> RoutingState:
    state = RoutingState()
    for link in LINKS.values():
        state.apply("link", True, link)
    state.apply("addr", True, LocalAddress(ip("198.18.1.2"), 24, A))
    state.apply("route", True, net("198.18.1.0/24", hops=on(A)))
    state.apply("route", True, net("198.18.2.0/24", hops=on(B)))
    state.apply("route", True, net("0.0.0.0/0", hops=on(B, "198.18.2.1")))
    state.apply("route", True, net("198.18.1.2/32", hops=on(A), kind=RTN_LOCAL, table=TABLE_LOCAL))
    state.apply("neigh", True, Neighbour(B, ip("198.18.2.1"), MAC_GW, NUD_REACHABLE))
    return state


def test_a_link_taken_down_loses_its_routes_and_neighbours_silently():
    state = filled_state()
    changed = state.apply("link", True, Link(B, "eth-b", MAC_B, 9000, flags=IFF_LOWER_UP))
    assert {"link", "route", "neigh", RESYNC_ROUTES} <= changed
    assert state.egress(ip("203.0.113.1")) is None and state.egress(ip("198.18.2.5")) is None
    assert state.egress(ip("198.18.1.5")).ifname == "eth-a" and not state.neighbours


def test_lost_carrier_keeps_the_route_but_reports_the_link_down():
    state = filled_state()
    assert state.apply("link", True, Link(B, "eth-b", MAC_B, 9000, flags=IFF_UP)) == {"link"}
    found = state.egress(ip("203.0.113.1"))
    assert found.ifname == "eth-b" and not found.up and found.next_hop_mac == MAC_GW


def test_a_repeated_notification_changes_nothing_and_local_addresses_are_found():
    state = filled_state()
    assert state.apply("link", True, LINKS[A]) == set()
    assert state.local_interface(ip("198.18.1.2")) == "eth-a"
    assert state.local_interface(ip("198.18.1.3")) is None
    state.apply("route", True, net("198.18.100.0/24", hops=on(1), kind=RTN_LOCAL, table=TABLE_LOCAL))
    state.apply("link", True, Link(1, "lo", bytes(6), 65536, kind=772))
    assert state.local_interface(ip("198.18.100.9")) == "lo"  # AnyIP: a local route, no address
    assert state.link("eth-b").index == B and state.link("nope") is None
    state.apply("link", True, Link(B, "eth-new", MAC_B, 9000))  # renamed
    assert state.link("eth-b") is None and state.link("eth-new").index == B


def test_a_deleted_link_takes_its_addresses_routes_and_neighbours():
    state = filled_state()
    state.apply("link", False, LINKS[A])
    assert state.link(A) is None and state.local_interface(ip("198.18.1.2")) is None
    assert state.egress(ip("198.18.1.5")).next_hop == ip("198.18.2.1")  # now only the default route covers it


def test_a_dump_racing_notifications_ends_in_the_kernels_state():
    state = filled_state()
    state.begin_dump("route")
    # The queue: a notification (route X moved to A) before the dump's chunk, the chunk (with X on A
    # and the default route), then a notification deleting the default route.
    moved = net("198.18.7.0/24", hops=on(A, "198.18.1.1"))
    state.apply("route", True, moved)
    for route in (moved, net("0.0.0.0/0", hops=on(B, "198.18.2.1")), net("198.18.2.0/24", hops=on(B))):
        state.apply_dumped("route", route)
    state.apply("route", False, net("0.0.0.0/0"))
    assert state.end_dump() == {"route"}
    assert state.egress(ip("198.18.7.1")).ifname == "eth-a"
    assert state.egress(ip("203.0.113.1")) is None  # deleted after the dump saw it
    assert state.egress(ip("198.18.1.5")) is None  # not in the dump: it had vanished silently
