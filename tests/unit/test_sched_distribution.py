"""Distribution of a large synthetic flow set (60,000 flows, weights 1:2:3:4:5) under every scheduler.

Tolerances: rr, wrr, lc and lrt are deterministic counters, so their counts are exact (within one
flow); bw balances bytes/s, so its byte shares are checked, within 0.5 percentage points; the
hashes (sh, hash, maglev) are checked within 1 percentage point of the weight share, which is about
six standard deviations of the binomial noise at 60,000 flows (sd <= 0.2 points).
"""

from __future__ import annotations

import pytest

from pktlb.core.sched import BackendLoad, make_scheduler
from pktlb.core.simulate import fair_shares, place, synthetic_flows
from tests.unit.test_maglev import views

SEED = 0x706B746C
FLOWS = synthetic_flows(60_000, proto=6, vip=0xC6126401, port=80, hash_seed=SEED, flow_seed=3)
SPEC = [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)]
BACKENDS = views(SPEC)
FAIR = fair_shares(BACKENDS)


def placed(name: str) -> list[str | None]:
    return place(make_scheduler(name, BACKENDS, seed=SEED, table_size=65537), FLOWS)


def shares(chosen: list[str | None]) -> dict[str, float]:
    return {n: chosen.count(n) / len(chosen) for n, _ in SPEC}


def test_rr_splits_equally_whatever_the_weights() -> None:
    chosen = placed("rr")
    assert {n: chosen.count(n) for n, _ in SPEC} == dict.fromkeys("abcde", 12_000)


@pytest.mark.parametrize("name", ["wrr", "lc", "lrt"])
def test_counters_split_exactly_by_weight(name: str) -> None:
    chosen = placed(name)
    for n, w in SPEC:
        assert abs(chosen.count(n) - 4_000 * w) <= 1


@pytest.mark.parametrize("name", ["sh", "hash", "maglev"])
def test_hashes_split_by_weight_within_one_point(name: str) -> None:
    got = shares(placed(name))
    for n in got:
        assert abs(got[n] - FAIR[n]) <= 0.01, (n, got[n], FAIR[n])


def test_bw_splits_bytes_per_second_by_weight() -> None:
    chosen = placed("bw")
    rates = dict.fromkeys(FAIR, 0.0)
    for flow, n in zip(FLOWS, chosen, strict=True):
        rates[n] += flow.rate
    total = sum(rates.values())
    for n in rates:
        assert abs(rates[n] / total - FAIR[n]) <= 0.005
    # and it is not simply counting flows: the flow counts differ from the weight split
    assert any(abs(chosen.count(n) - 4_000 * w) > 50 for n, w in SPEC)


def test_lrt_sends_about_twice_the_flows_to_a_backend_twice_as_fast() -> None:
    s = make_scheduler("lrt", views([("fast", 1), ("slow", 1)]), seed=SEED, table_size=65537)
    loads = {"fast": BackendLoad(), "slow": BackendLoad()}
    loads["fast"].rtt, loads["slow"].rtt = 0.001, 0.002
    for flow in FLOWS[:30_000]:
        loads[s.pick(flow.key, flow.flow_hash, loads).name].active_flows += 1
    assert abs(loads["fast"].active_flows / loads["slow"].active_flows - 2.0) < 0.01


def test_sh_sends_all_of_a_clients_flows_to_one_backend() -> None:
    s = make_scheduler("sh", BACKENDS, seed=SEED, table_size=65537)
    by_client: dict[int, set[str]] = {}
    for flow, n in zip(FLOWS, place(s, FLOWS), strict=True):
        by_client.setdefault(flow.key[1], set()).add(n)
    assert all(len(backends) == 1 for backends in by_client.values())
    assert len(by_client) > 40_000  # many clients, so the split above is a real spread
