"""Each scheduler's rule: rotation order, smooth weights, source stickiness, load-aware choices, registry errors."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pktlb.core.flowkey import key_hash
from pktlb.core.sched import REGISTRY, BackendLoad, make_scheduler, rotation, scheduler_names
from tests.unit.test_maglev import views

SEED = 7
KEY = (6, 0xC6120A01, 0xC6126401, 40000, 80)
ALL = ["bw", "hash", "lc", "lrt", "maglev", "rr", "sh", "wrr"]


def sched(name: str, spec: list[tuple[str, int]]):
    return make_scheduler(name, views(spec), seed=SEED, table_size=65537)


def picks(s, count: int, loads=None) -> list[str]:
    return [s.pick(KEY, i, loads or {}).name for i in range(count)]


def test_registry_holds_every_scheduler_by_cli_name() -> None:
    assert scheduler_names() == ALL
    assert all(REGISTRY[name].name == name for name in ALL)


def test_unknown_scheduler_error_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown scheduler 'fastest': expected one of bw, hash, lc, lrt, maglev"):
        make_scheduler("fastest", [], seed=SEED)


@pytest.mark.parametrize("name", ALL)
def test_no_backend_means_no_pick(name: str) -> None:
    s = sched(name, [])
    assert s.pick(KEY, 1, {}) is None
    assert s.explain(KEY, 1, {}) == f"{name}: no eligible backend"


@pytest.mark.parametrize("name", ALL)
def test_weight_zero_backend_never_picked(name: str) -> None:
    s = sched(name, [("on", 1), ("off", 0)])
    assert set(picks(s, 500)) == {"on"}


def test_rr_takes_each_backend_in_turn_ignoring_weights() -> None:
    s = sched("rr", [("a", 5), ("b", 1), ("c", 1)])
    assert picks(s, 7) == ["a", "b", "c", "a", "b", "c", "a"]
    assert s.explain(KEY, 1, {}) == "rr: turn 8 of a rotation over 3 backends -> b"


def test_wrr_interleaves_5_to_2_instead_of_bursting() -> None:
    s = sched("wrr", [("a", 5), ("b", 2)])
    seq = picks(s, 14)
    assert seq[:7] == ["a", "b", "a", "a", "a", "b", "a"] and seq[7:] == seq[:7]
    assert "b, b" not in ", ".join(seq + seq[:1])


@settings(max_examples=60, deadline=None)
@given(weights=st.lists(st.integers(1, 12), min_size=1, max_size=6))
def test_wrr_is_smooth_every_prefix_stays_close_to_the_weights(weights: list[int]) -> None:
    """Each backend gets ``weight`` picks per cycle, and in every prefix of k picks its count stays within 2
    of k*w/sum (a bursting wrr, a a a a a a b b b b b b for 6:6, is 3 off after 6 picks)."""
    spec = [(f"be{i}", w) for i, w in enumerate(weights)]
    s = sched("wrr", spec)
    total = sum(weights)
    seq = picks(s, 2 * total)
    for name, w in spec:
        for k in range(1, len(seq) + 1):
            assert abs(seq[:k].count(name) - k * w / total) < 2
        assert seq[:total].count(name) == w


def test_wrr_live_stepping_matches_the_precomputed_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = [("a", 7), ("b", 3), ("c", 2)]
    precomputed = picks(sched("wrr", spec), 40)
    monkeypatch.setattr(rotation, "_MAX_PRECOMPUTED_WORK", 0)
    live = sched("wrr", spec)
    assert live._next is None  # really the live path
    assert picks(live, 40) == precomputed


def test_wrr_weights_are_reduced_by_their_gcd() -> None:
    assert picks(sched("wrr", [("a", 10), ("b", 4)]), 7) == picks(sched("wrr", [("a", 5), ("b", 2)]), 7)


def test_sh_keeps_one_client_on_one_backend_whatever_its_ports() -> None:
    s = sched("sh", [("a", 1), ("b", 1), ("c", 1)])
    for src in range(0xC6120100, 0xC6120100 + 50):
        chosen = {s.pick((6, src, 0xC6126401, sport, 80), key_hash((6, src, 0xC6126401, sport, 80), SEED), {}).name
                  for sport in range(1024, 1124)}
        assert len(chosen) == 1
    assert s.explain(KEY, 1, {}).startswith("sh: source hash 0x")


def test_hash_depends_on_the_whole_5_tuple() -> None:
    s = sched("hash", [("a", 1), ("b", 1), ("c", 1)])
    chosen = {s.pick(k, key_hash(k, SEED), {}).name
              for k in ((6, 0xC6120101, 0xC6126401, p, 80) for p in range(1024, 1124))}
    assert chosen == {"a", "b", "c"}
    assert s.explain(KEY, 5, {}) == "hash: 5-tuple hash 0x00000005 mod 3 (weighted entries) = 2 -> c"


def loads(**figures: tuple[int, float | None, float]) -> dict[str, BackendLoad]:
    """name=(active_flows, rtt, bytes_rate)."""
    out = {}
    for name, (active, rtt, rate) in figures.items():
        load = BackendLoad()
        load.active_flows, load.rtt, load.bytes_rate = active, rtt, rate
        out[name] = load
    return out


def test_lc_picks_fewest_flows_per_weight() -> None:
    s = sched("lc", [("a", 1), ("b", 3), ("c", 1)])
    # a: 2/1, b: 5/3 = 1.67, c: 3/1
    current = loads(a=(2, None, 0), b=(5, None, 0), c=(3, None, 0))
    assert {s.pick(KEY, h, current).name for h in range(10)} == {"b"}
    assert s.explain(KEY, 0, current) == "lc: lowest active flows / weight -> b (scores: a 2, b 1.667, c 3)"


def test_lc_treats_a_missing_load_as_idle() -> None:
    s = sched("lc", [("a", 1), ("b", 1)])
    assert {s.pick(KEY, h, loads(a=(4, None, 0))).name for h in range(10)} == {"b"}


def test_idle_ties_are_spread_by_flow_hash_not_given_to_the_first() -> None:
    for name in ("lc", "lrt", "bw"):
        s = sched(name, [("a", 1), ("b", 1), ("c", 1)])
        assert {s.pick(KEY, h, {}).name for h in range(3)} == {"a", "b", "c"}


def test_lrt_prefers_the_faster_backend_until_its_queue_grows() -> None:
    s = sched("lrt", [("fast", 1), ("slow", 1)])
    assert s.pick(KEY, 0, loads(fast=(0, 0.001, 0), slow=(0, 0.004, 0))).name == "fast"
    # fast: 0.001 x (4 + 1) = 0.005 > slow: 0.004 x (0 + 1)
    assert s.pick(KEY, 0, loads(fast=(4, 0.001, 0), slow=(0, 0.004, 0))).name == "slow"


def test_lrt_scores_an_unmeasured_backend_with_the_mean_of_the_others() -> None:
    s = sched("lrt", [("a", 1), ("b", 1), ("new", 1)])
    current = loads(a=(1, 0.002, 0), b=(1, 0.004, 0))  # "new" absent: idle, rtt taken as 0.003
    assert s.pick(KEY, 0, current).name == "new"
    assert "new 0.003" in s.explain(KEY, 0, current)


def test_bw_picks_least_bytes_per_weight_then_fewest_flows() -> None:
    s = sched("bw", [("a", 1), ("b", 2)])
    assert s.pick(KEY, 0, loads(a=(1, None, 1000.0), b=(9, None, 1800.0))).name == "b"  # 1000 vs 900 per weight
    assert s.pick(KEY, 0, loads(a=(1, None, 500.0), b=(4, None, 1000.0))).name == "a"  # equal rate: 1 vs 2 flows


@pytest.mark.parametrize("name", ALL)
def test_explain_names_the_backend_the_scheduler_picks(name: str) -> None:
    spec = [("a", 2), ("b", 1), ("c", 3)]
    first, second = sched(name, spec), sched(name, spec)
    for h in itertools.islice(itertools.count(1, 7919), 20):
        chosen = first.pick(KEY, h, {}).name
        assert second.explain(KEY, h, {}).split(" -> ")[-1].split(" ")[0] == chosen
