"""`pktlb compare` pieces that need no lab: tool output parsers, capture accounting, invariants, rendering.

The tool outputs are verbatim from runs in the lab (wrk 4.1, ab 2.3, iperf3 3.12).
"""

from __future__ import annotations

import copy
import json

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pktlb.adapters.pcap import PcapWriter
from pktlb.lab.addressing import mac_for_ip
from pktlb.lab.topology import load_topology
from pktlb.reports.compare.capture_stats import lb_frames, parse_segment
from pktlb.reports.compare.lab_facts import mode_requirements
from pktlb.reports.compare.plan import unavailable
from pktlb.reports.compare.render import invariants, render_markdown, render_text
from pktlb.reports.compare.workload import WorkloadError, parse_ab, parse_iperf3, parse_wrk

WRK = """Running 3s test @ http://198.19.0.100/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.52ms    4.89ms  50.20ms   88.93%
    Req/Sec     1.22k   326.78     1.99k    76.67%
  Latency Distribution
     50%    3.22ms
     75%    4.86ms
     90%    7.82ms
     99%   22.14ms
  7365 requests in 3.04s, 1.71MB read
  Socket errors: connect 0, read 7365, write 0, timeout 2
Requests/sec:   2424.04
Transfer/sec:    575.33KB
"""

AB = """Server Software:        pktlb-lab-httpd/1
Concurrency Level:      16
Time taken for tests:   0.231 seconds
Complete requests:      500
Failed requests:        7
   (Connect: 0, Receive: 0, Length: 6, Exceptions: 0)
Total transferred:      122000 bytes
Requests per second:    2168.00 [#/sec] (mean)
"""
AB_CSV = "Percentage served,Time in ms\n" + "\n".join(f"{p},{0.1 * p + 1:.3f}" for p in range(101)) + "\n"

LB = "198.18.0.2"
LB_MAC = mac_for_ip(LB)
ROUTER_MAC = mac_for_ip("198.18.0.1")
BE_MAC = mac_for_ip("198.18.0.11")


def test_wrk_output_gives_rate_percentiles_and_real_errors_only():
    result = parse_wrk(WRK)
    assert (result.requests, result.seconds, result.requests_per_second) == (7365, 3.04, 2424.04)
    assert result.latency_ms == {"p50": 3.22, "p90": 7.82, "p99": 22.14}
    assert result.errors == 2  # the 7365 read errors are the server closing after each answer


def test_wrk_units_and_garbage():
    result = parse_wrk(WRK.replace("22.14ms", "1.02s").replace("3.22ms", "850.00us"))
    assert result.latency_ms["p99"] == pytest.approx(1020.0) and result.latency_ms["p50"] == pytest.approx(0.85)
    with pytest.raises(WorkloadError, match="cannot read wrk"):
        parse_wrk("unable to connect to 198.19.0.100:80 Connection refused")


def test_ab_output_and_percentile_csv():
    result = parse_ab(AB, AB_CSV)
    assert (result.requests, result.requests_per_second, result.seconds) == (500, 2168.0, 0.231)
    assert result.latency_ms == {"p50": 6.0, "p90": 10.0, "p99": 10.9}
    assert result.errors == 1  # Length failures are the answers' varying JSON length, not errors
    with pytest.raises(WorkloadError, match="percentile"):
        parse_ab(AB, "Percentage served,Time in ms\n")


def test_iperf3_json_and_its_error_field():
    text = json.dumps({"end": {"sum_received": {"bytes": 50_000_000, "seconds": 2.0, "bits_per_second": 2e8}}})
    result = parse_iperf3(text)
    assert (result.bytes, result.megabytes_per_second, result.tool) == (50_000_000, 25.0, "iperf3")
    with pytest.raises(WorkloadError, match="busy"):
        parse_iperf3(json.dumps({"end": {}, "error": "the server is busy running a test. try again later"}))


def _frame(src_mac: str, dst_mac: str, ip: IP, seq: int, flags: str = "A", payload: bytes = b"") -> bytes:
    return bytes(Ether(src=src_mac, dst=dst_mac) / ip / TCP(sport=40000, dport=80, seq=seq, ack=7, flags=flags)
                 / payload)


def _write(path, frames):
    with PcapWriter(str(path)) as writer:
        for i, frame in enumerate(frames):
            writer.write(frame, 1.0 + i)


def test_lb_capture_counts_directions_and_measures_ipip_overhead(tmp_path):
    client = IP(src="198.18.1.10", dst="198.19.0.100")
    received = [_frame(ROUTER_MAC, LB_MAC, client, seq, payload=b"x" * n) for seq, n in ((1, 0), (2, 100))]
    sent = [bytes(Ether(src=LB_MAC, dst=BE_MAC) / IP(src=LB, dst="198.18.0.11", proto=4) / Ether(f)[IP])
            for f in received]
    reply = bytes(Ether(src=BE_MAC, dst=LB_MAC) / IP(src="198.18.0.11", dst="198.18.1.10")
                  / TCP(sport=80, dport=40000, flags="A"))
    _write(tmp_path / "lb.pcap", [received[0], sent[0], received[1], sent[1], reply])
    frames = lb_frames(str(tmp_path / "lb.pcap"), LB_MAC, 80)
    assert (frames.packets_in, frames.packets_out, frames.sent, frames.encapsulated_sent) == (2, 1, 2, 2)
    assert frames.bytes_in == sum(len(f) for f in received) and frames.bytes_out == len(reply)
    assert frames.header_overhead == 20 and frames.overheads == {20: 2}
    inner = parse_segment(sent[1])
    assert inner is not None and inner.encapsulated and inner.dport == 80 and inner.key[3] == 100


def test_lb_capture_of_nat_has_no_overhead_and_unpaired_frames_give_none(tmp_path):
    received = _frame(ROUTER_MAC, LB_MAC, IP(src="198.18.1.10", dst="198.19.0.100"), 5, "S")
    forwarded = _frame(LB_MAC, BE_MAC, IP(src="198.18.1.10", dst="198.18.0.11"), 5, "S")
    _write(tmp_path / "nat.pcap", [received, forwarded])
    assert lb_frames(str(tmp_path / "nat.pcap"), LB_MAC, 80).header_overhead == 0
    _write(tmp_path / "alone.pcap", [received])
    assert lb_frames(str(tmp_path / "alone.pcap"), LB_MAC, 80).header_overhead is None


def test_mode_requirements_come_from_the_lab_data():
    data = load_topology()
    dsr = mode_requirements(data, "dsr", "pktlb", None)
    assert dsr["backend"]["sysctls"]["net.ipv4.conf.all.arp_ignore"] == 1
    assert "198.19.0.100/32 on lo" in dsr["backend"]["addresses"]
    tunnel = mode_requirements(data, "tunnel", "pktlb", "user")
    assert tunnel["backend"]["sysctls"]["net.ipv4.conf.pktlbtun0.rp_filter"] == 0
    assert "tso off" in tunnel["client"]["offloads"]["eth0"]
    assert mode_requirements(data, "nat", "pktlb", None)["backend"]["routes"] == ["default via 198.18.0.2"]
    assert mode_requirements(data, "fullnat", "kernel", None)["lb"]["sysctls"]["net.ipv4.ip_forward"] == 1
    assert unavailable(data, "tunnel", "kernel") and unavailable(data, "nat", "kernel") is None
    assert unavailable(data, "dsr", "kernel") is None  # nftables' netdev MAC rewrite
    assert mode_requirements(data, "dsr", "kernel", None)["lb"]["kernel_lb"] is True


def _run(mode: str, engine: str = "pktlb") -> dict:
    bypass = mode in ("dsr", "tunnel")
    overhead = 20 if mode == "tunnel" else 0
    return {"mode": mode, "engine": engine, "available": True, "errors": [],
            "http": {"tool": "wrk", "requests": 1000, "requests_per_second": 500.0,
                     "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0}},
            "throughput": {"tool": "http-download", "megabytes_per_second": 30.0},
            "iperf3": {"upload": {"megabytes_per_second": 20.0}, "download": {"megabytes_per_second": 40.0}},
            "lb": {"packets_in_per_request": 7.0, "packets_out_per_request": 0.0 if bypass else 5.0,
                   "bytes_in_per_request": 546.0, "bytes_out_per_request": 0.0 if bypass else 580.0,
                   "cpu_us_per_request": 150.0},
            "request": {"client_address": "198.18.1.10",
                        "backend_saw": "198.18.0.3" if mode == "fullnat" else "198.18.1.10"},
            "header_overhead_bytes": overhead, "mtu": {"lb_link": 1500, "inner": 1500 - overhead,
                                                       "client_path_mtu": 1480 if overhead else None},
            "spread": {"probe": {"be1": 30, "be2": 34}}, "probe": {"requests": 64},
            "requirements": {"backend": {"routes": ["default via 198.18.0.1"]}}}


REPORT = {"created": "now", "seconds": 60.0, "host": {"cpus": 2, "kernel": "6.x"},
          "settings": {"modes": ["nat", "fullnat", "tunnel", "dsr"], "scheduler": "maglev", "backends": 2,
                       "duration": 5.0, "requests": None, "connections": 16, "download_bytes": 32 << 20,
                       "probe_sources": 64, "out": "/tmp/out"},
          "lab": {"vip": "198.19.0.100", "service_port": 80, "lb_address": "198.18.0.2", "snat_address": "198.18.0.3"},
          "runs": [_run("nat"), _run("fullnat"), _run("tunnel"), _run("dsr"),
                   {"mode": "tunnel", "engine": "kernel", "available": False, "reason": "no IPVS", "errors": []},
                   _run("dsr", "kernel")]}


def test_invariants_hold_for_what_the_modes_do_and_catch_a_leak():
    report = copy.deepcopy(REPORT)
    checks = invariants(report)
    assert checks and all(c["holds"] for c in checks)
    report["runs"][3]["lb"]["packets_out_per_request"] = 2.0  # DSR replies through the LB: a broken lab
    report["runs"][2]["header_overhead_bytes"] = 0
    broken = {(c["mode"], c["check"]) for c in invariants(report) if not c["holds"]}
    assert broken == {("dsr", "no reply packet passes the LB"), ("tunnel", "20 bytes of header overhead per packet")}


def test_text_and_markdown_show_every_run_and_the_unavailable_reason():
    report = copy.deepcopy(REPORT)
    report["invariants"] = invariants(report)
    text = render_text(report)
    assert "not available: no IPVS" in text and "198.18.0.3 (LB SNAT)" in text
    assert f"Invariants: {len(report['invariants'])}/{len(report['invariants'])} hold" in text
    markdown = render_markdown(report)
    assert "| tunnel | pktlb | 500 | 1.0 / 2.0 / 3.0 | 30.0 | 20.0 / 40.0 | 7.0 / 0.0 |" in markdown
    assert "| dsr | kernel | 500 | 1.0 / 2.0 / 3.0 |" in markdown  # the kernel's DSR has a row like DNAT's
    assert "![HTTP latency percentiles by mode](latency.png)" in markdown


def test_charts_are_pngs(tmp_path):
    from pktlb.reports.compare.charts import write_charts

    paths = write_charts(copy.deepcopy(REPORT), tmp_path)
    assert [p.name for p in paths] == ["throughput.png", "latency.png", "lb_packets_per_request.png", "l4_l7.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size < 100_000 for p in paths)


def test_cli_refuses_bad_options_before_touching_anything():
    from click.testing import CliRunner

    from pktlb.cli import main

    runner = CliRunner()
    both = runner.invoke(main, ["compare", "--duration", "3", "--requests", "100"])
    assert both.exit_code == 2 and "either --duration or --requests" in both.output
    mode = runner.invoke(main, ["compare", "--modes", "nat,ipvs"])
    assert mode.exit_code == 2 and "ipvs" in mode.output
    sched = runner.invoke(main, ["compare", "--scheduler", "nope"])
    assert sched.exit_code == 2 and "nope" in sched.output


def test_the_engine_with_its_fast_path_is_a_compare_engine_of_its_own(monkeypatch, tmp_path):
    from pktlb.lab import fastpath
    from pktlb.reports.compare import plan as compare_plan
    from pktlb.reports.compare.charts import write_charts

    assert compare_plan.lab_engine("pktlb-xdp") == ("pktlb", "xdp")
    assert compare_plan.lab_engine("pktlb") == ("pktlb", "off") and compare_plan.lab_engine("kernel") == ("kernel", "off")
    data = load_topology()

    def engines(mode: str = "nat", **settings) -> tuple[str, ...]:
        return compare_plan.compare_engines(compare_plan.CompareSettings(**settings), data, mode)

    assert engines(fastpath=["xdp", "tc"]) == ("pktlb", "pktlb-xdp", "pktlb-tc", "kernel")
    assert engines(fastpath=[]) == ("pktlb", "kernel")
    assert "pktlb-xdp" not in engines("l7", fastpath=["xdp"])  # the proxy has no fast path
    monkeypatch.setattr(fastpath, "fastpath_hooks", lambda: ())
    assert engines() == ("pktlb", "kernel")  # auto, and this pktlb has none
    assert "no kernel fast path" in compare_plan.unavailable(data, "nat", "pktlb-xdp")
    monkeypatch.setattr(fastpath, "fastpath_hooks", lambda: ("xdp", "tc"))
    assert engines() == ("pktlb", "pktlb-xdp", "kernel")
    assert compare_plan.unavailable(data, "nat", "pktlb-xdp") is None
    report = copy.deepcopy(REPORT)
    report["runs"].insert(1, {**_run("nat", "pktlb-xdp"), "fastpath": "xdp"})
    report["invariants"] = invariants(report)
    assert all(c["holds"] for c in report["invariants"])
    assert "| nat | pktlb-xdp | 500 |" in render_markdown(report)
    assert [p.name for p in write_charts(report, tmp_path)][0] == "throughput.png"


def test_traffic_and_cpu_are_turned_into_figures_per_request():
    from pktlb.reports.compare.lab_facts import cpu_us_per_request, traffic_per_request

    counts = {"packets_in": 30, "packets_out": 20, "bytes_in": 3000, "bytes_out": 1000, "new_flows": 9}
    assert traffic_per_request(counts, 10) == {"packets_in_per_request": 3.0, "packets_out_per_request": 2.0,
                                               "bytes_in_per_request": 300.0, "bytes_out_per_request": 100.0}
    assert set(traffic_per_request(counts, 0).values()) == {None}
    assert cpu_us_per_request(1.0, 1.5, 1000) == 500.0
    assert cpu_us_per_request(None, 1.5, 1000) is None and cpu_us_per_request(1.0, 1.5, 0) is None
