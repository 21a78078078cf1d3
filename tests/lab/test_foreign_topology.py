"""pktlb on a network it did not build (issue 14): a two-armed director made with plain `ip` commands.

The engine's config names only the LB's address, the service and the backends; it finds interfaces,
routes and next-hop MACs in the kernel's tables and follows them when they change.  Random data
(10 MB, sha256) crosses every mode; tunnel-mode servers run `pktlb decap`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest

from tests.lab.conftest import need_root
from tests.lab.foreign import MOVABLE, SERVERS, Foreign, sh

pytestmark = pytest.mark.lab


@pytest.fixture
def net() -> Iterator[Foreign]:
    need_root()
    topo = Foreign()
    try:
        topo.build()
        yield topo
    finally:
        topo.teardown()


def stats(net: Foreign) -> dict:
    done = net.cli("stats", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("mode", ["nat", "fullnat", "dsr", "tunnel"])
def test_random_data_crosses_every_mode_intact(net: Foreign, mode: str):
    if mode == "dsr":
        net.as_dsr_servers()
    if mode == "tunnel":
        net.as_tunnel_servers()
    net.start_engine(net.config(mode, [address for _, _, address in SERVERS.values()]))
    for _ in range(3):
        data = net.fetch("data.bin")
        assert len(data) == 10 << 20 and hashlib.sha256(data).hexdigest() == net.digest
    report = stats(net)
    assert {row["name"] for row in report["interfaces"] if row["receives"]} == {"arm0", "arm1", "arm2"}
    served = {be["address"]: be["packets_in"] for be in report["services"][0]["backends"]}
    assert sum(served.values()) > 0
    assert "no_neighbour" not in report["totals"]["drops"] and "no_route" not in report["totals"]["drops"]


def test_the_engine_follows_routes_links_and_macs(net: Foreign):
    """A backend whose path moves: via s1 (metric 100) or s2 (metric 200), as the director's routes say."""
    net.start_engine(net.config("nat", [MOVABLE]))
    assert net.fetch("who") == b"s1"
    net.ip("lb", "link", "set", "arm1", "down")  # the kernel drops the routes over arm1: s2 is next
    assert net.fetch("who", max_time=5) == b"s2"
    old = net.run("s2", "cat", "/sys/class/net/eth0/address").stdout.strip()
    net.ip("s2", "link", "set", "eth0", "address", "02:00:00:fa:ce:02")  # announced by a gratuitous ARP
    assert old != "02:00:00:fa:ce:02"
    assert net.fetch("who", max_time=5) == b"s2"
    net.ip("lb", "link", "set", "arm1", "up")
    net.ip("lb", "route", "add", MOVABLE, "via", SERVERS["s1"][2], "metric", "50")  # the route moves back
    assert net.fetch("who", max_time=5) == b"s1"
    report = stats(net)
    assert report["routing"]["generation"] > 0 and report["totals"]["forwarded"] > 0
    assert report["services"][0]["mtu"] == 1500
    net.ip("lb", "link", "set", "arm1", "mtu", "1400")  # the path toward the backend shrinks: so does the MTU
    net.ip("s1", "link", "set", "eth0", "mtu", "1400")  # the tunnel's frag-needed answers use
    assert await_stats(net, lambda r: r["services"][0]["mtu"] == 1400)


def await_stats(net: Foreign, predicate, bound: float = 5.0) -> bool:
    """Poll the engine's stats until ``predicate`` holds (bounded; the change arrives by netlink)."""
    import time

    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if predicate(stats(net)):
            return True
        time.sleep(0.05)
    return False


def test_bad_input_is_a_clear_error_naming_key_and_value(net: Foreign):
    cases = {
        "lb.interface": ('interface = "nosuch0"\n', "nosuch0"),
        "service[0].backend[0].address": ("", "198.18.99.9"),
        "service[0].vip": ("", "198.18.241.1"),
    }
    for key, (lb_extra, value) in cases.items():
        text = (f'[lb]\naddress = "198.18.241.1"\n{lb_extra}\n[[service]]\nname = "web"\n'
                f'vip = "{value if key.endswith("vip") else "198.19.241.100"}"\nport = 8080\nmode = "nat"\n'
                f'[[service.backend]]\naddress = "{value if "backend" in key else "198.18.242.11"}"\n')
        path = net.dir / "bad.toml"
        path.write_text(text)
        done = net.run("lb", net_pktlb(), "run", "-c", str(path), "-s", net.socket, check=False)
        assert done.returncode != 0 and key in done.stderr and value in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def net_pktlb() -> str:
    from tests.lab.foreign import PKTLB

    return PKTLB


def doctor(net: Foreign, config: str, node: str, *extra: str) -> dict[str, list[dict]]:
    done = sh(net_pktlb(), "doctor", "-c", config, "--netns", net.ns(node), "--json", *extra, check=False)
    findings = json.loads(done.stdout)
    by_check: dict[str, list[dict]] = {}
    for finding in findings:
        by_check.setdefault(finding["check"], []).append(finding)
    return by_check


def test_doctor_checks_any_namespace_for_what_would_break_a_mode(net: Foreign):
    config = net.config("dsr", [address for _, _, address in SERVERS.values()])
    director = doctor(net, config, "lb")
    assert all(f["level"] == "ok" for f in director["backend-route"]) and len(director["backend-route"]) == 2
    assert {f["level"] for f in director["tx-checksum"]} == {"warn"}  # veth with TX checksum offload on
    assert director["vip-local"][0]["level"] == "ok"
    net.ip("lb", "addr", "add", "198.19.241.100/32", "dev", "lo")
    assert doctor(net, config, "lb")["vip-local"][0]["level"] == "fail"
    server = doctor(net, config, "s1", "--backend")
    assert server["vip-on-lo"][0]["level"] == "fail" and server["arp-sysctls"][0]["level"] == "fail"
    net.as_dsr_servers()
    server = doctor(net, config, "s1", "--backend")
    assert server["vip-on-lo"][0]["level"] == "ok" and server["arp-sysctls"][0]["level"] == "ok"
    assert server["rp-filter"][0]["level"] == "ok"


def test_two_workers_share_every_interface(net: Foreign):
    """--workers 2: a fanout group per interface; full-NAT replies (arriving on the servers' arms) reach the
    worker owning their SNAT port."""
    net.start_engine(net.config("fullnat", [address for _, _, address in SERVERS.values()]), "--workers", "2")
    for _ in range(4):
        data = net.fetch("data.bin")
        assert hashlib.sha256(data).hexdigest() == net.digest


def test_backend_add_without_a_mac_resolves_it_without_blocking_and_refuses_one_without_a_route(net: Foreign):
    net.start_engine(net.config("nat", [SERVERS["s1"][2]]))
    added = net.cli("backend", "add", "s2", "--address", SERVERS["s2"][2], "--port", "8080", "--json")
    assert added.returncode == 0, added.stderr
    assert stats(net)["interfaces"]  # the engine answers at once: nothing waited for ARP
    served = {net.fetch("who") for _ in range(24)}
    assert served == {b"s1", b"s2"}
    refused = net.cli("backend", "add", "nowhere", "--address", "198.18.99.9", "--port", "8080")
    assert refused.returncode != 0 and "no route" in refused.stderr + refused.stdout


def test_an_unresolved_next_hop_is_asked_for_and_its_frames_counted_never_guessed(net: Foreign):
    net.start_engine(net.config("nat", [SERVERS["s1"][2]]))
    assert net.fetch("who") == b"s1"
    net.ip("lb", "neigh", "flush", "dev", "arm1")  # the director forgets the server's MAC
    before = stats(net)["routing"]["resolves"]
    assert net.fetch("who", max_time=10) == b"s1"  # the kernel was asked (NTF_USE); TCP retransmitted meanwhile
    report = stats(net)
    assert report["routing"]["resolves"] > before
    assert report["totals"]["drops"].get("no_neighbour", 0) >= 1
