"""The pure parts of `pktlb bench` (no root, no lab; the multi-core steering: test_fanout_program.py)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from click.testing import CliRunner
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pktlb.core.config import parse_config
from pktlb.core.datapath import DataPath
from pktlb.core.engine.steps import pick_backend
from pktlb.reports.bench import benchgen, profile
from pktlb.reports.bench import lab as bench_lab
from pktlb.reports.bench import memory as bench_memory
from pktlb.reports.bench.results import (
    NFT_DSR,
    NFTABLES,
    ROUTING,
    SCAPY,
    BenchReport,
    Latency,
    Target,
    VariantResult,
    kernel_baseline,
    percentile,
    ratios,
    render_table,
    render_text,
    targets,
)
from pktlb.reports.bench.variants import PktlbVariant, bench_config_text, dnat_ruleset

# ---------------------------------------------------------------- results, ratios, targets


def result(name: str, kind: str, mode: str | None, delivered: int, seconds: float, cpu: float) -> VariantResult:
    return VariantResult(name, kind, mode, sent=delivered, delivered=delivered, seconds=seconds,
                         send_seconds=seconds, lb_cpu_seconds=cpu)


def sample_results() -> list[VariantResult]:
    return [result("pktlb nat", "pktlb", "nat", 100_000, 1.0, 0.5), result("pktlb dsr", "pktlb", "dsr", 150_000, 1.0, 0.4),
            result(ROUTING, "baseline", None, 250_000, 1.0, 0.4), result(NFTABLES, "baseline", None, 200_000, 1.0, 0.5),
            result(SCAPY, "reference", None, 3_000, 1.0, 0.8)]


def test_percentile_interpolates_between_ranks():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5
    assert percentile(list(range(101)), 99) == 99
    assert math.isnan(percentile([], 50))
    lat = Latency.from_samples([100, 110, 120], [60, 70, 80], failures=1)
    assert (lat.added_p50_us, lat.failures) == (40, 1)


def test_ratios_are_taken_against_the_same_runs_baselines():
    by_name = {r.name: r for r in sample_results()}
    nat = by_name["pktlb nat"]
    assert (nat.pps, nat.cpu_us_per_packet, nat.loss) == (100_000, 5.0, 0.0)
    paced = result("pktlb nat", "pktlb", "nat", 100_000, 1.0, 0.5)
    paced.paced_cpu_us = 4.0  # a paced run's figure wins over the flood's
    assert (paced.cpu_us_per_packet, paced.flood_cpu_us_per_packet) == (4.0, 5.0)
    r = ratios(nat, by_name)
    assert r["pps_vs_nftables"] == pytest.approx(0.5)
    assert r["cpu_vs_nftables"] == pytest.approx(5.0 / 2.5)
    assert r["cpu_vs_routing"] == pytest.approx(5.0 / 1.6)
    assert r["pps_vs_scapy"] == pytest.approx(100_000 / 3_000)
    assert math.isnan(ratios(nat, {})["pps_vs_nftables"])


def test_targets_say_whether_met_and_by_how_much():
    found = {t.name: t for t in targets(sample_results(), {"modes": [{"mode": "nat", "speedup": {"2": 1.9}}]})}
    cpu_nat = found["nat: LB CPU per packet vs nftables DNAT"]
    assert not cpu_nat.met and cpu_nat.missed_by == pytest.approx(2.0 / 1.5)
    dsr_cpu = found["dsr: LB CPU per packet vs nftables DNAT"]
    assert dsr_cpu.value == pytest.approx((1e6 * 0.4 / 150_000) / 2.5) and dsr_cpu.met
    assert found["dsr: delivered pps vs nftables DNAT"].value == pytest.approx(0.75)
    assert found["nat: delivered pps vs the scapy forwarder"].missed_by == pytest.approx(50 / (100 / 3))
    assert found["nat: backlog drain, 2 workers vs 1"].met
    assert Target("x", 1.0, 1.5, True).missed_by == 1.0
    assert not Target("x", math.nan, 1.5, True).met


def test_dsr_rows_are_held_against_the_kernels_dsr_when_it_was_measured():
    rows = [*sample_results(), result(NFT_DSR, "baseline", "dsr", 300_000, 1.0, 0.3)]
    by_name = {r.name: r for r in rows}
    dsr = by_name["pktlb dsr"]
    assert kernel_baseline(dsr, by_name) == NFT_DSR and kernel_baseline(by_name["pktlb nat"], by_name) == NFTABLES
    assert kernel_baseline(dsr, {r.name: r for r in sample_results()}) == NFTABLES  # not measured: DNAT
    r = ratios(dsr, by_name)
    assert r["pps_vs_kernel"] == r["pps_vs_nftables_dsr"] == pytest.approx(0.5)
    assert r["cpu_vs_kernel"] == pytest.approx((1e6 * 0.4 / 150_000) / 1.0)
    assert r["pps_vs_nftables"] == pytest.approx(0.75)  # the DNAT ratio is still there
    found = {t.name: t for t in targets(rows)}
    assert found["dsr: LB CPU per packet vs nftables DSR"].limit == 1.2
    assert not found["dsr: LB CPU per packet vs nftables DSR"].met  # 2.67 us against 1.0 us
    assert found["dsr: delivered pps vs nftables DSR"].value == pytest.approx(0.5)
    assert "dsr: delivered pps vs nftables DNAT" not in found
    assert "nat: LB CPU per packet vs nftables DNAT" in found
    assert not [t for t in found if t.startswith(NFT_DSR)]  # baselines get no targets
    table = render_table(rows)
    assert "pps/kern" in table and NFT_DSR in table


def test_a_diagnostic_row_gets_pps_ratios_but_neither_cpu_ratios_nor_targets():
    rows = [*sample_results(), result("pktlb nat, rx on CPU 0", "diagnostic", "nat", 180_000, 1.0, 0.5)]
    by_name = {r.name: r for r in rows}
    r = ratios(by_name["pktlb nat, rx on CPU 0"], by_name)
    assert r["pps_vs_nftables"] == pytest.approx(0.9)
    assert math.isnan(r["cpu_vs_nftables"]) and math.isnan(r["cpu_vs_routing"])
    assert not any("rx on" in t.name for t in targets(rows))
    assert len(targets(rows)) == len(targets(sample_results()))


def test_report_renders_as_text_and_json_without_nan():
    report = BenchReport(machine={"cpus": 2, "cpu_model": "test", "kernel": "6.x", "python": "3.11"},
                         settings={"packets": 1000, "frame_bytes": 60, "flows": 64, "seconds": 1,
                                   "generator_cpu": 0, "lb_cpu": 1},
                         results=sample_results() + [result("pktlb tunnel", "pktlb", "tunnel", 0, 0.0, 0.1)])
    text = render_text(report)
    assert "pktlb nat" in text and "MISSED" in text and NFTABLES in text
    data = json.loads(json.dumps(report.as_dict(), allow_nan=False))
    tunnel = next(v for v in data["variants"] if v["name"] == "pktlb tunnel")
    assert tunnel["cpu_us_per_packet"] is None and tunnel["ratios"]["pps_vs_nftables"] == 0


# ---------------------------------------------------------------- lab helpers that are pure


def test_proc_and_nft_parsers():
    stat = "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 10 0 10 50 0 0 0 0 0 0\ncpu1 100 1 50 900 3 2 40 0 0 0\n"
    assert bench_lab.cpu_busy_seconds(1, stat) == pytest.approx((100 + 1 + 50 + 2 + 40) / bench_lab.CLK_TCK)
    spent = bench_lab.cpu_times(1, stat) - bench_lab.cpu_times(0, stat)
    assert (spent.user, spent.softirq) == pytest.approx((91 / bench_lab.CLK_TCK, 40 / bench_lab.CLK_TCK))
    with pytest.raises(bench_lab.BenchError):
        bench_lab.cpu_busy_seconds(5, stat)
    assert bench_lab.softnet_dropped(1, "0001 0000 0\n00ff 0010 0\n") == 16
    interrupts = "           CPU0       CPU1\n RES:   10   20   Rescheduling interrupts\n CAL:   30   40   Function call\n"
    assert bench_lab.ipis(1, interrupts) == {"reschedule": 20, "function_call": 40}
    nft = {"nftables": [{"metainfo": {}}, {"table": {"name": "t"}},
                        {"rule": {"expr": [{"match": {}}, {"counter": {"packets": 7, "bytes": 420}}, {"drop": None}]}},
                        {"rule": {"expr": [{"counter": {"packets": 5, "bytes": 300}}]}}]}
    assert bench_lab.parse_counters(json.dumps(nft)) == 12
    rules = bench_lab.count_ruleset("eth0", "198.18.0.11", "198.19.0.100", 5000)
    assert "ip daddr { 198.18.0.11, 198.19.0.100 } udp dport 5000 counter drop" in rules
    assert "ip daddr { 198.18.0.11, 198.19.0.100 } tcp dport 5000 counter drop" in rules  # the new-flow SYNs
    assert "ip daddr 198.18.0.11 ip protocol 4 @nh,232,8 { 6, 17 } @nh,336,16 5000 counter drop" in rules


@pytest.mark.parametrize("mode", ["nat", "fullnat", "tunnel", "dsr"])
def test_bench_config_adds_a_udp_service_the_engine_accepts(mode):
    lab_config = "\n".join(["[lb]", 'address = "198.18.0.2"', "[[service]]", 'name = "web"', 'vip = "198.19.0.100"',
                            "port = 80", f'mode = "{mode}"'] + (['snat_address = "198.18.0.3"'] if mode == "fullnat"
                                                               else []) + ["[[service.backend]]", 'address = "198.18.0.11"'])
    backends = [("be1", "198.18.0.11", "02:00:c6:12:00:0b"), ("be2", "198.18.0.12", "02:00:c6:12:00:0c")]
    config = parse_config(bench_config_text(lab_config, mode, "198.19.0.100", backends, "198.18.0.3", 20_000, 10.0))
    bench = next(s for s in config.services if s.name == "bench")
    assert (bench.protocol, bench.port, bench.mode, len(bench.backends)) == ("udp", 5000, mode, 2)
    syn = next(s for s in config.services if s.name == "bench-syn")  # the new-flow flood's SYNs
    assert (syn.protocol, syn.port, syn.mode, len(syn.backends)) == ("tcp", 5000, mode, 2)
    assert config.flows.max_entries == 20_000 and config.flows.udp_timeout == 10.0
    assert bench.backends[1].mac == "02:00:c6:12:00:0c"


def test_dnat_ruleset_maps_both_protocols_over_every_backend():
    rules = dnat_ruleset("198.19.0.100", ["198.18.0.11", "198.18.0.12"], 5000, 80)
    assert "udp dport 5000 dnat to jhash ip saddr . udp sport mod 2 map { 0 : 198.18.0.11, 1 : 198.18.0.12 }" in rules
    assert "tcp dport 80 dnat to jhash ip saddr . tcp sport mod 2" in rules


# ---------------------------------------------------------------- generator, profile, memory


def test_generator_frames_are_64_bytes_on_the_wire_with_valid_checksums():
    frames = benchgen.flow_frames("02:00:c6:12:01:64", "02:00:c6:12:01:01", "198.18.1.100", "198.19.0.100", 5000,
                                  flows=64, sources=16)
    assert len(frames) == 64 and all(len(f) == benchgen.FRAME_BYTES for f in frames)
    flows = set()
    for raw in frames:
        packet = Ether(raw)
        rebuilt = Ether(bytes(packet))
        del rebuilt[IP].chksum, rebuilt[UDP].chksum
        rebuilt = Ether(bytes(rebuilt))
        assert (packet[IP].chksum, packet[UDP].chksum) == (rebuilt[IP].chksum, rebuilt[UDP].chksum)
        assert packet[UDP].dport == 5000 and packet.dst == "02:00:c6:12:01:01"
        flows.add((packet[IP].src, packet[UDP].sport))
    assert len(flows) == 64 and len({src for src, _ in flows}) == 16


def test_parse_classify_mirror_agrees_with_the_engine():
    dp = DataPath(profile.profile_config("nat"))
    frame = profile.client_frames(1, 1)[0]
    wrong_port = bytearray(frame)
    svc, key, l4, csum_off = profile.parse_classify(bytearray(frame), dp.snapshot)
    _, decision = dp.handle(frame, 1.0)
    assert (decision.service, decision.flow_key, l4, csum_off) == (svc.name, key, 34, 40)
    assert pick_backend(svc, dp.flows, key, dp.snapshot.seed).name == decision.backend  # what the profile times
    wrong_port[36:38] = (9).to_bytes(2, "big")
    assert profile.parse_classify(wrong_port, dp.snapshot)[0] is None


def test_stage_breakdown_runs_and_renders_beside_the_published_budget():
    costs = profile.stage_costs("fullnat", iterations=300, repeats=1)
    assert set(costs["stages_ns"]) == {"frame copy", "parse + classify", "flow lookup (hit)", "schedule (miss)",
                                       "flow insert (miss)", "rewrite", "decision + stats"}
    assert costs["whole_packet_ns"]["hit"] > 0 and "maglev" in costs["schedulers_ns"]
    text = profile.render_profile({"stages": [costs]})
    assert "fullnat:" in text and "Maglev (NSDI 2016)" in text and "350 ns" in text


def test_flow_entries_cost_bytes_and_rss_summary_finds_growth():
    small = bench_memory.entry_bytes("nat", 2_000)
    assert small["entries"] == 2_000 and 100 < small["bytes_per_entry"] < 5_000
    flat = bench_memory.summarise_rss([(0.0, 1000), (5.0, 1900), (15.0, 2000), (60.0, 2004)])
    assert flat["growth_after_warmup_kib"] == 4 and flat["rss_kib_max"] == 2004
    leak = bench_memory.summarise_rss([(15.0, 2000), (45.0, 5000)])
    assert leak["growth_kib_per_minute"] == pytest.approx(6000)


# ---------------------------------------------------------------- the command line


def test_bench_cli_help_and_option_checks():
    from pktlb.cli import main

    runner = CliRunner()
    assert runner.invoke(main, ["bench", "--help"]).exit_code == 0
    bad_mode = runner.invoke(main, ["bench", "--modes", "nat,ipvs"])
    assert bad_mode.exit_code == 2 and "ipvs" in bad_mode.output
    bad_workers = runner.invoke(main, ["bench", "--workers", "1,x"])
    assert bad_workers.exit_code == 2


# ---------------------------------------------------------------- new flows and the fast path's rows


def test_syn_frames_are_new_flows_of_64_bytes_with_valid_checksums():
    from scapy.layers.inet import IP
    from scapy.layers.l2 import Ether

    frames = benchgen.syn_frames("02:00:c6:12:01:64", "02:00:c6:12:01:01", "198.18.1.100", "198.19.0.100", 5000,
                                 flows=1024, first_sport=1024, sources=128)
    assert len(frames) == 1024 and all(len(f) == benchgen.FRAME_BYTES for f in frames)
    assert len({f[26:38] for f in frames}) == 1024  # every (source, destination, ports) different: all new
    pkt = Ether(frames[129])
    assert (pkt[IP].src, pkt[TCP].sport, str(pkt[TCP].flags), pkt[TCP].dport) == ("198.18.1.101", 1025, "S", 5000)
    fresh = Ether(frames[129])
    del fresh[IP].chksum, fresh[TCP].chksum
    fresh = Ether(bytes(fresh))
    assert (fresh[IP].chksum, fresh[TCP].chksum) == (pkt[IP].chksum, pkt[TCP].chksum)
    with pytest.raises(ValueError, match="source ports"):
        benchgen.syn_frames("02:00:00:00:00:01", "02:00:00:00:00:02", "198.18.1.100", "198.19.0.100", 80,
                            flows=65536, first_sport=65000, sources=1)


def test_fast_path_rows_get_their_own_targets_and_the_loss_target_needs_a_lossless_kernel():
    rows = [*sample_results(), result("pktlb nat, fastpath xdp", "pktlb", "nat", 190_000, 1.0, 0.5)]
    rows[0].sent = 200_000  # the plain engine lost half
    found = {t.name: t for t in targets(rows)}
    assert found["nat, fastpath xdp: delivered pps vs nftables DNAT"].met  # 0.95
    cpu = found["nat, fastpath xdp: LB CPU per packet vs nftables DNAT"]
    assert cpu.met and cpu.value == pytest.approx((1e6 * 0.5 / 190_000) / 2.5)
    assert found["nat, fastpath xdp: loss where nftables DNAT lost none"].met
    assert not found["nat: loss where nftables DNAT lost none"].met
    lossy = [*rows]
    lossy[3] = result(NFTABLES, "baseline", None, 200_000, 1.0, 0.5)
    lossy[3].sent = 300_000
    assert not [t for t in targets(lossy) if "loss" in t.name]  # the kernel lost too: no such target
    rows[-1].new_flow_pps = 12_345.0
    assert "12,345" in render_table(rows) and "new flows/s" in render_table(rows)


def test_the_fastpath_option_and_which_rows_it_asks_for(monkeypatch):
    from pktlb.core import config as core_config
    from pktlb.lab import fastpath

    assert fastpath.parse_hooks("auto") is None and fastpath.parse_hooks(None) is None
    assert fastpath.parse_hooks("off") == [] and fastpath.parse_hooks("xdp, tc") == ["xdp", "tc"]
    with pytest.raises(ValueError, match="expected auto, off"):
        fastpath.parse_hooks("xdp,bogus")
    assert fastpath.hooks_to_measure(["xdp"]) == ["xdp"] and fastpath.hooks_to_measure([]) == []
    monkeypatch.setattr(fastpath, "fastpath_hooks", lambda: ())
    assert fastpath.hooks_to_measure(None) == []  # auto without a fast path: no extra rows
    assert "no kernel fast path" in fastpath.missing_reason("xdp") and fastpath.missing_reason("off") is None
    monkeypatch.setattr(fastpath, "fastpath_hooks", lambda: ("xdp", "tc"))
    assert fastpath.hooks_to_measure(None) == ["xdp"] and fastpath.missing_reason("tc") is None
    assert "unknown" in fastpath.missing_reason("ebpf")
    monkeypatch.undo()
    has_it = any(f.name == "fastpath" for f in dataclasses.fields(core_config.LbConfig))
    assert bool(fastpath.fastpath_hooks()) == has_it


def test_the_engine_row_runs_pktlb_run_with_the_fast_path_asked_for():
    plain, fast = PktlbVariant("dsr"), PktlbVariant("dsr", fastpath="tc")
    assert (plain.label, fast.label) == ("pktlb dsr", "pktlb dsr, fastpath tc")
    assert plain.new_flows and fast.kind == "pktlb"


def test_fast_path_counters_of_one_flood_are_the_differences_that_are_not_zero():
    from pktlb.reports.bench.run import counter_delta

    before = {"forwarded": {"inbound": 10}, "punts": {"syn": 2}}
    after = {"forwarded": {"inbound": 15, "new_flow": 3}, "punts": {"syn": 2, "unknown_flow": 1}}
    assert counter_delta(before, after) == {"forwarded": {"inbound": 5, "new_flow": 3}, "punts": {"unknown_flow": 1}}
    assert counter_delta(None, after) is None and counter_delta(before, None) is None


def test_napi_threads_are_found_by_the_interface_name_in_their_15_character_name(tmp_path):
    for pid, comm in ((11, "napi/eth0-567"), (12, "napi/eth0-568"), (13, "napi/sw-lb-eth0"), (14, "python3")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
    (tmp_path / "stat").write_text("")
    assert sorted(bench_lab.napi_threads("eth0", tmp_path)) == [11, 12]
    assert bench_lab.napi_threads("sw-lb-eth0-long", tmp_path) == [13]  # the name cut at 15 characters


def test_bench_config_asks_the_engine_for_generic_xdp_in_its_lb_table():
    lab_config = "\n".join(["[lb]", 'address = "198.18.0.2"', "[[service]]", 'name = "web"', 'vip = "198.19.0.100"',
                            "port = 80", 'mode = "nat"', "[[service.backend]]", 'address = "198.18.0.11"'])
    backends = [("be1", "198.18.0.11", "02:00:c6:12:00:0b")]
    assert parse_config(bench_config_text(lab_config, "nat", "198.19.0.100", backends, None)).lb.xdp_mode == "native"
    config = parse_config(bench_config_text(lab_config, "nat", "198.19.0.100", backends, None, xdp_mode="generic"))
    assert config.lb.xdp_mode == "generic" and config.lb.address == "198.18.0.2"
    with pytest.raises(ValueError, match="xdp_mode"):
        parse_config(lab_config.replace("[lb]", '[lb]\nxdp_mode = "offload"'))


def test_a_missed_pps_target_says_when_neither_row_lost_frames_and_the_generator_set_both_rates():
    rows = [*sample_results(), result("pktlb nat, fastpath xdp", "pktlb", "nat", 150_000, 1.0, 0.3)]
    found = {t.name: t for t in targets(rows)}
    fast = found["nat, fastpath xdp: delivered pps vs nftables DNAT"]
    assert not fast.met and "neither lost frames" in fast.note and "150,000 vs 200,000" in fast.note
    assert fast.as_dict()["note"] == fast.note
    rows[-1].sent = 300_000  # it lost half: its own limit, no note
    lossy = {t.name: t for t in targets(rows)}["nat, fastpath xdp: delivered pps vs nftables DNAT"]
    assert lossy.note == "" and lossy.as_dict()["note"] is None
    report = BenchReport(machine={}, settings={"packets": 1, "frame_bytes": 60, "flows": 1, "seconds": 1},
                         results=rows[:-1] + [result("pktlb nat, fastpath xdp", "pktlb", "nat", 150_000, 1.0, 0.3)])
    assert "MISSED by 1.07x (neither lost frames" in render_text(report)
