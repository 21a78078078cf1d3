"""End to end through the pktlb engine in every mode, with real clients (curl, ping) in the lab."""

from __future__ import annotations

import json
import time

import pytest

from pktlb.lab.httpd import expected_sha256
from tests.lab import fault_helpers as fh
from tests.lab.engine_helpers import ask, backend_counters, predicted_backend, wait_engine

pytestmark = [pytest.mark.lab, pytest.mark.timeout(180)]
MODES = ["nat", "fullnat", "tunnel", "dsr"]
SNAT = "198.18.0.3"


@pytest.mark.parametrize("mode", MODES)
def test_real_traffic_through_the_engine(lab_factory, mode):
    lab = lab_factory(mode, engine="pktlb")
    wait_engine(lab)

    # Many connections from many source addresses: each lands where the scheduler says.
    seen = {}
    for i in range(24):
        src, sport = f"198.18.1.{100 + i}", 41000 + i
        done = lab.run("client", ["curl", "-sS", "--max-time", "5", "--interface", src, "--local-port", str(sport),
                                  f"http://{lab.vip}/"])
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["backend"] == predicted_backend(lab, src, sport), (src, sport, answer)
        if mode == "fullnat":
            assert answer["client"] == SNAT
        else:
            assert (answer["client"], answer["client_port"]) == (src, sport)
        seen[answer["backend"]] = seen.get(answer["backend"], 0) + 1
    assert set(seen) == {b.name for b in lab.backends()}, seen



@pytest.mark.parametrize("mode", MODES)
def test_download_integrity_ping_and_where_replies_go(lab_factory, mode):
    lab = lab_factory(mode, engine="pktlb")
    wait_engine(lab)
    n = 10 * 1024 * 1024
    digest = lab.run("client", ["sh", "-c", f"curl -sS --max-time 30 http://{lab.vip}/bytes?n={n} | sha256sum"],
                     timeout=40)
    assert digest.stdout.split()[0] == expected_sha256(n), digest.stderr

    ping = lab.run("client", ["ping", "-c", "3", "-i", "0.2", "-W", "1", lab.vip])
    assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout

    stats = ask(lab, {"cmd": "stats"})
    counters = backend_counters(stats)
    replies = sum(be["packets_out"] for be in counters.values())
    requests = sum(be["packets_in"] for be in counters.values())
    assert requests > 100
    if mode in ("dsr", "tunnel"):
        assert replies == 0, "replies must bypass the LB"
    else:
        assert replies > 7000, "a 10 MB download's segments come back through the LB"
    assert stats["totals"]["replied"] >= 3  # the echo replies came from the LB
    assert stats["port"]["rx_truncated"] == 0


@pytest.mark.parametrize("mode", ["nat", "dsr"])
def test_a_long_transfer_keeps_its_backend_while_backends_are_added(lab_factory, mode):
    lab = lab_factory(mode, engine="pktlb")
    wait_engine(lab)
    for name in ("be2", "be3"):
        ask(lab, {"cmd": "backend", "action": "remove", "service": "web", "backend": name})
    n = 4 * 1024 * 1024
    # Paced reads through a small receive window: the transfer really lasts ~n / rate seconds.
    download = fh.start_in_node(lab, "client", "download", "--vip", lab.vip, "--n", str(n), "--rate", "800000")
    try:
        flows = _await_flow(lab)
        assert flows[0]["backend"] == "be1"
        for name, address in (("be2", "198.18.0.12"), ("be3", "198.18.0.13")):
            change = ask(lab, {"cmd": "backend", "action": "add", "service": "web", "backend": name,
                               "address": address, "port": 80})
            assert change["ring_moved"]["web"] > 0
        after = [f for f in ask(lab, {"cmd": "flows"})["flows"] if f["client"] == flows[0]["client"]]
        assert after and after[0]["backend"] == "be1"
        result = json.loads(fh.finish(download, 40))
    finally:
        fh.stop(download)
    assert result["seconds"] > 2, "the transfer must still be running while backends are added"
    assert (result["bytes"], result["sha256"], result["error"]) == (n, expected_sha256(n), "")
    # New connections go where the rebuilt table says, the added backends included.
    backends = set()
    for i in range(30):
        src, sport = f"198.18.1.{110 + i}", 43000 + i
        done = lab.run("client", ["curl", "-sS", "--max-time", "5", "--interface", src, "--local-port", str(sport),
                                  f"http://{lab.vip}/"])
        assert json.loads(done.stdout)["backend"] == predicted_backend(lab, src, sport)
        backends.add(json.loads(done.stdout)["backend"])
    assert backends == {"be1", "be2", "be3"}


def _await_flow(lab, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        flows = [f for f in ask(lab, {"cmd": "flows"})["flows"] if f["state"] == "est"]
        if flows:
            return flows
        time.sleep(0.05)
    raise AssertionError("the download's flow never appeared in the engine's flow table")


@pytest.mark.parametrize("mode", MODES)
def test_uploads_and_iperf3_through_every_mode(lab_factory, mode):
    """Client-to-backend bulk data: full-size packets toward the LB.  In tunnel mode they do not fit
    with 20 more bytes, so the engine answers fragmentation-needed and path MTU discovery adapts."""
    lab = lab_factory(mode, engine="pktlb")
    wait_engine(lab)
    _upload_intact(lab, 10 * 1024 * 1024)
    iperf = lab.run("client", ["iperf3", "-c", lab.vip, "-p", "5201", "-n", "20M", "-J"], timeout=40)
    assert iperf.returncode == 0, iperf.stdout[-500:] + iperf.stderr
    result = json.loads(iperf.stdout)
    assert result["end"]["sum_sent"]["bytes"] >= 20 * 1024 * 1024
    # iperf3's server summary may stop its clock a little before the last segments: most must be in.
    assert result["end"]["sum_received"]["bytes"] >= 0.8 * 20 * 1024 * 1024
    stats = ask(lab, {"cmd": "stats"})
    if mode == "tunnel":
        assert stats["totals"]["replied"] >= 1  # fragmentation-needed sent to the client at least once
        assert not stats["totals"]["drops"].get("too_big")


def test_tunnel_mode_cuts_the_clients_tso_super_frames_itself(lab_factory):
    """With TSO on at the client, uploads reach the LB as GSO super-frames of up to 64 KiB; the
    engine cuts each into segments (and answers frag-needed until they fit the tunnel)."""
    lab = lab_factory("tunnel", engine="pktlb")
    for node, ifname in (("client", "eth0"), ("router", "eth1"), ("router", "eth0")):  # every hop keeps them whole
        lab.run(node, ["ethtool", "-K", ifname, "tx", "on", "tso", "on", "gso", "on"], check=True)
    wait_engine(lab)
    _upload_intact(lab, 10 * 1024 * 1024)
    stats = ask(lab, {"cmd": "stats"})
    assert stats["port"]["rx_gso"] > 0, stats["port"]  # super-frames did arrive
    assert stats["port"]["tx"] > stats["port"]["rx"]  # and left as more, smaller frames
    assert not {"gso_unsupported", "bad_gso", "too_big"} & set(stats["totals"]["drops"]), stats["totals"]["drops"]


def test_a_reload_applies_a_smaller_flow_table_in_place(lab_factory):
    lab = lab_factory("nat", engine="pktlb")
    wait_engine(lab)
    for i in range(8):
        assert lab.curl("client", f"http://{lab.vip}/", interface=f"198.18.1.{100 + i}").returncode == 0
    assert ask(lab, {"cmd": "stats"})["flows"]["entries"] >= 8
    config_path = lab.paths.config
    config_path.write_text(config_path.read_text() + "\n[flows]\nmax_entries = 3\ntcp_timeout = 120\n")
    answer = ask(lab, {"cmd": "reload"})
    assert answer["reloaded"] and answer["flows"]["max_entries"] == [1_000_000, 3], answer
    assert answer["flows"]["evicted"] >= 5 and answer["flows"]["tcp_timeout"] == [300.0, 120.0]
    assert lab.curl("client", f"http://{lab.vip}/", interface="198.18.1.120").returncode == 0
    flows = ask(lab, {"cmd": "stats"})["flows"]
    assert flows["max_entries"] == 3 and flows["entries"] <= 3, flows


def test_engine_capture_writes_what_it_receives_and_sends(lab_factory):
    from scapy.layers.inet import IP
    from scapy.utils import rdpcap

    lab = lab_factory("nat", engine="pktlb")
    wait_engine(lab)
    config_path = lab.paths.config
    captures = lab.paths.captures
    config_path.write_text(config_path.read_text().replace("[lb]\n", f'[lb]\ncapture_dir = "{captures}"\n', 1))
    assert ask(lab, {"cmd": "reload"})["reloaded"]
    answer = lab.curl_json("client", f"http://{lab.vip}/")
    # Flushes happen once a second; wait (bounded) for the frames to reach the files.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rx = rdpcap(str(captures / "engine-rx.pcap")) if (captures / "engine-rx.pcap").stat().st_size > 24 else []
        tx = rdpcap(str(captures / "engine-tx.pcap")) if (captures / "engine-tx.pcap").stat().st_size > 24 else []
        if len(rx) >= 5 and len(tx) >= 5:
            break
        time.sleep(0.2)
    be_address = f"198.18.0.{10 + int(answer['backend'][2:])}"
    assert any(IP in p and p[IP].dst == lab.vip for p in rx)
    assert any(IP in p and p[IP].dst == be_address for p in tx)  # the rewritten request
    assert any(IP in p and p[IP].src == lab.vip for p in tx)  # the rewritten reply


def _upload_intact(lab, n: int) -> None:
    """POST ``n`` random bytes to the VIP; the backend's answer must carry the same length and sha256."""
    upload = lab.run("client", ["sh", "-c",
                                f"head -c {n} /dev/urandom | tee /tmp/pktlb-upload-{lab.prefix} | "
                                f"curl -sS --max-time 30 -H 'Expect:' --data-binary @- http://{lab.vip}/upload; "
                                f"sha256sum /tmp/pktlb-upload-{lab.prefix}; rm -f /tmp/pktlb-upload-{lab.prefix}"],
                     timeout=45)
    answer_line, sum_line = upload.stdout.strip().splitlines()[-2:]
    answer = json.loads(answer_line)
    assert (answer["bytes"], answer["sha256"]) == (n, sum_line.split()[0]), upload.stderr
