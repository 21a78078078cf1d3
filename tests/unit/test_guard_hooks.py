"""The guard follows where the engine reads: netdev ingress before the IP stack (ETH_P_ALL sockets: no
fast path, XDP), ip prerouting after the ETH_P_IP sockets (the tc fast path); and a reload cannot resize
the kernel's flow map, which the engine says."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from pktlb.adapters.fastpath import kernel_flow_entries
from pktlb.adapters.rawio import ETH_P_ALL, ETH_P_IP
from pktlb.core.config import parse_config
from pktlb.daemon.fastpath_sync import FastPathSync
from pktlb.daemon.guard import (
    GUARD_TABLE,
    IP_PREROUTING,
    NETDEV_INGRESS,
    Guard,
    GuardSpec,
    guard_ruleset,
    guard_spec,
    start_guard,
)
from pktlb.daemon.readpoint import read_point
from pktlb.reports.stats_text import fastpath_line
from tests.unit.test_guard import CONFIG, FakeNft


def test_the_fast_paths_hook_chooses_the_sockets_protocol_and_the_guards_hook():
    assert read_point("tc").protocol == ETH_P_IP and read_point("tc").guard == IP_PREROUTING
    for hook in ("xdp", "off", None):
        assert read_point(hook).protocol == ETH_P_ALL and read_point(hook).guard == NETDEV_INGRESS
    with pytest.raises(ValueError, match="lb.fastpath: unknown hook 'afxdp'"):
        read_point("afxdp")


def test_at_prerouting_every_rule_keeps_to_the_engines_interfaces():
    spec = guard_spec(parse_config(CONFIG), ["eth0", "eth1"], "pktlb engine pid 1", hook=IP_PREROUTING)
    rules = spec.rules()
    assert len(rules) == 3 and all(r.startswith('iifname { "eth0", "eth1" } ') for r in rules)
    assert 'iifname { "eth0", "eth1" } ip daddr 198.18.0.3 udp dport 30000-39999 counter drop' in rules[1]
    script = guard_ruleset(spec)
    lines = script.splitlines()
    assert lines[:3] == [f"table ip {GUARD_TABLE}", f"delete table ip {GUARD_TABLE}", f"table ip {GUARD_TABLE} {{"]
    assert "  chain prerouting {" in lines
    assert "    type filter hook prerouting priority -500; policy accept;" in lines and "devices" not in script
    one = GuardSpec(devices=("eth0",), vips=("198.19.0.100",), hook=IP_PREROUTING)
    assert one.rules() == ['iifname "eth0" ip daddr 198.19.0.100 counter drop comment "VIP traffic: the engine\'s"']


def test_a_prerouting_guard_lives_in_the_ip_family_and_a_stale_one_is_found_there(caplog):
    nft = FakeNft()
    guard = start_guard(parse_config(CONFIG), ["eth0"], "/etc/pktlb.toml", nft=nft, hook=IP_PREROUTING)  # type: ignore[arg-type]
    assert guard is not None and list(nft.present) == [("ip", GUARD_TABLE)]
    assert Guard(nft).clear_stale() is not None  # type: ignore[arg-type]  # a later engine at either hook
    assert not nft.present and "removed table ip pktlb_guard" in caplog.text


def test_a_guard_keeps_its_hook_and_a_failed_update_keeps_the_rules(caplog):
    nft = FakeNft()
    guard = Guard(nft, hook=IP_PREROUTING)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hooks ip prerouting, not netdev ingress"):
        guard.install(GuardSpec(devices=("eth0",), vips=("198.19.0.100",)))
    guard.update(parse_config(CONFIG), ["eth0"], "me")
    assert guard.installed is not None and guard.installed.hook == IP_PREROUTING
    caplog.set_level(logging.ERROR, "pktlb.guard")
    guard.update(parse_config(CONFIG), [], "me")
    assert "guard not updated, the previous rules stay: the guard needs at least one interface" in caplog.text
    assert guard.remove() and not nft.present


def test_a_reload_cannot_resize_the_kernel_flow_map_and_says_so(caplog):
    sync = FastPathSync(SimpleNamespace(max_flows=kernel_flow_entries(4096)), None, "tc")  # type: ignore[arg-type]
    assert sync.flows_reloaded(4096) is None
    caplog.set_level(logging.WARNING, "pktlb.fastpath")
    message = sync.flows_reloaded(8192)
    assert message and "kernel flow map keeps its 4096 entries until the engine restarts" in message
    assert message in caplog.text and sync.flow_map_wanted == 8192
    fast = {"hook": "tc", "errors": 0, "forwarded": {}, "punts": {}, "flow_map_entries": 4096, "flow_map_wanted": 8192}
    assert "kernel flow map keeps 4096 entries until restart (the reloaded config asks 8192)" in fastpath_line(fast, {})
    assert sync.flows_reloaded(10**7) is not None and sync.flow_map_wanted == kernel_flow_entries(10**7)
    assert sync.flows_reloaded(4096) is None and not sync.flow_map_wanted  # back to the loaded size
