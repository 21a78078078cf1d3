"""The kernel fast path with `--workers 2` and with several interfaces (issue 15, point 3).

Workers: one program and one set of maps for both workers; a nat and a full-NAT service carry
downloads intact, the kernel forwards nearly every frame, `pktlb stats` (both workers added up)
counts each kernel-forwarded frame once, `pktlb flows` lists the flows and a backend set down gets
no new flow; SIGKILL of worker 0 takes the program with it.  Two arms (`pktlb lab up --topology two-arm`): the program on the client-side interface
sends the requests out of the server-side one (XDP_REDIRECT), and Python handles almost nothing.
A network pktlb did not build (``tests.lab.foreign``: a client arm and two server arms, no gateway
in the config): requests and replies both cross interfaces in the kernel, at XDP and at tc.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pktlb.adapters.configfile import load_config
from pktlb.adapters.fanout import header_hash
from pktlb.adapters.fastpath import availability
from pktlb.core.packet.addr import ip_to_int
from pktlb.daemon.ctlsock import ControlClientError, request
from pktlb.daemon.worker_stats import engine_stats
from pktlb.lab.httpd import expected_sha256
from tests.lab.conftest import PKTLB, need_root
from tests.lab.engine_helpers import ask, await_read_back, engine_socket, wait_engine
from tests.lab.foreign import SERVERS, Foreign
from tests.lab.test_fastpath_lab import PASS_OBJECT, lb_port, stop, xdp_on_lb

pytestmark = [pytest.mark.lab, pytest.mark.bpf]
FULL_PORT, FULL_BACKEND_PORT = 8080, 8081
SIZE = 4_000_000


@pytest.fixture(autouse=True)
def _needs_fastpath():
    why = availability()
    if why:
        pytest.skip(f"fast path unavailable: {why}")


def fullnat_too(lab) -> str:
    """The lab's nat config plus a full-NAT service (port 8080 -> the backends' second web server)."""
    snat = lab.plan.constants["snat_address"]
    text = lab.paths.config.read_text() + f"""
[[service]]
name = "full"
vip = "{lab.vip}"
port = {FULL_PORT}
protocol = "tcp"
mode = "fullnat"
scheduler = "rr"
snat_address = "{snat}"
snat_ports = [20000, 59999]
backend = [
""" + "".join(f'    {{ name = "{b.name}", address = "{b.address}", port = {FULL_BACKEND_PORT} }},\n'
              for b in load_config(str(lab.paths.config)).services[0].backends) + "]\n" + """
[flows]
fin_timeout = 120.0
"""  # every closed flow stays listed until the end, however slow the machine (the default is 10 s)
    path = lab.paths.file("fastpath-workers.toml")
    path.write_text(text)
    lab.run("lb", ["ip", "addr", "add", f"{snat}/24", "dev", "eth0"], check=True)  # the LB answers ARP for it
    return str(path)


def ports_for_each_worker(lab, port: int, count: int, first: int = 24000) -> list[int]:
    """``count`` client source ports toward VIP:port that the fanout hash gives to worker 0, 1, 0, 1, ...
    (what ``pktlb run --workers 2`` steers a new flow's first frame by): each worker decides some of the
    flows, its own SNAT slice, whatever ports the kernel would have picked (all on one worker: 1 in 512).
    Below the ephemeral range, so no earlier connection's TIME_WAIT holds one of them."""
    client, vip = ip_to_int(lab.plan.node("client").address), ip_to_int(lab.vip)
    ports: list[int] = []
    sport = first
    while len(ports) < count:
        if header_hash(client, vip, sport << 16 | port) % 2 == len(ports) % 2:
            ports.append(sport)
        sport += 1
    return ports


def download(lab, port: int) -> None:
    done = lab.run("client", ["sh", "-c", f"curl -sS --max-time 20 http://{lab.vip}:{port}/bytes?n={SIZE} | sha256sum"],
                   timeout=30)
    assert done.stdout.split()[0] == expected_sha256(SIZE), done.stderr


def await_workers(lab, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, lab.paths.log("fastpath-workers").read_text()
        try:
            for path in lab.paths.worker_sockets():
                request(path, {"cmd": "ping"}, timeout=1.0)
            if len(lab.paths.worker_sockets()) == 2:
                return
        except ControlClientError:
            pass
        time.sleep(0.1)
    raise AssertionError("the workers never answered on their control sockets")


@pytest.mark.timeout(120)
def test_two_workers_share_one_program_and_count_its_frames_once(lab_factory):
    lab = lab_factory("nat", backends=2, engine="none")
    config = fullnat_too(lab)
    servers = [lab.popen(b.name, [sys.executable, "-m", "pktlb.lab.httpd", "--name", b.name, "--port",
                                  str(FULL_BACKEND_PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for b in lab.backends()]
    sw, port = lb_port(lab)
    subprocess.run(["ip", "-force", "-n", sw, "link", "set", "dev", port, "xdp", "obj", str(PASS_OBJECT), "sec", "xdp"],
                   check=True, timeout=10)
    lab.run("lb", ["sysctl", "-qw", "net.ipv4.ip_forward=0"], check=True)
    log = open(lab.paths.log("fastpath-workers"), "ab")  # noqa: SIM115 (closed with the process)
    proc = lab.popen("lb", [PKTLB, "run", "-c", config, "--workers", "2", "--fastpath", "xdp", "--no-health"],
                     stdout=log, stderr=log)
    log.close()
    try:
        await_workers(lab, proc)
        assert xdp_on_lb(lab)
        for _ in range(2):
            download(lab, 80)
        for _ in range(2):
            download(lab, FULL_PORT)
        client = lab.plan.node("client").address
        for sport in ports_for_each_worker(lab, FULL_PORT, 8):  # each worker decides some (its own SNAT slice)
            lab.run("client", ["curl", "-sS", "--max-time", "5", "-o", "/dev/null", "--interface", client,
                               "--local-port", str(sport), f"http://{lab.vip}:{FULL_PORT}/"], timeout=10)
        await_read_back(str(lab.paths.control_socket))  # the kernel's counters reach each worker's stats
        stats = engine_stats(str(lab.paths.control_socket))
        fast, totals = stats["fastpath"], stats["totals"]
        assert stats["workers"] == 2 and fast["hook"] == "xdp" and fast["errors"] == 0, fast
        program = fast["forwarded"]["inbound"] + fast["forwarded"]["outbound"]
        assert totals["kernel_forwarded"] > 10_000, (totals, fast)
        assert program * 0.98 <= totals["kernel_forwarded"] <= program, (totals, fast)  # once, not once per worker
        assert totals["received"] - totals["kernel_forwarded"] < 500, (totals, fast)  # Python: handshakes, FINs
        listed = lab.cli("flows", "--socket", str(lab.paths.control_socket), "--json")
        flows = json.loads(listed.stdout)["flows"]
        assert len(flows) == 12 and sum(f["packets_in"] + f["packets_out"] for f in flows) >= totals["kernel_forwarded"]
        assert {int(f["snat"].rsplit(":", 1)[1]) < 40000 for f in flows if f.get("snat")} == {True, False}  # both
        before = {f["client"] for f in flows}
        for path in lab.paths.worker_sockets():  # as `pktlb backend down` does: every worker
            request(path, {"cmd": "backend", "action": "down", "service": "web", "backend": "be1"})
        for _ in range(4):
            lab.run("client", ["curl", "-sS", "--max-time", "5", "-o", "/dev/null", f"http://{lab.vip}/"], timeout=10)
        await_read_back(str(lab.paths.control_socket))  # flows the program scheduled reach Python's tables
        flows = [f for p in lab.paths.worker_sockets() for f in request(p, {"cmd": "flows"})["flows"]]
        assert {f["backend"] for f in flows if f["client"] not in before} == {"be2"}, flows
        # SIGKILL worker 0: its bpf_links die with it (nothing pinned); the parent then stops worker 1
        workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        os.kill(min(int(pid) for pid in workers), signal.SIGKILL)
        proc.wait(timeout=15)
        assert not xdp_on_lb(lab)
    finally:
        stop(proc)
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
    assert not xdp_on_lb(lab)


@pytest.mark.timeout(90)
def test_two_arms_the_program_forwards_across_interfaces(lab_factory):
    lab = lab_factory("nat", backends=2, engine="pktlb", topology="two-arm", fastpath="xdp")
    wait_engine(lab)
    for _ in range(2):
        download(lab, 80)
    await_read_back(engine_socket(lab))
    stats = ask(lab, {"cmd": "stats"})
    fast, totals = stats["fastpath"], stats["totals"]
    assert fast["hook"] == "xdp" and fast["errors"] == 0, fast
    assert fast["forwarded"]["redirected"] > 500, fast  # client arm -> server arm, in the kernel
    assert totals["kernel_forwarded"] > 5_000, (totals, fast)
    assert totals["received"] - totals["kernel_forwarded"] < 200, (totals, fast)


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("mode", "hook"), [("nat", "xdp"), ("fullnat", "xdp"), ("nat", "tc")])
def test_a_foreign_three_interface_director_forwards_both_ways_in_the_kernel(mode, hook):
    need_root()
    net = Foreign(data_bytes=4 << 20)
    try:
        net.build()
        if hook == "xdp":
            net.xdp_pass_on_peers(str(PASS_OBJECT))
            for node in ("c", "s1", "s2"):  # XDP punts unfinished checksums (`pktlb lab doctor`: tx-checksum)
                net.run(node, "ethtool", "-K", "eth0", "tx", "off")
        else:  # tc runs without the guard: the director's kernel must not forward what tc punts (LAB-NOTES)
            net.sysctl("lb", "net.ipv4.ip_forward=0")
        net.start_engine(net.config(mode, [address for _, _, address in SERVERS.values()]), "--fastpath", hook)
        for _ in range(2):
            data = net.fetch("data.bin")
            assert hashlib.sha256(data).hexdigest() == net.digest
        await_read_back(net.socket)
        stats = json.loads(net.cli("stats", "--json").stdout)
        fast, totals = stats["fastpath"], stats["totals"]
        assert fast["hook"] == hook and fast["errors"] == 0, fast
        assert fast["forwarded"]["redirected"] > 0.95 * (fast["forwarded"]["inbound"] + fast["forwarded"]["outbound"])
        assert fast["forwarded"]["outbound"] > 100, json.dumps([fast, totals])  # replies crossed too (tc: GSO frames)
        assert totals["received"] - totals["kernel_forwarded"] < 200, (totals, fast)
    finally:
        net.teardown()
