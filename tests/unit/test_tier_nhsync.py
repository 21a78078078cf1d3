"""The plan that turns BIRD's multipath routes into resilient next-hop groups (pure)."""

from pktlb.daemon.announce.nhsync import Programmed, nexthop_id, plan

VIP = "198.19.0.100/32"
A, B, C = "198.18.0.201", "198.18.0.202", "198.18.0.203"


def test_first_sync_makes_nexthops_a_group_and_the_route():
    have = Programmed()
    cmds = plan({VIP: (A, B, C)}, have, "eth0")
    assert cmds[:3] == [["nexthop", "replace", "id", str(nexthop_id(g)), "via", g, "dev", "eth0"] for g in (A, B, C)]
    assert cmds[3] == ["nexthop", "replace", "id", "1001", "group", "10201/10202/10203", "type", "resilient",
                       "buckets", "128"]
    assert cmds[4] == ["route", "replace", VIP, "nhid", "1001"]
    assert plan({VIP: (A, B, C)}, have, "eth0") == []  # nothing changed: nothing to do


def test_losing_a_member_replaces_the_group_in_place_then_drops_its_nexthop():
    have = Programmed()
    plan({VIP: (A, B, C)}, have, "eth0")
    cmds = plan({VIP: (A, C)}, have, "eth0")
    assert cmds == [["nexthop", "replace", "id", "1001", "group", "10201/10203", "type", "resilient", "buckets", "128"],
                    ["nexthop", "del", "id", "10202"]]


def test_a_withdrawn_prefix_loses_route_group_and_nexthops():
    have = Programmed()
    plan({VIP: (A,)}, have, "eth0")
    cmds = plan({}, have, "eth0")
    assert cmds == [["route", "del", VIP, "nhid", "1001"], ["nexthop", "del", "id", "1001"],
                    ["nexthop", "del", "id", "10201"]]
    assert have.groups == {} and have.nexthops == set()


def test_two_prefixes_get_distinct_groups():
    have = Programmed()
    plan({VIP: (A, B), "0.0.0.0/0": (A, B)}, have, "eth0")
    assert len({gid for gid, _ in have.groups.values()}) == 2
