"""`pktlb compare` end to end: a short real run of every mode, and what its report must say.

One run (module fixture) of all four modes with 2 backends and 2 s of load; the tests then read
its report.json, report.md, charts and captures.  The lab is removed by compare itself after each
mode; the fixture removes anything left with the test's prefix, also when the run fails.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pktlb.adapters.pcap import read_pcap
from pktlb.lab.manage import existing_namespaces, lab_down
from pktlb.reports.compare.capture_stats import parse_segment
from tests.lab.conftest import PKTLB, need_root, unique_prefix

pytestmark = pytest.mark.lab

MODES = ("nat", "fullnat", "tunnel", "dsr")
CLIENT = "198.18.1.10"
SNAT = "198.18.0.3"
BACKENDS = 2


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    need_root()
    prefix = unique_prefix()
    out = tmp_path_factory.mktemp("compare")
    try:
        done = subprocess.run([PKTLB, "compare", "--modes", ",".join(MODES), "--backends", str(BACKENDS),
                               "--duration", "2", "--out", str(out), "--prefix", prefix, "--json",
                               "--fastpath", "off"],  # pktlb and the kernel only: the fast path has its own test
                              capture_output=True, text=True, timeout=280)
        leftovers = existing_namespaces(prefix)
    finally:
        lab_down(prefix)
    assert (out / "report.json").exists(), f"no report (exit {done.returncode}): {done.stderr[-2000:]}"
    yield {"done": done, "out": out, "report": json.loads((out / "report.json").read_text()),
           "stdout_report": json.loads(done.stdout), "leftovers": leftovers, "prefix": prefix}


def measured_runs(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in report["runs"] if r["available"]]


def test_the_run_succeeds_cleans_up_and_prints_the_same_report(compare_run):
    done = compare_run["done"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert compare_run["leftovers"] == [], "compare left namespaces behind"
    assert compare_run["stdout_report"] == compare_run["report"]
    progress = done.stderr
    for mode in MODES:
        assert f"[{mode}/pktlb" in progress and "lab down" in progress


def test_every_mode_is_measured_with_pktlb_and_the_kernel_only_where_it_can(compare_run):
    runs = {(r["mode"], r["engine"]): r for r in compare_run["report"]["runs"]}
    assert set(runs) == {(m, e) for m in MODES for e in ("pktlb", "kernel")}
    for mode in MODES:
        assert runs[(mode, "pktlb")]["available"] and runs[(mode, "pktlb")]["errors"] == []
    for mode in ("nat", "fullnat", "dsr"):
        assert runs[(mode, "kernel")]["available"] and runs[(mode, "kernel")]["errors"] == []
    assert runs[("tunnel", "kernel")]["available"] is False
    assert "cannot do mode" in runs[("tunnel", "kernel")]["reason"]


def test_load_and_throughput_figures_are_real(compare_run):
    for run in measured_runs(compare_run["report"]):
        http = run["http"]
        assert http["tool"] == "wrk" and http["requests"] > 50 and http["requests_per_second"] > 0
        assert http["errors"] <= http["requests"] // 100, http  # at most 1% connect/timeout errors
        lat = http["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert run["throughput"]["bytes"] == 32 << 20 and run["throughput"]["megabytes_per_second"] > 0
        if run["engine"] == "pktlb":
            assert run["lb"]["cpu_us_per_request"] > 0
            for direction in ("upload", "download"):
                assert run["iperf3"][direction]["megabytes_per_second"] > 0, run["iperf3"]
        else:
            assert run["lb"]["cpu_us_per_request"] is None and run["lb"]["cpu_method"].startswith("n/a")


def test_replies_pass_the_lb_only_in_nat_and_fullnat(compare_run):
    for run in measured_runs(compare_run["report"]):
        lb = run["lb"]
        assert lb["packets_in_per_request"] >= 5  # handshake, request, acknowledgements, teardown
        if run["mode"] in ("dsr", "tunnel"):
            assert lb["packets_out_per_request"] == 0 and lb["bytes_out_per_request"] == 0
        else:
            assert lb["packets_out_per_request"] >= 3
        if run["engine"] == "pktlb":  # the engine's counters and the capture on its interface agree
            assert lb["capture"]["packets_out_per_request"] == pytest.approx(lb["packets_out_per_request"], abs=0.5)
            assert lb["load_run"]["packets_out"] == 0 if run["mode"] in ("dsr", "tunnel") else \
                lb["load_run"]["packets_out"] > 0


def test_overhead_mtu_and_the_address_the_backend_saw(compare_run):
    for run in measured_runs(compare_run["report"]):
        tunnel = run["mode"] == "tunnel"
        assert run["header_overhead_bytes"] == (20 if tunnel else 0)
        assert run["mtu"]["inner"] == (1480 if tunnel else 1500)
        assert run["mtu"]["client_path_mtu"] == (1480 if tunnel else None)
        assert run["mtu"]["big_request_ok"]
        expected = SNAT if run["mode"] == "fullnat" else CLIENT
        assert run["request"]["backend_saw"] == expected
        assert run["probe"]["backend_saw"] == ({SNAT: 64} if run["mode"] == "fullnat" else {"own address": 64})


def test_spread_covers_every_backend(compare_run):
    for run in measured_runs(compare_run["report"]):
        spread = run["spread"]["probe"]
        assert sorted(spread) == [f"be{i}" for i in range(1, BACKENDS + 1)] and sum(spread.values()) == 64
        if run["engine"] == "pktlb":  # new flows the engine scheduled during the load run
            assert sorted(run["spread"]["load"]) == sorted(spread) and min(run["spread"]["load"].values()) > 0


def _ports(path: str) -> set[int]:
    return {p for _, frame in read_pcap(path) if (seg := parse_segment(frame)) for p in (seg.sport, seg.dport)}


def test_captures_hold_the_same_request_at_client_lb_and_backend(compare_run):
    for run in measured_runs(compare_run["report"]):
        captures = run["captures"]
        for place in ("client", "lb", "backend"):
            assert Path(captures[place]).stat().st_size > 24 and captures["frames"][place] >= 5
        port = run["request"]["answer"]["client_port"]  # the client port the backend saw
        assert port in _ports(captures["backend"])
        if run["mode"] != "fullnat":  # full-NAT gives the backend another source port
            assert port in _ports(captures["client"]) and port in _ports(captures["lb"])
        if run["mode"] == "tunnel":
            assert run["request"]["lb_frames"]["encapsulated_sent"] >= 5


def test_report_markdown_charts_and_invariants(compare_run):
    out, report = compare_run["out"], compare_run["report"]
    markdown = (out / "report.md").read_text()
    for heading in ("## Performance", "## What each mode does to a packet", "## Captures", "## Invariants"):
        assert heading in markdown
    for chart in ("throughput.png", "latency.png", "lb_packets_per_request.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({chart})" in markdown
    assert report["invariants"] and all(c["holds"] for c in report["invariants"]), \
        [c for c in report["invariants"] if not c["holds"]]
