"""`pktlb replay`: pcap in, decisions out (text and JSON lines), emitted frames in a pcap scapy reads."""

from __future__ import annotations

import json

from click.testing import CliRunner
from scapy.layers.inet import IP
from scapy.utils import rdpcap, wrpcap

from pktlb.cli import main
from tests.frames import CLIENT, assert_checksums, client_frame, config_text, tcp


def test_replay_writes_decisions_and_a_readable_pcap(tmp_path):
    cfg = tmp_path / "nat.toml"
    cfg.write_text(config_text("nat"))
    src = tmp_path / "in.pcap"
    wrpcap(str(src), [bytes(client_frame(tcp(sport=40000 + i))) for i in range(5)] + [b"\x00" * 10])
    out = tmp_path / "out.pcap"
    result = CliRunner().invoke(main, ["replay", "-c", str(cfg), str(src), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["index"] for r in rows] == list(range(6))
    assert {"index", "verdict", "reason", "service", "backend", "mode"} <= set(rows[0])
    assert [r["verdict"] for r in rows] == ["forward"] * 5 + ["drop"]
    assert rows[-1]["reason"] == "truncated" and rows[0]["mode"] == "nat"
    written = rdpcap(str(out))
    assert len(written) == 5
    for pkt, row in zip(written, rows, strict=False):
        assert_checksums(bytes(pkt))
        assert pkt[IP].src == CLIENT and pkt[IP].dst.startswith("198.18.0.1")
        assert row["backend"] in ("be1", "be2", "be3")


def test_replay_bad_config_names_the_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(config_text("nat").replace('mode = "nat"', 'mode = "natt"', 1))
    src = tmp_path / "in.pcap"
    wrpcap(str(src), [bytes(client_frame(tcp()))])
    result = CliRunner().invoke(main, ["replay", "-c", str(cfg), str(src)])
    assert result.exit_code != 0
    assert "service[0].mode" in result.output and "'natt'" in result.output


def test_replay_refuses_a_file_that_is_not_pcap(tmp_path):
    cfg = tmp_path / "nat.toml"
    cfg.write_text(config_text("nat"))
    src = tmp_path / "in.pcap"
    src.write_bytes(b"\x0a\x0d\x0d\x0a" + b"\0" * 40)
    result = CliRunner().invoke(main, ["replay", "-c", str(cfg), str(src)])
    assert result.exit_code != 0 and "not a classic pcap" in result.output
