"""The LB tier's address plan and what it adds to a lab (pure)."""

import pytest

from pktlb.lab.tier.plan import TierError, TierOptions, announce_argv, bird_argv, make_tier


def tier(lbs=3, mode="dsr", **kw):
    return make_tier(TierOptions(lbs, mode, **kw), vip="198.19.0.100", router_address="198.18.0.1", statedir="/s")


def test_addresses_ases_and_files():
    plan = tier()
    assert [(lb.name, lb.address, lb.asn) for lb in plan.lbs] == [
        ("lb1", "198.18.0.201", 65101), ("lb2", "198.18.0.202", 65102), ("lb3", "198.18.0.203", 65103)]
    assert sorted(plan.files) == ["bird/lb1.conf", "bird/lb2.conf", "bird/lb3.conf", "bird/router.conf"]
    assert plan.router_sysctls["net.ipv4.fib_multipath_hash_policy"] == 3
    assert plan.router_sysctls["net.ipv4.fib_multipath_hash_fields"] == 0x37
    assert plan.announced["lb2"] == ("198.19.0.100/32",) and plan.router_rules == []


def test_nat_announces_a_return_route_and_the_router_gets_a_rule():
    plan = tier(mode="nat")
    assert plan.announced["lb1"] == ("198.19.0.100/32", "0.0.0.0/0")
    assert plan.router_rules == [["from", "198.18.0.0/25", "iif", "eth0", "lookup", "100", "priority", "100"]]
    assert "kernel table 100;" in plan.files["bird/router.conf"]


def test_fullnat_gives_each_lb_its_own_snat_address():
    plan = tier(mode="fullnat", lbs=2)
    assert [lb.snat for lb in plan.lbs] == ["198.18.2.1", "198.18.2.2"]
    assert plan.announced["lb2"] == ("198.19.0.100/32", "198.18.2.2/32")


def test_resilient_puts_birds_routes_in_a_side_table():
    assert "kernel table 200;" in tier(ecmp="resilient").files["bird/router.conf"]
    assert "kernel table 200;" not in tier().files["bird/router.conf"]


def test_bfd_is_optional():
    assert "bfd on;" in tier(bfd=True).files["bird/lb1.conf"]
    assert "bfd" not in tier().files["bird/lb1.conf"]


@pytest.mark.parametrize("lbs", [0, 1, 9])
def test_lb_count_outside_the_plan_is_refused(lbs):
    with pytest.raises(TierError, match="2 to 8"):
        tier(lbs=lbs)


def test_unknown_ecmp_is_refused():
    with pytest.raises(TierError, match="--ecmp"):
        tier(ecmp="magic")


def test_argv():
    assert bird_argv("/s", "lb1") == ["bird", "-f", "-c", "/s/bird/lb1.conf", "-s", "/s/bird/lb1.ctl", "-P",
                                      "/s/bird/lb1.pid"]
    argv = announce_argv("pktlb", "/s", "lb2", "198.19.0.100", None)
    assert argv[:3] == ["pktlb", "announce", "run"] and "/s/pktlb-lb2.sock" in argv and "/s/bird/lb2.ctl" in argv
