"""A tiny `pktlb bench` run: one mode and the baselines, small floods.  Checks the report's shape and
that every forwarder delivered; the figures themselves are not asserted (no timed assertions)."""

from __future__ import annotations

import json

import pytest

from pktlb.lab.manage import lab_down
from pktlb.reports.bench.lab import BenchLab
from pktlb.reports.bench.options import BenchOptions
from pktlb.reports.bench.results import NFT_DSR, NFTABLES, ROUTING, SCAPY, render_text
from pktlb.reports.bench.run import direct_rtts, run_bench, run_variant, write_outputs
from pktlb.reports.bench.variants import KernelDsr, PktlbVariant
from tests.lab.conftest import need_root, unique_prefix

pytestmark = [pytest.mark.lab, pytest.mark.timeout(150)]


def test_a_small_bench_run_reports_every_variant(tmp_path):
    need_root()
    prefix = unique_prefix()
    opts = BenchOptions(modes=["nat"], packets=20_000, seconds=3.0, scapy_packets=600, scapy_rate=2_000,
                        latency_samples=20, workers=[1, 2], drain_frames=4_000, drain_repeats=1,
                        prefix=prefix, out=str(tmp_path), fastpath=[], syn_packets=4_000)
    try:
        report = run_bench(opts)
    finally:
        lab_down(prefix)  # run_bench removes its lab; this covers a test interrupted half-way
    text = render_text(report)
    paths = write_outputs(report, str(tmp_path), text)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert len(paths) == 2 and "pktlb nat" in text

    names = [v["name"] for v in data["variants"]]
    assert names == ["pktlb nat", "pktlb nat, rx on CPU 0", ROUTING, NFTABLES, SCAPY]
    for variant in data["variants"]:
        assert variant["sent"] > 0 and variant["delivered"] > 0, variant
        assert variant["delivered"] <= variant["sent"]
        # a small flood may fall between scheduler ticks; the paced run (4 s) gives the CPU figure
        assert variant["lb_cpu_seconds"] >= 0 and variant["cpu_us_per_packet"] > 0
        assert variant["extra"]["paced"]["delivered"] > 0
        assert set(variant["ratios"]) >= {"pps_vs_nftables", "cpu_vs_nftables", "pps_vs_routing", "cpu_vs_routing"}
    engine = data["variants"][0]
    assert sum(engine["per_backend"].values()) == engine["delivered"]
    assert len([n for n, c in engine["per_backend"].items() if c > 0]) == 3, "Maglev spreads 64 flows over 3"
    assert engine["latency"]["samples"] > 0 and engine["latency"]["p50_us"] > 0
    diagnostic = data["variants"][1]
    assert diagnostic["kind"] == "diagnostic" and diagnostic["ratios"]["cpu_vs_nftables"] is None
    assert data["variants"][2]["per_backend"]["be1"] == data["variants"][2]["delivered"]  # routing: one backend
    assert data["variants"][4]["latency"] is None  # the scapy reference forwards UDP one way only
    # The new-flow flood: for the engine's row and DNAT (they keep flows), not routing or the scapy loop.
    assert [v["new_flow_pps"] is not None for v in data["variants"]] == [True, False, False, True, False]

    assert {t["name"] for t in data["targets"]} >= {"nat: LB CPU per packet vs nftables DNAT",
                                                    "nat: delivered pps vs the scapy forwarder",
                                                    "nat: backlog drain, 2 workers vs 1"}
    drain = data["scaling"]["modes"][0]
    assert [r["workers"] for r in drain["runs"]] == [1, 2]
    assert all(r["delivered"] > 0 and r["seconds"] > 0 for r in drain["runs"])
    assert data["machine"]["cpus"] >= 2 and data["settings"]["lb_cpu"] == 1


def test_the_kernel_dsr_baseline_and_the_new_flow_flood_deliver_to_every_backend():
    """In a DSR lab: the kernel's DSR (netdev MAC rewrite) forwards the UDP flood, TCP connects and the SYN
    flood to all three backends; the engine's SYN flood is counted as new flows too."""
    need_root()
    prefix = unique_prefix()
    opts = BenchOptions(modes=["dsr"], packets=20_000, seconds=3.0, latency_samples=10, syn_packets=4_000,
                        paced=False, prefix=prefix)
    lab = BenchLab("dsr", prefix)
    try:
        lab.up().prepare()
        direct = direct_rtts(lab, 10)
        kernel = run_variant(lab, KernelDsr(), opts, direct, lambda _: None)
        engine = run_variant(lab, PktlbVariant("dsr"), opts, direct, lambda _: None)
    finally:
        lab.down()
    assert kernel.name == NFT_DSR and kernel.delivered > 0
    assert len([n for n, c in kernel.per_backend.items() if c > 0]) == 3, kernel.per_backend
    assert kernel.latency is not None and kernel.latency.samples > 0  # TCP connects through the netdev chain
    for row in (kernel, engine):
        new = row.extra["new_flows"]
        assert new["sent"] == 4_000 and 0 < new["delivered"] <= new["sent"] and row.new_flow_pps > 0, new
        assert len([n for n, c in new["per_backend"].items() if c > 0]) == 3, new
