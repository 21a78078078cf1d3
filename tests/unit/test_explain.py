"""`pktlb explain`: the right service and backend, the fields each mode must change, checksum
arithmetic that agrees with scapy, the return packet in the NAT modes, drops with their reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from pktlb.adapters.configfile import load_config
from pktlb.cli import main
from pktlb.core.config import parse_config
from pktlb.core.datapath import DataPath
from pktlb.lab.addressing import lab_macs
from pktlb.reports.explain.checksum_steps import (
    ChecksumStep,
    WordChange,
    apply_update,
    ip_header_step,
    l4_step,
)
from pktlb.reports.explain.inputs import FrameSpec, build_frame
from pktlb.reports.explain.run import explain
from tests.frames import BACKENDS, CLIENT, SNAT, VIP, client_frame, config_text, tcp

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SYN = ["--tcp", f"{CLIENT}:40000", f"{VIP}:80", "--flags", "S"]


def run(*args: str) -> dict:
    result = CliRunner().invoke(main, ["explain", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def changed(report: dict) -> dict[tuple[str, str], tuple[str, str]]:
    return {(r["layer"], r["field"]): (r["before"], r["after"]) for r in report["diff"] if r["changed"]}


def engine_pick(config_path: Path, frame: bytes) -> str:
    """What an independent DataPath, fed the same frame, does: explain must report exactly that."""
    config = load_config(str(config_path))
    _, dec = DataPath(config, macs=lab_macs(config)).handle(bytearray(frame), 0.0)
    return dec.backend


def assert_checksums_agree(report: dict) -> None:
    assert report["checksums"], "expected checksum steps"
    for step in report["checksums"]:
        assert step["incremental"] == step["scapy"] == step["new"], step
        assert step["agrees"] is True
        if step["engine_delta"] is not None:
            assert step["engine_delta"]["matches"] is True, step


@pytest.mark.parametrize("mode", ["nat", "fullnat", "tunnel", "dsr"])
def test_syn_names_service_and_the_backend_the_data_path_picks(mode):
    config = EXAMPLES / f"{mode}.toml"
    report = run("-c", str(config), *SYN)
    dec = report["decision"]
    assert (dec["verdict"], dec["reason"], dec["service"], dec["mode"]) == ("forward", "inbound", "web", mode)
    assert dec["flow_hit"] is False
    frame = bytes.fromhex(report["input"]["hex"])
    assert dec["backend"] == engine_pick(config, frame)
    assert [s["step"] for s in report["steps"]] == ["parse", "classify", "flow table", "scheduler", "rewrite", "emit"]
    sched = report["scheduler"]
    assert sched["explain"].startswith("maglev: hash ") and sched["explain"].endswith(f"-> {dec['backend']}")
    assert " -> slot " in sched["explain"] and "of 65537" in sched["explain"]


def test_nat_changes_dst_ttl_checksums_and_the_port_when_it_differs(tmp_path):
    cfg = tmp_path / "nat8080.toml"
    cfg.write_text(config_text("nat").replace("port = 80\n", "port = 8080\n")
                   .replace("port = 8080\nmode", "port = 80\nmode"))  # backends on 8080, the service on 80
    report = run("-c", str(cfg), *SYN)
    rows = changed(report)
    backend = BACKENDS[report["decision"]["backend"]]
    assert rows[("IP", "dst")] == (VIP, backend)
    assert rows[("IP", "ttl")] == ("64", "63")
    assert rows[("TCP", "dport")] == ("80 (http)", "8080 (http_alt)")
    assert ("IP", "chksum") in rows and ("TCP", "chksum") in rows
    assert ("IP", "src") not in rows and ("TCP", "sport") not in rows
    assert_checksums_agree(report)
    words = {w["word"] for s in report["checksums"] for w in s["changed_words"]}
    assert {"TTL/protocol", "destination address (low)", "destination port"} <= words


def test_nat_same_port_leaves_dport_alone():
    rows = changed(run("-c", str(EXAMPLES / "nat.toml"), *SYN))
    assert ("TCP", "dport") not in rows and ("IP", "dst") in rows


def test_dsr_changes_only_the_macs():
    report = run("-c", str(EXAMPLES / "dsr.toml"), *SYN)
    assert set(changed(report)) == {("Ether", "dst"), ("Ether", "src")}
    assert report["checksums"] == [] and "no checksum changed" in report["checksum_notes"][0]
    assert report["return"] is None and "bypass" in report["return_note"]


def test_tunnel_adds_an_outer_header_and_leaves_the_inner_packet():
    report = run("-c", str(EXAMPLES / "tunnel.toml"), *SYN)
    rows = changed(report)
    outer = {f: after for (layer, f), (before, after) in rows.items() if layer == "IP (outer)"}
    assert all(rows[("IP (outer)", f)][0] == "-" for f in outer)
    assert outer["proto"] == "4 (ipencap)" and outer["dst"] == BACKENDS[report["decision"]["backend"]]
    assert outer["src"] == "198.18.0.2"
    assert not any(layer in ("IP", "TCP") for layer, _ in rows)  # the inner packet is untouched
    tunnel = report["tunnel"]
    assert tunnel["overhead"] == 20 and tunnel["outer_length"] == tunnel["inner_length"] + 20 and tunnel["fits"]
    assert tunnel["outer_checksum"]["agrees"] is True
    assert report["return"] is None and "bypass" in report["return_note"]


def test_tunnel_too_big_with_df_answers_frag_needed_with_the_mtu():
    report = run("-c", str(EXAMPLES / "tunnel.toml"), *SYN[:-2], "--flags", "A", "--payload-size", "1460")
    assert report["decision"]["reason"] == "frag_needed_icmp_sent"
    assert report["tunnel"]["fits"] is False and report["tunnel"]["mtu"] == 1500
    icmp = next(la["fields"] for la in report["emitted"][0]["layers"] if la["layer"] == "ICMP")
    assert icmp["nexthopmtu"] == "1480" and icmp["code"].startswith("4 ")


def test_fullnat_changes_source_too_and_the_reply_is_reversed():
    report = run("-c", str(EXAMPLES / "fullnat.toml"), *SYN)
    rows = changed(report)
    assert rows[("IP", "src")] == (CLIENT, SNAT)
    assert rows[("TCP", "sport")][0] == "40000" and rows[("TCP", "sport")][1] != "40000"
    assert rows[("IP", "dst")][1] == BACKENDS[report["decision"]["backend"]]
    assert_checksums_agree(report)
    back = report["return"]
    assert back["decision"]["reason"] == "outbound" and back["decision"]["backend"] == report["decision"]["backend"]
    back_rows = changed(back)
    assert back_rows[("IP", "src")][1] == VIP and back_rows[("IP", "dst")] == (SNAT, CLIENT)
    assert back_rows[("TCP", "dport")][1] == "40000"
    assert Ether(bytes.fromhex(back["input"]["hex"]))[TCP].flags == "SA"
    assert_checksums_agree(back)


def test_nat_return_packet_is_rewritten_back_to_the_vip():
    report = run("-c", str(EXAMPLES / "nat.toml"), *SYN)
    back = report["return"]
    assert back["decision"]["verdict"] == "forward" and back["decision"]["reason"] == "outbound"
    assert changed(back)[("IP", "src")] == (BACKENDS[report["decision"]["backend"]], VIP)
    assert_checksums_agree(back)
    assert run("-c", str(EXAMPLES / "nat.toml"), *SYN, "--no-return")["return"] is None


def test_drop_to_a_wrong_port_explains_the_reason():
    result = CliRunner().invoke(main, ["explain", "-c", str(EXAMPLES / "nat.toml"), "--tcp", f"{CLIENT}:40000",
                                       f"{VIP}:81"])
    assert result.exit_code == 0, result.output
    assert "DROP no_service" in result.output and "no service listens on tcp port 81" in result.output
    report = run("-c", str(EXAMPLES / "nat.toml"), "--tcp", f"{CLIENT}:40000", f"{VIP}:81")
    assert report["decision"]["reason"] == "no_service"
    assert [(s["step"], s["ok"]) for s in report["steps"]] == [("parse", True), ("classify", False)]
    assert report["return"] is None and report["diff"] == []


def test_after_shows_a_flow_table_hit():
    report = run("-c", str(EXAMPLES / "nat.toml"), *SYN[:-2], "--flags", "A", "--after", "1")
    assert len(report["warmup"]) == 1 and report["decision"]["flow_hit"] is True
    step = {s["step"]: s["text"] for s in report["steps"]}
    assert "HIT" in step["flow table"][0] and step["scheduler"][0].startswith("not consulted")


def test_round_robin_explanation_matches_the_engine_pick(tmp_path):
    cfg = tmp_path / "rr.toml"
    cfg.write_text(config_text("nat", scheduler="rr"))
    config = parse_config(cfg.read_text())
    dp = DataPath(config, macs=lab_macs(config))
    picks = []
    for port in (40000, 40001, 40002, 40003):  # rr advances on every pick: explain must not steal one
        frame = build_frame(FrameSpec("tcp", CLIENT, VIP, port, 80), dp.snapshot)
        exp = explain(dp, frame, source="t", config_label="t")
        picks.append(exp.packet.decision["backend"])
        assert exp.packet.scheduler["explain"].endswith(f"-> {picks[-1]}")
    assert picks == ["be1", "be2", "be3", "be1"]


def test_icmp_echo_and_an_icmp_error_relayed_by_its_quote():
    echo = run("-c", str(EXAMPLES / "nat.toml"), "--icmp", CLIENT, VIP)
    assert echo["decision"]["reason"] == "echo_reply"
    assert changed(echo)[("ICMP", "type")] == ("8 (echo-request)", "0 (echo-reply)")
    assert_checksums_agree(echo)
    error = run("-c", str(EXAMPLES / "nat.toml"), "--icmp", CLIENT, VIP, "--type", "3", "--code", "4")
    assert error["decision"]["reason"] == "icmp_error_to_backend" and error["warmup"]
    rows = changed(error)
    assert rows[("IP", "dst")][1] == rows[("IP in ICMP", "src")][1] == BACKENDS[error["decision"]["backend"]]
    assert_checksums_agree(error)


def test_mode_override_and_pcap_input_with_warm_flows(tmp_path):
    pcap = tmp_path / "in.pcap"
    wrpcap(str(pcap), [bytes(client_frame(tcp(flags="S"))), bytes(client_frame(tcp(flags="A")))])
    report = run("-c", str(EXAMPLES / "nat.toml"), "--mode", "fullnat", "--pcap", str(pcap), "--index", "1",
                 "--flows-from", str(pcap))
    assert report["decision"]["mode"] == "fullnat" and report["decision"]["flow_hit"] is True
    assert len(report["warmup"]) == 1 and any("snat_address" in n for n in report["notes"])
    dsr = run("-c", str(EXAMPLES / "nat.toml"), "--mode", "dsr", "--udp", f"{CLIENT}:5000", f"{VIP}:53")
    assert set(changed(dsr)) == {("Ether", "dst"), ("Ether", "src")}
    assert any("backend ports set to 53" in n for n in dsr["notes"])


def test_lab_reads_the_lab_config(tmp_path, monkeypatch):
    monkeypatch.setenv("PKTLB_STATE_ROOT", str(tmp_path))
    missing = CliRunner().invoke(main, ["explain", "--lab", "--prefix", "t-", *SYN])
    assert missing.exit_code != 0 and "no lab config" in missing.output
    (tmp_path / "t-").mkdir()
    text = (EXAMPLES / "tunnel.toml").read_text().replace("/run/pktlb/pktlb.sock", str(tmp_path / "none.sock"))
    (tmp_path / "t-" / "pktlb.toml").write_text(text)
    report = run("--lab", "--prefix", "t-", *SYN)
    assert report["decision"]["mode"] == "tunnel" and "every backend assumed up" in report["notes"][0]


def test_text_output_and_usage_errors():
    result = CliRunner().invoke(main, ["explain", "-c", str(EXAMPLES / "nat.toml"), *SYN])
    assert result.exit_code == 0, result.output
    assert "scapy agrees" in result.output and "MISMATCH" not in result.output
    assert "== return: the backend's SYN-ACK as it reaches the LB ==" in result.output
    for args in ([], [*SYN, "--udp", f"{CLIENT}:1", f"{VIP}:53"], ["--lab", *SYN], ["--pcap", "x"],
                 [*SYN[:-2], "--flags", "Z"], ["--tcp", CLIENT, f"{VIP}:80"]):
        bad = CliRunner().invoke(main, ["explain", "-c", str(EXAMPLES / "nat.toml"), *args])
        assert bad.exit_code == 2, (args, bad.output)
    assert CliRunner().invoke(main, ["explain", "--help"]).exit_code == 0


def test_rfc1624_arithmetic_and_a_wrong_checksum_is_caught():
    step = ChecksumStep("x", 0xDD2F, 0, [WordChange("w", 0x5555, 0x3285)])  # RFC 1624 section 4 example
    apply_update(step)
    assert step.incremental == 0x0000
    before = bytes(client_frame(tcp()))
    after = bytearray(before)
    after[30:34] = bytes([198, 18, 0, 11])  # dst changed, checksums left stale
    ip = ip_header_step(before, bytes(after), 14, 14)
    assert ip.incremental == ip.scapy and not ip.agrees  # the stale field is caught
    pkt = Ether(bytes(after))
    del pkt[IP].chksum, pkt[TCP].chksum
    fixed = bytes(Ether(bytes(pkt)))
    assert ip_header_step(before, fixed, 14, 14).agrees and l4_step(before, fixed, 14, 14).agrees


def test_pcapng_input(tmp_path):
    """The frame and the warm-up flows can come from a pcapng file (Wireshark's default format)."""
    from scapy.utils import wrpcapng

    pcapng = tmp_path / "in.pcapng"
    wrpcapng(str(pcapng), [Ether(bytes(client_frame(tcp(flags="S")))), Ether(bytes(client_frame(tcp(flags="A"))))])
    report = run("-c", str(EXAMPLES / "nat.toml"), "--pcap", str(pcapng), "--index", "1", "--flows-from", str(pcapng))
    assert report["decision"]["flow_hit"] is True and len(report["warmup"]) == 1
    assert report["decision"]["backend"] == engine_pick(EXAMPLES / "nat.toml", bytes(client_frame(tcp(flags="A"))))
