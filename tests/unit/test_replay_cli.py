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


def test_replay_reads_pcapng_like_pcap(tmp_path):
    """Wireshark saves pcapng by default: the same frames in either format give the same decisions,
    and the pcapng timestamps (a 64-bit count of microseconds) are the frames' own."""
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcapng

    from pktlb.adapters.pcap import read_pcap

    cfg = tmp_path / "nat.toml"
    cfg.write_text(config_text("nat"))
    frames = [Ether(bytes(client_frame(tcp(sport=41000 + i)))) for i in range(4)] + [Ether(b"\x00" * 14)]
    for i, frame in enumerate(frames):
        frame.time = 1_700_000_000.25 + i
    classic, ng = tmp_path / "in.pcap", tmp_path / "in.pcapng"
    wrpcap(str(classic), frames)
    wrpcapng(str(ng), frames)
    assert ng.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"  # a section header block: really pcapng
    assert [(round(ts, 6), bytes(f)) for ts, f in read_pcap(str(ng))] == \
        [(1_700_000_000.25 + i, bytes(f)) for i, f in enumerate(frames)]
    runs = [CliRunner().invoke(main, ["replay", "-c", str(cfg), str(path), "--json"]) for path in (classic, ng)]
    assert all(r.exit_code == 0 for r in runs), [r.output for r in runs]
    rows = [[json.loads(line) for line in r.output.splitlines()] for r in runs]
    assert rows[0] == rows[1] and [r["verdict"] for r in rows[1]] == ["forward"] * 4 + ["drop"]


def test_replay_refuses_a_capture_that_is_not_ethernet(tmp_path):
    from scapy.layers.inet import IP as IPLayer
    from scapy.utils import wrpcapng

    cfg = tmp_path / "nat.toml"
    cfg.write_text(config_text("nat"))
    src = tmp_path / "raw-ip.pcapng"
    wrpcapng(str(src), [IPLayer(dst="198.19.0.100")])  # a raw-IP link type: no Ethernet header
    result = CliRunner().invoke(main, ["replay", "-c", str(cfg), str(src)])
    assert result.exit_code != 0 and "link type" in result.output and "Ethernet (1)" in result.output
