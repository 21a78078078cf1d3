"""The kernel's DSR baseline as nftables text: the netdev ingress chain, its hash and map, and where the lab and
the bench load it (no root: nothing is loaded here; the lab tests load it)."""

from __future__ import annotations

import pytest

from pktlb.lab.builder import build_steps
from pktlb.lab.nftables import DSR_PRIORITY, KERNEL_DSR_TABLE, DsrPort, dsr_selector, kernel_dsr_ruleset
from pktlb.lab.topology import LabError, LabOptions, load_topology, make_plan

LB_MAC = "02:00:c6:12:00:02"
MACS = ["02:00:c6:12:00:0b", "02:00:c6:12:00:0c", "02:00:c6:12:00:0d"]


def plan_for(mode: str, engine: str, scheduler: str = "maglev", backends: int = 3):
    options = LabOptions(mode=mode, engine=engine, prefix="pktlb-u-", scheduler=scheduler, backends=backends)
    return make_plan(options, load_topology(), statedir="/run/pktlb/pktlb-u-", python="/venv/bin/python",
                     pktlb="/venv/bin/pktlb", kernel_has_ipip=False, has_binary=lambda name: True)


def test_the_ruleset_rewrites_both_macs_by_a_flow_hash_and_forwards_out_the_same_interface():
    text = kernel_dsr_ruleset("eth0", LB_MAC, "198.19.0.100", [DsrPort("tcp", 80)], MACS)
    assert text.startswith(f"table netdev {KERNEL_DSR_TABLE} {{")
    assert f'type filter hook ingress device "eth0" priority {DSR_PRIORITY};' in text
    assert ("ip daddr 198.19.0.100 tcp dport 80 ether saddr set 02:00:c6:12:00:02 ether daddr set "
            "jhash ip saddr . tcp sport mod 3 map { 0 : 02:00:c6:12:00:0b, 1 : 02:00:c6:12:00:0c, "
            '2 : 02:00:c6:12:00:0d } counter fwd to "eth0"') in text
    assert "drop" not in text and "dnat" not in text and "ip saddr set" not in text  # IP header untouched
    assert text.count("{") == text.count("}")


def test_one_backend_ports_per_protocol_address_hashing_and_the_drop_of_other_vip_traffic():
    text = kernel_dsr_ruleset("eth1", LB_MAC, "198.19.0.100",
                              [DsrPort("udp", 5000), DsrPort("tcp", 5201, per_flow=False)], MACS[:1],
                              drop_network="198.19.0.0/24")
    assert "udp dport 5000 ether saddr set 02:00:c6:12:00:02 ether daddr set jhash ip saddr . udp sport mod 1 " \
           "map { 0 : 02:00:c6:12:00:0b }" in text
    assert "tcp dport 5201 ether saddr set 02:00:c6:12:00:02 ether daddr set jhash ip saddr mod 1" in text
    assert 'fwd to "eth1"' in text
    lines = [line.strip() for line in text.splitlines()]
    assert lines[-3].startswith("ip daddr 198.19.0.0/24 counter drop")  # after the forwarding rules


def test_selectors_hash_the_flow_or_the_client_only():
    assert dsr_selector("tcp", True, 4) == "jhash ip saddr . tcp sport mod 4"
    assert dsr_selector("udp", False, 2) == "jhash ip saddr mod 2"


def test_no_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one backend"):
        kernel_dsr_ruleset("eth0", LB_MAC, "198.19.0.100", [DsrPort("tcp", 80)], [])


@pytest.mark.parametrize("scheduler,key", [("maglev", "ip saddr . tcp sport"), ("rr", "ip saddr . tcp sport"),
                                           ("sh", "ip saddr")])
def test_the_lab_loads_it_for_the_kernel_engine_in_dsr(scheduler, key):
    plan = plan_for("dsr", "kernel", scheduler)
    loads = [s for s in build_steps(plan) if s.kind == "nft"]
    assert len(loads) == 1 and "netdev DSR" in loads[0].summary  # no guard, no DNAT table
    text = loads[0].stdin
    lb_mac = plan.node("lb").interface("eth0").mac
    macs = ", ".join(f"{i} : {b.interfaces[0].mac}" for i, b in enumerate(plan.by_role("backend")))
    assert f"tcp dport 80 ether saddr set {lb_mac} ether daddr set jhash {key} mod 3 map {{ {macs} }}" in text
    assert "tcp dport 5201 " in text and "jhash ip saddr mod 3" in text  # iperf3: one server per client
    assert "ip daddr 198.19.0.0/24 counter drop" in text
    # The backends are set up as for pktlb's DSR: the VIP on lo, replies straight to the router.
    be = plan.node("be1")
    assert any("198.19.0.100/32" in a for i in be.interfaces for a in i.addresses)


def test_the_kernel_engine_still_refuses_tunnel_and_keeps_dnat_for_nat():
    with pytest.raises(LabError, match="cannot do mode tunnel"):
        plan_for("tunnel", "kernel")
    loads = [s for s in build_steps(plan_for("nat", "kernel")) if s.kind == "nft"]
    assert len(loads) == 1 and KERNEL_DSR_TABLE not in loads[0].stdin and "dnat to" in loads[0].stdin
