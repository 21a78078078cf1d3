"""The flow table on its own: LRU bound, per-state idle timeouts, and a reloaded [flows] section."""

from __future__ import annotations

from pktlb.core.config import FlowConfig
from pktlb.core.flowtable import EST, SYN, UDP, FlowTable


def key(i: int) -> tuple[int, int, int, int, int]:
    return (6, 0xC6120100 + i, 0xC6130064, 40000 + i, 80)


def filled(count: int, config: FlowConfig | None = None) -> FlowTable:
    table = FlowTable(config or FlowConfig(max_entries=100))
    for i in range(count):
        table.insert(key(i), "web", f"be{i % 3}", EST, float(i))
    return table


def test_the_bound_evicts_the_least_recently_used_entry():
    table = filled(3, FlowConfig(max_entries=3))
    assert table.lookup(key(0), 10.0) is not None  # key 0 used again: key 1 is now the oldest
    table.insert(key(3), "web", "be0", EST, 11.0)
    assert table.lookup(key(1), 11.0) is None and table.lookup(key(0), 11.0) is not None
    assert table.stats()["evicted"] == 1 and len(table) == 3


def test_idle_timeouts_follow_the_flows_state():
    table = FlowTable(FlowConfig(syn_timeout=5, tcp_timeout=300, udp_timeout=30))
    table.insert(key(0), "web", "be0", SYN, 0.0)
    table.insert(key(1), "web", "be0", EST, 0.0)
    table.insert((17, 1, 2, 3, 53), "dns", "be0", UDP, 0.0)
    assert table.expire(31.0) == 2  # the SYN after 5 s, the UDP flow after 30 s
    assert [e.key for e in table] == [key(1)]


def test_a_reloaded_flows_section_applies_in_place():
    table = filled(10)
    for i in range(5):  # keys 0-4 used last: keys 5-9 are the least recently used
        table.lookup(key(i), 20.0)
    backends = {e.key: e.backend for e in table}
    changed = table.reconfigure(FlowConfig(max_entries=6, tcp_timeout=60))
    assert changed == {"max_entries": [100, 6], "tcp_timeout": [300.0, 60], "evicted": 4}
    assert sorted(e.key for e in table) == sorted([key(i) for i in range(5)] + [key(9)])
    assert all(backends[e.key] == e.backend for e in table)  # the flows that stay keep their backends
    assert table.stats()["max_entries"] == 6 and table.stats()["evicted"] == 4
    assert table.expire(75.0) == 1 and len(table) == 5  # key 9 (last seen at 9 s) is past the new 60 s
    table.insert(key(50), "web", "be0", EST, 76.0)
    table.insert(key(51), "web", "be0", EST, 76.0)
    assert len(table) == 6  # the new bound holds for inserts
    assert table.reconfigure(FlowConfig(max_entries=6, tcp_timeout=60)) == {}
