"""Host checks over hand-made facts: each trap of LAB-NOTES gives a finding with a fix, a sound
namespace gives only ok findings."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pktlb.daemon.hostcheck import Finding, HostFacts, LinkFacts, PathFacts, ServiceFacts
from pktlb.daemon.hostcheck_registry import run_checks

ETH0 = LinkFacts("eth0", "veth", 1500, True, tx_checksum=False, addresses=("198.18.201.1/24",))
ETH1 = LinkFacts("eth1", "veth", 1500, True, tx_checksum=False, addresses=("198.18.202.1/24",))
LO = LinkFacts("lo", "loopback", 65536, True, addresses=("127.0.0.1/8",))


def director(*services: ServiceFacts, **changes: object) -> HostFacts:
    facts = HostFacts(node="lb", links={"lo": LO, "eth0": ETH0, "eth1": ETH1},
                      local={"127.0.0.1": "lo", "198.18.201.1": "eth0", "198.18.202.1": "eth1"},
                      connected=[("198.18.201.0/24", "eth0"), ("198.18.202.0/24", "eth1")],
                      services=list(services),
                      paths={"198.18.202.2": PathFacts("198.18.202.2", "eth1", "198.18.202.2", True, True, 1500),
                             "198.18.9.2": PathFacts("198.18.9.2", "eth1", "198.18.202.9", True, True, 1500)})
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


def levels(findings: list[Finding], check: str) -> list[str]:
    return [f.level for f in findings if f.check == check]


NAT = ServiceFacts("web", "nat", "198.19.0.100", backends=("198.18.202.2",))
DSR_VIA_GW = ServiceFacts("dsr", "dsr", "198.19.0.101", backends=("198.18.9.2",))


def test_a_sound_director_gives_only_ok_findings():
    findings = run_checks(director(NAT), "director")
    assert findings and all(f.level == "ok" for f in findings), [f for f in findings if f.level != "ok"]


def test_a_local_vip_and_a_vip_inside_a_connected_subnet():
    svc = replace(NAT, vip="198.18.201.50")
    findings = run_checks(director(svc, local={"198.18.201.50": "eth0"}), "director")
    assert levels(findings, "vip-local") == ["fail"] and levels(findings, "vip-arp") == ["warn"]
    bad = next(f for f in findings if f.check == "vip-local")
    assert "on eth0" in bad.message and "ip addr del 198.18.201.50/32 dev eth0" in bad.fix


@pytest.mark.parametrize("path, check, level, words", [
    (None, "backend-route", "fail", "no route"),
    (PathFacts("198.18.202.2", "eth1", "198.18.202.2", True, False, 1500), "backend-route", "fail", "down"),
    (PathFacts("198.18.202.2", "eth1", "198.18.202.2", False, True, 1500), "backend-neighbour", "warn", "no resolved MAC"),
])
def test_backend_paths(path: PathFacts | None, check: str, level: str, words: str):
    facts = director(NAT)
    facts.paths = {} if path is None else {"198.18.202.2": path}
    found = [f for f in run_checks(facts, "director") if f.check == check and not f.ok]
    assert [f.level for f in found] == [level] and words in found[0].message and found[0].fix


def test_dsr_needs_backends_on_the_link_and_tunnel_needs_room():
    findings = run_checks(director(DSR_VIA_GW), "director")
    bad = [f for f in findings if f.check == "backend-route" and not f.ok]
    assert len(bad) == 1 and "via gateway 198.18.202.9" in bad[0].message
    tunnel = replace(DSR_VIA_GW, mode="tunnel")
    assert levels(run_checks(director(tunnel), "director"), "tunnel-mtu") == ["warn"]
    roomy = director(tunnel)
    roomy.paths["198.18.9.2"] = replace(roomy.paths["198.18.9.2"], path_mtu=1520)
    assert levels(run_checks(roomy, "director"), "tunnel-mtu") == []


def test_forwarding_without_the_guard_breaks_nat_replies():
    on = {"net.ipv4.ip_forward": 1}
    assert levels(run_checks(director(NAT, sysctls=on), "director"), "forwarding") == ["fail"]
    assert levels(run_checks(director(DSR_VIA_GW, sysctls=on), "director"), "forwarding") == ["warn"]
    assert levels(run_checks(director(NAT, sysctls=on, guard=True), "director"), "forwarding") == ["ok"]


def test_tx_checksum_offload_on_veth_and_snat_ports():
    links = {"lo": LO, "eth0": replace(ETH0, tx_checksum=True), "eth1": ETH1}
    findings = run_checks(director(NAT, links=links), "director")
    assert levels(findings, "tx-checksum") == ["warn", "ok"]
    assert "ethtool -K eth0 tx off" in next(f.fix for f in findings if f.check == "tx-checksum" and not f.ok)
    full = ServiceFacts("f", "fullnat", "198.19.0.102", "198.18.202.5", (40000, 40999), ("198.18.202.2",))
    local = {"198.18.202.5": "eth1", "198.18.202.1": "eth1"}
    assert levels(run_checks(director(full, local=local), "director"), "snat-ports") == ["warn"]
    assert levels(run_checks(director(full), "director"), "snat-ports") == ["fail"]  # in a subnet, not local
    outside = replace(full, snat_ports=(20000, 29999))
    assert levels(run_checks(director(outside, local=local), "director"), "snat-ports") == ["ok"]


def backend(mode: str, **changes: object) -> HostFacts:
    facts = HostFacts(node="be1", links={"lo": LO, "eth0": replace(ETH0, addresses=("198.18.202.2/24",))},
                      local={"127.0.0.1": "lo", "198.18.202.2": "eth0", "198.19.0.100": "lo"},
                      services=[ServiceFacts("web", mode, "198.19.0.100")], director="198.18.202.1",
                      default_gateway="198.18.202.1",
                      sysctls={"net.ipv4.conf.all.arp_ignore": 1, "net.ipv4.conf.all.arp_announce": 2})
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


def test_a_sound_backend_gives_only_ok_findings():
    for mode in ("nat", "dsr", "tunnel", "fullnat"):
        findings = run_checks(backend(mode), "backend")
        assert all(f.level == "ok" for f in findings), (mode, [f for f in findings if not f.ok])


def test_backend_traps():
    assert levels(run_checks(backend("dsr", local={}), "backend"), "vip-on-lo") == ["fail"]
    assert levels(run_checks(backend("dsr", local={"198.19.0.100": "eth0"}), "backend"), "vip-on-lo") == ["fail"]
    assert levels(run_checks(backend("dsr", sysctls={}), "backend"), "arp-sysctls") == ["fail"]
    assert levels(run_checks(backend("tunnel", sysctls={}), "backend"), "arp-sysctls") == []
    strict = {"net.ipv4.conf.eth0.rp_filter": 1}
    assert levels(run_checks(backend("tunnel", sysctls=strict), "backend"), "rp-filter") == ["warn"]
    assert levels(run_checks(backend("nat", sysctls=strict), "backend"), "rp-filter") == []
    elsewhere = run_checks(backend("nat", default_gateway="198.18.202.254"), "backend")
    assert levels(elsewhere, "route-back") == ["fail"]


def test_an_unknown_side_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown side 'router'"):
        run_checks(director(), "router")
