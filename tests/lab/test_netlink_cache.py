"""The netlink cache against a real kernel, in the two-armed lab of ``tests.lab.twoarm``.

Every answer is compared with what the kernel itself says (`ip -j route get`, `ip -j link`), and
every change is awaited through the cache's own notifications, bounded, never slept on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pktlb.adapters import netlink
from pktlb.adapters.ifinfo import InterfaceMissing
from pktlb.adapters.netlink import RESOLVES_PER_SECOND, NetlinkCache, NetlinkUnavailable
from pktlb.core.config import parse_config
from pktlb.core.packet.addr import int_to_ip, ip_to_int, mac_to_bytes
from pktlb.daemon.preflight import default_interfaces, startup_errors
from tests.lab.conftest import need_root
from tests.lab.twoarm import TwoArm, sh

pytestmark = pytest.mark.lab
FOLLOW_BOUND = 1.0  # seconds: the "followed within a second"
RESOLVE_BOUND = 3.0  # seconds: one ARP exchange, with the kernel's 1 s retransmission to spare


@pytest.fixture
def lab() -> Iterator[TwoArm]:
    need_root()
    topo = TwoArm()
    try:
        topo.build()
        yield topo
    finally:
        topo.teardown()


@pytest.fixture
def cache(lab: TwoArm) -> Iterator[NetlinkCache]:
    home = os.readlink("/proc/thread-self/ns/net")
    opened = NetlinkCache(netns=lab.ns("lb"))
    assert os.readlink("/proc/thread-self/ns/net") == home  # the thread came back after opening the socket
    try:
        yield opened
    finally:
        opened.close()


def answer(cache: NetlinkCache, dst: str) -> tuple[str, str] | None:
    found = cache.egress(dst)
    return None if found is None else (found.ifname, int_to_ip(found.next_hop))


DESTINATIONS = ["198.18.201.7", "198.18.202.9", "198.18.210.5", "198.18.211.5", "198.18.211.200",
                "198.18.212.1", "198.19.0.1", "198.18.213.1", "198.18.214.1", "198.18.215.4",
                "198.18.201.1", "198.18.202.2"]


def test_the_cache_answers_like_ip_route_get(lab: TwoArm, cache: NetlinkCache):
    expected = {dst: lab.route_get(dst) for dst in DESTINATIONS}
    assert expected["198.18.212.1"] == ("lb-s", "198.18.202.2") and expected["198.18.213.1"] is None
    assert {dst: answer(cache, dst) for dst in DESTINATIONS} == expected
    found = cache.egress("198.19.0.1")
    assert found is not None and found.mac == lab.mac("lb", "lb-s") and found.mtu == 1500 and found.up
    lb_s = cache.link("lb-s")
    assert (lb_s.mac, lb_s.mtu, lb_s.up) == (lab.mac("lb", "lb-s"), 1500, True)
    assert cache.link(lb_s.index) == lb_s


def test_own_addresses_are_recognised(lab: TwoArm, cache: NetlinkCache):
    assert cache.local_interface("198.18.201.1") == "lb-c"
    assert cache.local_interface("198.18.215.9") == "lo"  # a local route: the kernel answers for it
    assert cache.local_interface("198.18.201.2") is None
    assert cache.addresses()["198.18.202.1"] == ("lb-s", 24)


def resolved(cache: NetlinkCache, dst: str) -> bytes | None:
    found = cache.egress(dst)
    return found.next_hop_mac if found is not None else None


def test_an_unresolved_next_hop_is_resolved_without_blocking_the_caller(lab: TwoArm, cache: NetlinkCache):
    assert lab.ip("lb", "neigh", "show", "198.18.202.3").stdout.strip() == ""
    first = cache.egress("198.18.202.3")
    assert first is not None and first.next_hop_mac is None  # the call returned before any ARP reply
    assert cache.wait(lambda: resolved(cache, "198.18.202.3") is not None, RESOLVE_BOUND)
    assert resolved(cache, "198.18.202.3") == lab.mac("s", "s-lb")


def test_a_backend_changing_its_mac_is_followed(lab: TwoArm, cache: NetlinkCache):
    cache.egress("198.18.202.2")
    assert cache.wait(lambda: resolved(cache, "198.18.202.2") is not None, RESOLVE_BOUND)
    new_mac = "02:00:c6:12:ca:22"
    lab.ip("s", "link", "set", "s-lb", "address", new_mac)
    assert cache.wait(lambda: resolved(cache, "198.18.202.2") == mac_to_bytes(new_mac), FOLLOW_BOUND), \
        f"cache still has {resolved(cache, '198.18.202.2')!r}; kernel: {lab.ip('lb', 'neigh').stdout}"
    assert resolved(cache, "198.19.0.1") == mac_to_bytes(new_mac)  # the default route's gateway too


def test_a_route_that_moves_is_followed(lab: TwoArm, cache: NetlinkCache):
    assert answer(cache, "198.18.210.5") == ("lb-c", "198.18.201.2")
    generation = cache.generation
    lab.ip("lb", "route", "replace", "198.18.210.0/24", "via", "198.18.202.2")
    assert cache.wait(lambda: answer(cache, "198.18.210.5") == ("lb-s", "198.18.202.2"), FOLLOW_BOUND)
    assert cache.generation > generation
    lab.ip("lb", "route", "del", "198.18.212.0/24", "metric", "100")
    assert cache.wait(lambda: answer(cache, "198.18.212.1") == ("lb-c", "198.18.201.2"), FOLLOW_BOUND)


def test_a_link_that_goes_down_is_reported_down_and_its_routes_go(lab: TwoArm, cache: NetlinkCache):
    lab.ip("s", "link", "set", "s-lb", "down")  # the peer: lb-s loses its carrier, keeps its routes
    assert cache.wait(lambda: not cache.link("lb-s").up, FOLLOW_BOUND)
    found = cache.egress("198.19.0.1")
    assert found is not None and found.ifname == "lb-s" and not found.up
    assert lab.route_get("198.19.0.1") == ("lb-s", "198.18.202.2")
    lab.ip("lb", "link", "set", "lb-c", "down")  # administratively down: the kernel drops its routes silently
    default = ("lb-s", "198.18.202.2")
    assert cache.wait(lambda: answer(cache, "198.18.210.5") == answer(cache, "198.18.201.7") == default,
                      FOLLOW_BOUND)
    assert not cache.link("lb-c").up
    assert {dst: answer(cache, dst) for dst in DESTINATIONS} == {dst: lab.route_get(dst) for dst in DESTINATIONS}
    lab.ip("lb", "link", "set", "lb-c", "up")  # the connected route comes back; the static ones do not
    assert cache.wait(lambda: answer(cache, "198.18.201.7") == ("lb-c", "198.18.201.7"), FOLLOW_BOUND)
    expected = {dst: lab.route_get(dst) for dst in DESTINATIONS}
    assert {dst: answer(cache, dst) for dst in DESTINATIONS} == expected
    assert expected["198.18.210.5"] == default  # now only the default route covers it


def test_resolve_requests_are_rate_limited(lab: TwoArm):
    now = [100.0]
    cache = NetlinkCache(netns=lab.ns("lb"), clock=lambda: now[0])
    try:
        targets = [ip_to_int(f"198.18.202.{host}") for host in range(10, 160)]
        lb_s = cache.link("lb-s").index
        sent = sum(cache.request_neighbour(lb_s, target) for target in targets)
        assert sent == RESOLVES_PER_SECOND and cache.summary()["resolves_deferred"] == len(targets) - sent
        assert not cache.request_neighbour(lb_s, targets[0])  # asked less than resolve_interval ago
        now[0] += 1.0
        assert cache.request_neighbour(lb_s, targets[0]) and cache.summary()["resolves"] == sent + 1
    finally:
        cache.close()


def test_bad_input_gives_clear_errors(lab: TwoArm, cache: NetlinkCache):
    with pytest.raises(InterfaceMissing, match="no interface named 'eth9'"):
        cache.link("eth9")
    with pytest.raises(InterfaceMissing):
        cache.link(999)
    with pytest.raises(ValueError, match="not an IPv4 address"):
        cache.egress("198.18.1")
    with pytest.raises(NetlinkUnavailable, match=lab.prefix + "nowhere"):
        NetlinkCache(netns=lab.prefix + "nowhere")


def test_start_up_errors_name_the_key_and_the_value(lab: TwoArm, cache: NetlinkCache):
    config = parse_config("""
[lb]
interface = "lb-c"
address = "198.18.201.1"
[[service]]
name = "web"
vip = "198.18.215.7"
port = 80
mode = "nat"
[[service.backend]]
name = "ok"
address = "198.18.202.2"
[[service.backend]]
name = "nowhere"
address = "198.18.214.9"
""")
    assert default_interfaces(cache) == ["lb-c", "lb-s"]
    assert startup_errors(config, ["lb-c", "lb-s"], cache) == [
        "service[0].vip = '198.18.215.7': a local address of this namespace (on lo); the kernel would answer VIP "
        "traffic itself: remove it (ip addr del 198.18.215.7/32 dev lo)",
        "service[0].backend[1].address = '198.18.214.9': no route to it in this network namespace",
    ]
    errors = startup_errors(config, ["eth9"], cache)
    assert errors[0] == "lb.interface: no interface named 'eth9' in this network namespace (there are: lb-c, lb-s, lo)"


def test_lost_notifications_are_recovered_by_a_fresh_dump(lab: TwoArm, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(netlink, "RCVBUF", 1)  # the kernel's minimum: a burst of changes overflows it
    small = NetlinkCache(netns=lab.ns("lb"))
    try:
        resyncs = small.resyncs
        batch = "".join(f"route add 198.18.{220 + i // 250}.{i % 250}/32 via 198.18.201.2\n" for i in range(400))
        sh("ip", "-n", lab.ns("lb"), "-batch", "-", stdin=batch)
        lab.ip("lb", "route", "replace", "198.18.210.0/24", "via", "198.18.202.2")
        last = ("lb-c", "198.18.201.2")
        assert small.wait(lambda: answer(small, "198.18.221.149") == last
                          and answer(small, "198.18.210.5") == ("lb-s", "198.18.202.2"), 5.0)
        assert small.resyncs > resyncs  # the overflow was noticed and everything read again
    finally:
        small.close()
