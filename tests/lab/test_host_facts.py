"""Host checks on facts read from real namespaces (the two-armed lab of ``tests.lab.twoarm``): the
director's view of its backends and VIPs, and a DSR backend's sysctls, before and after the fix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pktlb.core.config import parse_config
from pktlb.daemon.host_facts import collect_backend, collect_director
from pktlb.daemon.hostcheck import Finding, ServiceFacts
from pktlb.daemon.hostcheck_registry import run_checks
from tests.lab.conftest import need_root
from tests.lab.twoarm import TwoArm, sh

pytestmark = pytest.mark.lab

CONFIG = """
[lb]
interface = "lb-c"
address = "198.18.201.1"

[[service]]
name = "web"
vip = "198.19.0.100"
port = 80
mode = "nat"
[[service.backend]]
name = "s2"
address = "198.18.202.2"

[[service]]
name = "far"
vip = "198.19.0.101"
port = 80
mode = "dsr"
[[service.backend]]
name = "behind-a-gateway"
address = "198.18.211.5"

[[service]]
name = "oops"
vip = "198.19.0.102"
port = 80
mode = "tunnel"
[[service.backend]]
name = "s3"
address = "198.18.202.3"
"""


@pytest.fixture
def lab() -> Iterator[TwoArm]:
    need_root()
    topo = TwoArm()
    try:
        topo.build()
        yield topo
    finally:
        topo.teardown()


def by_check(findings: list[Finding], check: str) -> list[Finding]:
    return [f for f in findings if f.check == check]


def test_the_directors_view(lab: TwoArm):
    lab.ip("lb", "addr", "add", "198.19.0.102/32", "dev", "lo")
    facts = collect_director(parse_config(CONFIG), netns=lab.ns("lb"), resolve_wait=3.0)
    assert facts.paths["198.18.202.2"].mac_known and facts.paths["198.18.202.3"].mac_known  # resolved on the way
    assert facts.links["lb-c"].kind == "veth" and ("198.18.201.0/24", "lb-c") in facts.connected
    findings = run_checks(facts, "director")
    assert not by_check(findings, "facts"), by_check(findings, "facts")
    local = by_check(findings, "vip-local")
    assert [f.level for f in local] == ["ok", "ok", "fail"] and "on lo" in local[2].message
    routes = {f.message.split(":")[1].strip(): f for f in by_check(findings, "backend-route")}
    assert routes["backend 198.18.202.2"].ok and routes["backend 198.18.202.3"].ok
    assert not routes["backend 198.18.211.5"].ok and "via gateway 198.18.202.2 on lb-s" in routes["backend 198.18.211.5"].message
    assert [f.level for f in by_check(findings, "tunnel-mtu")] == ["warn"]
    assert [f.level for f in by_check(findings, "forwarding")] == ["ok"]
    tx = by_check(findings, "tx-checksum")  # veth offloads are on by default
    assert {f.message.split(":")[0] for f in tx} == {"lb-c", "lb-s"} and all(f.level == "warn" for f in tx)


def test_a_dsr_backend_before_and_after_the_fix(lab: TwoArm):
    lab.ip("s", "addr", "add", "198.19.0.101/32", "dev", "lo")
    serves = [ServiceFacts("far", "dsr", "198.19.0.101")]
    findings = run_checks(collect_backend(serves, director="198.18.202.1", netns=lab.ns("s")), "backend")
    assert [f.level for f in by_check(findings, "vip-on-lo")] == ["ok"]
    arp = by_check(findings, "arp-sysctls")
    assert [f.level for f in arp] == ["fail"] and "arp_ignore=0, arp_announce=0" in arp[0].message
    sh("ip", "netns", "exec", lab.ns("s"), "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1",
       "net.ipv4.conf.all.arp_announce=2")
    findings = run_checks(collect_backend(serves, director="198.18.202.1", netns=lab.ns("s")), "backend")
    assert [f.level for f in by_check(findings, "arp-sysctls")] == ["ok"]
