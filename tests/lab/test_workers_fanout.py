"""`pktlb run --workers 2`: NAT and full-NAT stay correct when replies land on another worker.

ICMP errors a backend sends about a full-NAT flow are steered by the port they quote.

The engine runs in the LB namespace of an `engine none` lab (the test starts and stops it).  Many
TCP connections from many source addresses and ports go through the VIP; with a plain hash fanout
about half the full-NAT replies would reach the worker without the flow and be dropped (no_flow).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from pktlb.daemon.ctlsock import ControlClientError, request, worker_socket
from pktlb.reports.bench.lab import BENCH_PORT
from pktlb.reports.bench.variants import bench_config_text
from tests.lab.conftest import PKTLB

pytestmark = [pytest.mark.lab, pytest.mark.timeout(180)]
WORKERS = 2


def _start_engine(lab, config: str = "pktlb.toml") -> subprocess.Popen:
    lab.run("lb", ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"], check=True)
    log = open(lab.paths.log("workers-engine"), "ab")  # noqa: SIM115 (closed with the process)
    proc = lab.popen("lb", [PKTLB, "run", "-c", str(lab.paths.file(config)), "--workers", str(WORKERS), "--no-health"],
                     stdout=log, stderr=log)
    log.close()
    return proc


def _sockets(lab) -> list[str]:
    return [worker_socket(str(lab.paths.control_socket), i) for i in range(WORKERS)]


def _await_workers(lab, proc, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, lab.paths.log("workers-engine").read_text()
        try:
            for path in _sockets(lab):
                request(path, {"cmd": "ping"}, timeout=1.0)
            return
        except ControlClientError:
            time.sleep(0.1)
    raise AssertionError("the workers never answered on their control sockets")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("mode", ["fullnat", "nat"])
def test_replies_reach_a_worker_that_can_rewrite_them(lab_factory, mode):
    lab = lab_factory(mode, engine="none")
    engine = _start_engine(lab)
    try:
        _await_workers(lab, engine)
        failures = []
        for i in range(40):
            src, sport = f"198.18.1.{100 + i}", 42000 + i
            done = lab.run("client", ["curl", "-sS", "--max-time", "3", "--interface", src, "--local-port", str(sport),
                                      f"http://{lab.vip}/"], timeout=10)
            if done.returncode != 0:
                failures.append((src, sport, done.stderr.strip()))
            else:
                answer = json.loads(done.stdout)
                assert answer["client"] == ("198.18.0.3" if mode == "fullnat" else src)
        stats = [request(path, {"cmd": "stats"}) for path in _sockets(lab)]
    finally:
        _stop(engine)
    assert not failures, failures
    assert [s["worker"] for s in stats] == list(range(WORKERS))
    for s in stats:
        assert s["totals"]["forwarded"] > 0, "both workers must carry traffic"
        assert s["totals"]["drops"].get("no_flow", 0) == 0, s["totals"]["drops"]
    if mode == "fullnat":
        # Every reply was handled by the worker holding its flow: replies counted on flows' workers only.
        replies = sum(be["packets_out"] for s in stats for svc in s["services"] for be in svc["backends"])
        assert replies >= 40 * 2


# A connected UDP socket per source port sends one datagram to VIP:UDP_PORT, where no backend
# listens: each backend answers its SNAT:port with port-unreachable, which must come back to the
# client as ECONNREFUSED.  Prints how many sockets were refused.
_REFUSALS = """
import socket, sys, time
vip, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = []
for i in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("198.18.1.10", 43000 + i)); s.connect((vip, port)); s.send(b"x"); socks.append(s)
refused, deadline = set(), time.monotonic() + 3
while len(refused) < count and time.monotonic() < deadline:
    for i, s in enumerate(socks):
        s.settimeout(0.05)
        try:
            s.recv(16)
        except ConnectionRefusedError:
            refused.add(i)
        except OSError:
            pass
print(len(refused))
"""
UDP_PORT = BENCH_PORT  # the UDP service bench_config_text adds


def test_icmp_errors_about_full_nat_flows_reach_the_worker_holding_the_flow(lab_factory):
    lab = lab_factory("fullnat", engine="none")
    c = lab.plan.constants
    backends = [(b.name, b.address, b.interfaces[0].mac) for b in lab.backends()]
    text = bench_config_text(lab.paths.config.read_text(), "fullnat", lab.vip, backends, c["snat_address"])
    lab.paths.file("icmp.toml").write_text(text)
    for b in lab.backends():  # one error per datagram: no ICMP rate limit toward the SNAT address
        lab.run(b.name, ["sysctl", "-q", "-w", "net.ipv4.icmp_ratelimit=0"], check=True)
    engine = _start_engine(lab, "icmp.toml")
    count = 24
    try:
        _await_workers(lab, engine)
        done = lab.run("client", ["python3", "-c", _REFUSALS, lab.vip, str(UDP_PORT), str(count)], timeout=20)
        stats = [request(path, {"cmd": "stats"}) for path in _sockets(lab)]
    finally:
        _stop(engine)
    assert done.returncode == 0, done.stderr
    relayed = [s["totals"].get("replied", 0) + s["totals"].get("forwarded", 0) for s in stats]
    assert int(done.stdout.strip()) == count, (done.stdout, [s["totals"] for s in stats])
    assert all(s["totals"]["drops"].get("no_flow", 0) == 0 for s in stats), [s["totals"]["drops"] for s in stats]
    assert all(r > 0 for r in relayed), "both workers must have carried datagrams and their errors"


# From the client: for each of the flows just opened, a fragmentation-needed as a router on the
# way back would send it, quoting the LB's reply VIP:80 -> client:port.
_FRAG_NEEDED = """
import socket, sys
from scapy.layers.inet import ICMP, IP, TCP
vip, client, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
for port in range(first, first + count):
    quoted = bytes(IP(src=vip, dst=client, flags="DF") / TCP(sport=80, dport=port, flags="A"))[:28]
    sock.sendto(bytes(ICMP(type=3, code=4, nexthopmtu=1400) / quoted), (vip, 0))
"""


@pytest.mark.parametrize("mode", ["nat", "fullnat"])
def test_icmp_errors_to_the_vip_reach_the_worker_holding_the_client_flow(lab_factory, mode):
    lab = lab_factory(mode, engine="none")
    engine = _start_engine(lab)
    count, first = 16, 45000
    try:
        _await_workers(lab, engine)
        for port in range(first, first + count):
            done = lab.run("client", ["curl", "-sS", "--max-time", "3", "--local-port", str(port),
                                      f"http://{lab.vip}/"], timeout=10)
            assert done.returncode == 0, done.stderr
        before = [request(path, {"cmd": "stats"})["totals"] for path in _sockets(lab)]
        sent = lab.run("client", [sys.executable, "-c", _FRAG_NEEDED, lab.vip, "198.18.1.10", str(first), str(count)],
                       timeout=20)
        assert sent.returncode == 0, sent.stderr
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until both workers together have read the errors
            after = [request(path, {"cmd": "stats"})["totals"] for path in _sockets(lab)]
            if sum(a["received"] - b["received"] for a, b in zip(after, before, strict=True)) >= count:
                break
            time.sleep(0.1)
    finally:
        _stop(engine)
    assert all(b["forwarded"] > 0 for b in before), "both workers must carry flows"
    relayed = [a["forwarded"] - b["forwarded"] for a, b in zip(after, before, strict=True)]
    lost = [a["drops"].get("icmp_no_flow", 0) for a in after]
    assert sum(relayed) == count and lost == [0, 0], (relayed, [a["drops"] for a in after])
