"""The hashing lab's pure part: synthetic flows, movement on removal (mod-N vs Maglev), ring summaries."""

from __future__ import annotations

import pytest

from pktlb.core.sched import make_scheduler
from pktlb.core.simulate import ring_summary, run_scheduler, simulate, synthetic_flows
from tests.unit.test_maglev import views

SEED = 99
FLOWS = synthetic_flows(20_000, proto=17, vip=0xC6126402, port=53, hash_seed=SEED)
BACKENDS = views([(f"be{i}", 1) for i in range(1, 6)])


def test_synthetic_flows_are_reproducible_and_aimed_at_the_service() -> None:
    again = synthetic_flows(20_000, proto=17, vip=0xC6126402, port=53, hash_seed=SEED)
    assert again == FLOWS
    assert synthetic_flows(100, proto=17, vip=0xC6126402, port=53, hash_seed=SEED, flow_seed=2) != FLOWS[:100]
    assert all(f.key[0] == 17 and f.key[2] == 0xC6126402 and f.key[4] == 53 for f in FLOWS)
    assert all(0xC6120000 < f.key[1] < 0xC6140000 for f in FLOWS)  # clients in 198.18.0.0/15
    assert len({f.key for f in FLOWS}) == len(FLOWS)


def test_removal_maglev_moves_only_the_removed_backends_flows_mod_n_moves_most() -> None:
    result = simulate("dns", "maglev", BACKENDS, FLOWS, seed=SEED, table_size=65537, remove="be3")
    runs = {r.scheduler: r for r in result.runs}
    assert [r.scheduler for r in result.runs] == ["rr", "wrr", "lc", "lrt", "bw", "sh", "hash", "maglev"]
    maglev, modn = runs["maglev"], runs["hash"]
    assert maglev.must_move == maglev.counts["be3"] and maglev.moved >= maglev.must_move
    assert maglev.needless_fraction < 0.01
    # mod-N: going from 5 to 4 entries keeps a flow only when h%5 and h%4 agree on a survivor: ~1/4 stay.
    assert 0.70 < modn.needless_fraction < 0.80
    assert runs["sh"].needless_fraction > 0.5
    assert maglev.counts_after is not None and "be3" not in maglev.counts_after
    assert sum(maglev.counts_after.values()) == len(FLOWS)
    # slots: be3's fifth of the table, plus under 1% of the rest
    assert 13107 <= maglev.slots_moved <= 13107 + 0.01 * (65537 - 13107)
    assert modn.slots_moved is None


def test_remove_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match=r"--remove: got 'nope', expected a backend of service dns: be1, be2"):
        simulate("dns", "maglev", BACKENDS, FLOWS, seed=SEED, table_size=65537, remove="nope")


def test_run_without_removal_reports_shares_and_deviation() -> None:
    run = run_scheduler("hash", BACKENDS, FLOWS, seed=SEED, table_size=65537)
    assert sum(run.counts.values()) == len(FLOWS)
    assert run.counts_after is None and run.moved == 0
    assert run.max_deviation == max(abs(run.shares[n] - 0.2) for n in run.shares)
    assert abs(sum(run.byte_shares.values()) - 1) < 1e-9


def test_ring_summary_counts_slots_and_imbalance() -> None:
    backends = views([("a", 1), ("b", 3), ("c", 0)])
    sched = make_scheduler("maglev", backends, seed=SEED, table_size=4001)
    summary = ring_summary("web", "maglev", backends, sched.table, seed=SEED)
    rows = {r.backend: r for r in summary.rows}
    assert sum(r.slots for r in summary.rows) == 4001
    assert rows["c"].slots == 0 and rows["c"].fair == 0.0
    assert rows["b"].fair == 0.75 and abs(rows["b"].share - 0.75) < 0.001
    assert summary.peak_to_fair >= 1.0
    assert summary.imbalance == max(abs(r.share / r.fair - 1) for r in summary.rows if r.fair)
