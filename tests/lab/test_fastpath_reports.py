"""The engine with its kernel fast path in `pktlb compare` and `pktlb bench`: a row of its own, measured only when
the engine says the fast path is on.  Skipped where this pktlb has no fast path (lab/fastpath.py)."""

from __future__ import annotations

import json
import subprocess

import pytest

from pktlb.lab.fastpath import fastpath_hooks
from pktlb.lab.manage import lab_down
from pktlb.reports.bench.lab import BenchLab
from pktlb.reports.bench.options import BenchOptions
from pktlb.reports.bench.run import run_variant
from pktlb.reports.bench.variants import PktlbVariant
from tests.lab.conftest import PKTLB, need_root, unique_prefix

pytestmark = [pytest.mark.lab, pytest.mark.timeout(280)]


def need_fastpath() -> str:
    need_root()
    hooks = fastpath_hooks()
    if not hooks:
        pytest.skip("this pktlb has no kernel fast path (pktlb run --fastpath)")
    return hooks[0]


def test_compare_runs_the_engine_with_and_without_its_fast_path(tmp_path):
    hook = need_fastpath()
    prefix = unique_prefix()
    try:
        done = subprocess.run([PKTLB, "compare", "--modes", "dsr", "--backends", "2", "--duration", "1",
                               "--fastpath", hook, "--out", str(tmp_path), "--prefix", prefix, "--json"],
                              capture_output=True, text=True, timeout=240)
    finally:
        lab_down(prefix)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {r["engine"]: r for r in json.loads(done.stdout)["runs"]}
    assert set(runs) == {"pktlb", f"pktlb-{hook}", "kernel"}
    fast = runs[f"pktlb-{hook}"]
    assert fast["available"] and fast["errors"] == [], fast.get("errors")
    assert fast["fastpath"] == hook and fast["fastpath_stats"]["hook"] == hook
    assert fast["http"]["requests"] > 0 and fast["lb"]["packets_out_per_request"] == 0  # dsr: replies bypass
    assert fast["request"]["backend_saw"] == fast["request"]["client_address"]


@pytest.mark.parametrize(("mode", "xdp_mode"), [("nat", "generic"), ("fullnat", "generic"), ("tunnel", "generic"),
                                               ("dsr", "generic"), ("nat", "native")])
def test_bench_measures_the_engine_with_its_fast_path(mode, xdp_mode):
    hook = need_fastpath()
    prefix = unique_prefix()
    opts = BenchOptions(modes=[mode], packets=20_000, seconds=3.0, latency_samples=10, syn_packets=4_000,
                        paced=False, prefix=prefix)
    lab = BenchLab(mode, prefix)
    try:
        lab.up().prepare()
        row = run_variant(lab, PktlbVariant(mode, fastpath=hook, xdp_mode=xdp_mode), opts, None, lambda _: None)
    finally:
        lab.down()
    assert row.name == f"pktlb {mode}, fastpath {hook}" and row.kind == "pktlb"
    assert row.delivered > 0 and len([n for n, c in row.per_backend.items() if c > 0]) == 3, row.per_backend
    assert row.new_flow_pps and row.extra["new_flows"]["delivered"] > 0
    assert all(e["totals"] is not None for e in row.extra["engine"])
    # every flow established by the warm-up: the flood is the kernel's (a full-NAT flow's first frame is Python's)
    assert row.extra["warmup"]["delivered"] > 0
    assert row.extra["fastpath_counters"]["forwarded"].get("inbound", 0) > 0.9 * row.delivered
    if hook == "xdp":  # the program ran on the LB core: generic XDP after RPS, or a NAPI thread pinned there
        assert row.extra["xdp_mode"] == xdp_mode
        assert (row.extra.get("napi_threads_on_lb_cpu", 0) >= 1) == (xdp_mode == "native")
