"""The kernel fast path in a lab (issue 15): `pktlb run --fastpath xdp` moves a download and an upload in
every mode, mostly in the kernel; the engine removes its program when it exits (also after SIGKILL);
and a lab capture replayed with the fast path on and off gives the same flows, backends and counters.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from pktlb.adapters.configfile import load_config
from pktlb.adapters.fastpath import availability, object_path
from pktlb.adapters.pcap import read_pcap
from pktlb.core.datapath import DataPath
from pktlb.core.packet.addr import mac_to_bytes
from pktlb.daemon.fastpath_replay import HybridPath
from pktlb.lab.addressing import lab_macs, mac_for_ip
from pktlb.lab.httpd import expected_sha256
from tests.lab.conftest import PKTLB
from tests.lab.engine_helpers import ask, await_read_back, engine_socket, wait_engine

pytestmark = [pytest.mark.lab, pytest.mark.bpf]
PASS_OBJECT = object_path().with_name("pass.bpf.o")


@pytest.fixture(autouse=True)
def _needs_fastpath():
    why = availability()
    if why:
        pytest.skip(f"fast path unavailable: {why}")


def lb_port(lab) -> tuple[str, str]:
    """(switch namespace, the switch-side veth of the LB's interface)."""
    node = next(n for n in lab.plan.nodes if n.name == "lb")
    iface = next(i for i in node.interfaces if i.kind == "veth")
    return lab.plan.switch_namespace, iface.port


def start_engine(lab, hook: str = "xdp", extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """The engine as `lab up --engine pktlb` runs it (the LB's kernel not forwarding), with the fast path."""
    lab.run("lb", ["sysctl", "-qw", "net.ipv4.ip_forward=0"], check=True)
    if hook == "tc":
        proc = lab.popen("lb", [PKTLB, "run", "-c", str(lab.paths.config), "--fastpath", hook, *extra],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_engine(lab)
        return proc
    sw, port = lb_port(lab)
    # XDP_TX on a veth reaches the peer only if the peer runs an XDP program too (LAB-NOTES)
    subprocess.run(["ip", "-force", "-n", sw, "link", "set", "dev", port, "xdp", "obj", str(PASS_OBJECT), "sec", "xdp"],
                   check=True, timeout=10)
    proc = lab.popen("lb", [PKTLB, "run", "-c", str(lab.paths.config), "--fastpath", hook, *extra],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_engine(lab)
    return proc


def xdp_on_lb(lab) -> bool:
    out = lab.run("lb", ["ip", "-d", "link", "show", "eth0"]).stdout
    return "prog/xdp" in out


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    proc.wait(timeout=15)


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("mode", "hook"), [("dsr", "xdp"), ("nat", "xdp"), ("fullnat", "xdp"), ("tunnel", "xdp"),
                                            ("nat", "tc"), ("tunnel", "tc")])
def test_a_download_and_an_upload_move_through_the_kernel(lab_factory, mode, hook):
    lab = lab_factory(mode, backends=2, engine="none")
    proc = start_engine(lab, hook)
    try:
        assert xdp_on_lb(lab) == (hook == "xdp")
        n = 4_000_000
        done = lab.run("client", ["sh", "-c", f"curl -sS --max-time 30 http://{lab.vip}/bytes?n={n} | sha256sum"],
                       timeout=40)
        assert done.stdout.split()[0] == expected_sha256(n), done.stderr
        up = lab.run("client", ["sh", "-c", f"head -c 2000000 /dev/zero | curl -sS --max-time 30 -o /dev/null "
                                f"-w '%{{http_code}}' --data-binary @- http://{lab.vip}/upload"], timeout=40)
        assert up.stdout.strip() == "200", up.stderr
        await_read_back(engine_socket(lab))  # the kernel's counters reach the stats
        stats = ask(lab, {"cmd": "stats"})
        fast = stats["fastpath"]
        assert fast["hook"] == hook and fast["errors"] == 0, fast
        assert stats["totals"]["received"] - stats["totals"]["kernel_forwarded"] < 200  # nothing forwarded twice
        assert stats["totals"]["kernel_forwarded"] > 1000, (stats["totals"], fast)  # the upload's segments
        if mode in ("nat", "fullnat"):
            assert fast["forwarded"]["outbound"] > 1000, fast  # the download's replies came back in the kernel
        flows = ask(lab, {"cmd": "flows"})
        assert sum(f["packets_in"] + f["packets_out"] for f in flows["flows"]) >= stats["totals"]["kernel_forwarded"]
    finally:
        stop(proc)
    assert not xdp_on_lb(lab)  # the engine removed its program


@pytest.mark.timeout(180)
def test_after_sigkill_nothing_stale_and_a_new_engine_takes_over(lab_factory):
    lab = lab_factory("dsr", backends=2, engine="none")
    proc = start_engine(lab)
    stop(proc, signal.SIGKILL)
    assert not xdp_on_lb(lab)  # a bpf_link dies with its process: no stale program or map
    proc = start_engine(lab)
    try:
        assert lab.curl("client", f"http://{lab.vip}/").returncode == 0
    finally:
        stop(proc)


@pytest.mark.timeout(240)
def test_a_lab_capture_replays_the_same_with_the_fast_path_on_and_off(lab_factory, tmp_path):
    lab = lab_factory("nat", backends=3, engine="none")
    capture = tmp_path / "cap"
    lab.run("lb", ["sysctl", "-qw", "net.ipv4.ip_forward=0"], check=True)
    proc = lab.popen("lb", [PKTLB, "run", "-c", str(lab.paths.config), "--capture", str(capture)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_engine(lab)
        for i in range(12):
            lab.run("client", ["curl", "-sS", "--max-time", "10", "-o", "/dev/null",
                               f"http://{lab.vip}/bytes?n={20000 * (i + 1)}"], timeout=20)
    finally:
        stop(proc)
    frames = [bytes(f) for _, f in read_pcap(str(capture / "engine-rx.pcap"))]
    assert len(frames) > 200
    config = load_config(str(lab.paths.config))
    macs = lab_macs(config)  # what the engine's egress stage resolved in the lab
    python_only = DataPath(config, macs=macs)
    for frame in frames:
        python_only.handle(bytearray(frame), time.monotonic())
    to_router = mac_to_bytes(mac_for_ip(lab.plan.constants["router_server"])) + mac_to_bytes(macs[config.lb.address])
    hybrid = HybridPath(DataPath(config, macs=macs), reply_l2=lambda _client: to_router)
    try:
        hybrid.replay(frames)
    finally:
        hybrid.close()
    assert hybrid.kernel_frames > len(frames) // 2  # most frames never reached Python
    want = {e.key: (e.backend, e.packets_in, e.bytes_in, e.packets_out, e.bytes_out) for e in python_only.flows}
    got = {e.key: (e.backend, e.packets_in, e.bytes_in, e.packets_out, e.bytes_out) for e in hybrid.dp.flows}
    assert got == want
    for key, counters in python_only.stats.backends.items():
        assert hybrid.dp.stats.backend(*key).as_dict() == counters.as_dict(), key


@pytest.mark.timeout(180)
def test_lab_up_fastpath_xdp_runs_the_supervised_engine_with_it(lab_factory):
    lab = lab_factory("nat", backends=2, engine="pktlb", fastpath="xdp")
    wait_engine(lab)
    n = 2_000_000
    done = lab.run("client", ["sh", "-c", f"curl -sS --max-time 30 http://{lab.vip}/bytes?n={n} | sha256sum"],
                   timeout=40)
    assert done.stdout.split()[0] == expected_sha256(n), done.stderr
    await_read_back(engine_socket(lab))  # the kernel's counters reach the stats
    stats = ask(lab, {"cmd": "stats"})
    assert stats["fastpath"]["hook"] == "xdp" and stats["fastpath"]["forwarded"]["outbound"] > 500, stats["fastpath"]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("fastpath", ["xdp", "off"])
def test_a_syn_flood_stays_in_the_kernel_and_every_request_is_served(lab_factory, fastpath):
    """Issue 15, point 7: a Maglev service with the fast path on; SYNs from many (lab) sources are
    scheduled by the program, never waiting for Python, while a stream of new HTTP connections runs.
    Without the fast path the same flood costs about one request in ten (tests/lab/test_floods.py)."""
    from tests.lab import fault_helpers as fh

    lab = lab_factory("dsr", backends=2, engine="pktlb", fastpath=fastpath)
    wait_engine(lab)
    count, rate = 60_000, 20_000
    seconds = count / rate
    requests = fh.start_in_node(lab, "client", "requests", "--vip", lab.vip, "--duration", str(seconds + 1),
                                "--interval", "0", "--timeout", "3")
    flood = fh.start_in_node(lab, "client", "flood", "--proto", "syn", "--dst", lab.vip, "--dport", "80",
                             "--count", str(count), "--rate", str(rate), "--seed", "7",
                             "--max-seconds", str(seconds + 10))
    try:
        sent = json.loads(fh.finish(flood, seconds + 30))
        rows = fh.request_rows(fh.finish(requests, seconds + 30))
    finally:
        fh.stop(flood)
        fh.stop(requests)
    if fastpath != "off":
        await_read_back(engine_socket(lab))  # the kernel's counters reach the stats
    fast = ask(lab, {"cmd": "stats"})["fastpath"]
    failed = [r for r in rows if not r["ok"]]
    print("FIGURES fastpath_syn_flood", fastpath, json.dumps({"sent": sent, "requests": len(rows),
                                                               "failed": len(failed), "fastpath": fast}))
    assert sent["sent"] == count
    if fastpath == "off":
        return  # the comparison row: the same flood through Python (its figures are printed above)
    assert len(rows) >= 10 and not failed, failed[:3]
    assert fast["forwarded"]["new_flow"] >= 0.9 * count, fast  # the program scheduled the flood itself
    assert fast["punts"].get("syn", 0) < 100, fast
