"""Health checks on real namespaces: an LB and two backends on a bridge, built and removed by this file.

The fixture is a small stand-in for the full lab (same addresses: LB 198.18.0.2, backends
198.18.0.11 and .12 with the VIP 198.19.0.100 on lo and a TUN device for ``pktlb decap``), enough
for the checkers alone; the engine is not involved.  The test body runs inside the LB namespace
(``setns`` on this thread), so every socket the checkers open lives there.

Detection and recovery times are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pktlb.core.config import parse_config
from pktlb.core.health import DOWN, L3OK, L3TOUT, L3UNR, L4CON, UP, HealthEvent
from pktlb.daemon.health.icmp import probe_once
from pktlb.daemon.health.monitor import HealthMonitor
from pktlb.lab.netns import Namespace

pytestmark = [pytest.mark.lab, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, raw sockets)")]

LB, BE1, BE2, VIP = "198.18.0.2", "198.18.0.11", "198.18.0.12", "198.19.0.100"
ABSENT = "198.18.0.99"
TUN = "pktlbtun0"
INTERVAL, TIMEOUT, RISE, FALL = 0.2, 0.5, 2, 3
SLACK = 0.15  # scheduling and select() wake-up slack on a busy 2-vCPU VM
PKTLB = str(Path(sys.executable).parent / "pktlb")


def sh(*argv: str) -> None:
    Namespace.current().run(argv, timeout=10)


@dataclass
class LocalLab:
    prefix: str
    workdir: Path
    created: list[str] = field(default_factory=list)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=lambda: {"lb": LB, "be1": BE1, "be2": BE2})

    def ns(self, node: str) -> str:
        return f"{self.prefix}{node}"

    def build(self) -> None:
        for node in ("sw", *self.hosts):
            sh("ip", "netns", "add", self.ns(node))
            self.created.append(self.ns(node))
            sh("ip", "-n", self.ns(node), "link", "set", "lo", "up")
        sh("ip", "-n", self.ns("sw"), "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.ns("sw"), "link", "set", "br0", "up")
        for node, address in self.hosts.items():
            sh("ip", "-n", self.ns("sw"), "link", "add", f"s-{node}", "type", "veth", "peer", "name", "eth0",
               "netns", self.ns(node))
            sh("ip", "-n", self.ns("sw"), "link", "set", f"s-{node}", "master", "br0", "up")
            sh("ip", "-n", self.ns(node), "addr", "add", f"{address}/24", "dev", "eth0")
            sh("ip", "-n", self.ns(node), "link", "set", "eth0", "up")
        sh("ip", "-n", self.ns("lb"), "route", "add", "default", "via", "198.18.0.1")
        for i, node in enumerate(("be1", "be2"), start=1):
            # Tunnel-mode backend: the VIP on lo, a TUN device for the user-space decapsulator.
            ns = self.ns(node)
            sh("ip", "-n", ns, "addr", "add", f"{VIP}/32", "dev", "lo")
            sh("ip", "-n", ns, "tuntap", "add", "dev", TUN, "mode", "tun")
            sh("ip", "-n", ns, "addr", "add", f"198.19.1.{10 + i}/32", "dev", TUN)
            sh("ip", "-n", ns, "link", "set", TUN, "up")
            Namespace(ns).run(["sysctl", "-q", "-w", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2",
                               "net.ipv4.conf.all.rp_filter=0", f"net.ipv4.conf.{TUN}.rp_filter=0"], timeout=10)

    def start(self, name: str, node: str, argv: list[str]) -> subprocess.Popen:
        """Start ``argv`` in a node's namespace and wait until it writes its ready file ("{ready}" in argv)."""
        ready = self.workdir / f"{name}.ready"
        ready.unlink(missing_ok=True)
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        argv = [str(ready) if arg == "{ready}" else arg for arg in argv]
        proc = Namespace(self.ns(node)).popen(argv, stdout=log, stderr=log)
        log.close()
        self.procs[name] = proc
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert proc.poll() is None, f"{name} exited: {(self.workdir / f'{name}.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{name} not ready after 10 s"
            time.sleep(0.02)
        return proc

    def start_httpd(self, node: str) -> subprocess.Popen:
        return self.start(f"httpd-{node}", node, [sys.executable, "-m", "pktlb.lab.httpd", "--name", node,
                                                  "--port", "80", "--ready-file", "{ready}"])

    def start_decap(self, node: str) -> subprocess.Popen:
        code = ("import sys; from pktlb.daemon.decap import Decapsulator; "
                f"Decapsulator({self.hosts[node]!r}, {TUN!r}).run(ready_file=sys.argv[1], duration=120)")
        return self.start(f"decap-{node}", node, [sys.executable, "-c", code, "{ready}"])

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def teardown(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        for ns in reversed(self.created):
            Namespace.current().run(["ip", "netns", "del", ns], timeout=10, check=False)


@pytest.fixture
def local_lab(tmp_path: Path) -> Iterator[LocalLab]:
    lab = LocalLab(prefix=f"pktlb-hc{secrets.token_hex(2)}-", workdir=tmp_path)
    try:
        lab.build()
        yield lab
    finally:
        lab.teardown()


@contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Run the block in ``namespace`` (this thread only): sockets opened here stay in it."""
    from pyroute2.netns import popns, pushns

    pushns(namespace)
    try:
        yield
    finally:
        popns()


def drive(monitor: HealthMonitor, until: Callable[[], bool], limit: float) -> None:
    """Run the monitor as the daemon's loop would, until ``until()`` holds; fail after ``limit`` seconds."""
    start = time.monotonic()
    while not until():
        now = time.monotonic()
        assert now - start < limit, f"condition not reached within {limit} s"
        due = monitor.due()
        wait = min(start + limit - now, max(0.0, (due if due is not None else now + 0.1) - now))
        ready, _, _ = select.select(monitor.filenos(), [], [], wait)
        now = time.monotonic()
        for fd in ready:
            monitor.on_readable(fd, now)
        monitor.run_due(now)


def config(checks: list[str], *, mode: str = "nat", encapsulated: bool = False) -> str:
    return f"""
[lb]
address = "{LB}"
[[service]]
name = "web"
vip = "{VIP}"
port = 80
mode = "{mode}"
[service.health]
checks = {checks!r}
interval = {INTERVAL}
timeout = {TIMEOUT}
rise = {RISE}
fall = {FALL}
http_path = "/health"
http_body = "ok"
encapsulated_icmp = {str(encapsulated).lower()}
[[service.backend]]
name = "be1"
address = "{BE1}"
[[service.backend]]
name = "be2"
address = "{BE2}"
""".replace("'", '"')


class Watch:
    """A monitor plus the events it produced, with helpers to wait for states."""

    def __init__(self, text: str) -> None:
        self.events: list[HealthEvent] = []
        self.monitor = HealthMonitor(parse_config(text), now=time.monotonic(), on_event=self.events.append)

    def state(self, backend: str) -> str:
        return self.monitor.book.states[("web", backend)].state

    def wait_state(self, backend: str, state: str, limit: float) -> HealthEvent:
        drive(self.monitor, lambda: self.state(backend) == state, limit)
        return [e for e in self.events if e.backend == backend][-1]


def measure_cut_and_restore(watch: Watch, cut: Callable[[], None], restore: Callable[[], None],
                            what: str) -> tuple[HealthEvent, float, float]:
    """Both backends up, then cut be1: (down event, detection s, recovery s); be2 must not move."""
    watch.wait_state("be1", UP, 5)
    watch.wait_state("be2", UP, 5)
    be2_events = len([e for e in watch.events if e.backend == "be2"])
    cut()
    t_cut = time.monotonic()  # the cut is done by now (a link down, a process gone), as in health_failover.py:
    # the time to spawn `ip` or to stop a server on a loaded machine is not the monitor's detection
    down = watch.wait_state("be1", DOWN, 5)
    detection = down.at - t_cut
    restore()
    t_restore = time.monotonic()  # the link up again, the server listening (its ready file written)
    up = watch.wait_state("be1", UP, 10)
    recovery = up.at - t_restore
    print(f"\n{what}: detected in {detection:.3f} s (bound interval*fall+timeout = "
          f"{INTERVAL * FALL + TIMEOUT:.1f} s; reason: {down.reason}); back in service {recovery:.3f} s "
          f"after restore (rise={RISE}, interval={INTERVAL})")
    assert len([e for e in watch.events if e.backend == "be2"]) == be2_events, "be2 must not change"
    assert watch.state("be2") == UP
    return down, detection, recovery


def test_probe_live_and_absent_hosts(local_lab: LocalLab) -> None:
    with inside(local_lab.ns("lb")):
        live = list(probe_once(BE1, count=3, interval=0.1, timeout=TIMEOUT))
        absent = list(probe_once(ABSENT, count=2, interval=0.1, timeout=0.3))
    assert [o.status for o in live] == [L3OK] * 3 and [o.seq for o in live] == [1, 2, 3]
    assert all(0 < o.rtt < TIMEOUT and o.reply_from == BE1 and o.ttl == 64 for o in live)
    assert [o.status for o in absent] and all(o.status in (L3TOUT, L3UNR) for o in absent)
    print(f"\nICMP RTT to {BE1}: " + ", ".join(f"{o.rtt * 1e3:.3f} ms" for o in live))


def test_icmp_check_detects_a_link_down(local_lab: LocalLab) -> None:
    be1_link = ("ip", "-n", local_lab.ns("be1"), "link", "set", "eth0")
    with inside(local_lab.ns("lb")):
        watch = Watch(config(["icmp"]))
        try:
            down, detection, recovery = measure_cut_and_restore(
                watch, lambda: sh(*be1_link, "down"), lambda: sh(*be1_link, "up"), "ICMP, be1 link down")
        finally:
            watch.monitor.close()
    assert down.status in (L3TOUT, L3UNR)
    assert detection <= INTERVAL * FALL + TIMEOUT + SLACK
    assert recovery <= INTERVAL * RISE + TIMEOUT + SLACK


def test_tcp_and_http_checks_detect_a_stopped_service(local_lab: LocalLab) -> None:
    local_lab.start_httpd("be1")
    local_lab.start_httpd("be2")
    with inside(local_lab.ns("lb")):
        watch = Watch(config(["tcp", "http"]))
        try:
            down, detection, recovery = measure_cut_and_restore(
                watch, lambda: local_lab.stop("httpd-be1"), lambda: local_lab.start_httpd("be1"),
                "TCP+HTTP, be1 service stopped")
            rows = {r["backend"]: r for r in watch.monitor.summaries()}
        finally:
            watch.monitor.close()
    assert down.status == L4CON and "refused" in down.reason
    assert detection <= INTERVAL * FALL + TIMEOUT + SLACK
    assert [c["status"] for c in rows["be2"]["checks"]] == ["L4OK", "L7OK"]


def test_encapsulated_probe_fails_when_the_decapsulator_stops(local_lab: LocalLab) -> None:
    local_lab.start_decap("be1")
    local_lab.start_decap("be2")
    with inside(local_lab.ns("lb")):
        through = list(probe_once(BE1, count=2, interval=0.1, timeout=TIMEOUT, tunnel_vip=VIP, source=LB))
        assert [o.status for o in through] == [L3OK, L3OK] and all(o.reply_from == VIP for o in through)
        watch = Watch(config(["icmp"], mode="tunnel", encapsulated=True))
        try:
            down, detection, recovery = measure_cut_and_restore(
                watch, lambda: local_lab.stop("decap-be1"), lambda: local_lab.start_decap("be1"),
                "encapsulated ICMP, be1 decapsulator stopped")
            local_lab.stop("decap-be1")
            plain = list(probe_once(BE1, count=2, interval=0.1, timeout=TIMEOUT))
            broken = list(probe_once(BE1, count=2, interval=0.1, timeout=TIMEOUT, tunnel_vip=VIP, source=LB))
        finally:
            watch.monitor.close()
    assert down.status in (L3TOUT, L3UNR) and detection <= INTERVAL * FALL + TIMEOUT + SLACK
    # The backend itself still answers plain ICMP: only the encapsulated probe sees the broken tunnel.
    assert [o.status for o in plain] == [L3OK, L3OK]
    assert all(o.status in (L3TOUT, L3UNR) for o in broken)
    print(f"without decapsulator: {broken[0].status} {broken[0].reason}")


def test_pktlb_probe_command(local_lab: LocalLab) -> None:
    lb, run = Namespace(local_lab.ns("lb")), [PKTLB, "probe", "--interval", "0.1"]
    ok = lb.run([*run, "--target", BE1, "--count", "3"], timeout=20, check=False)
    assert ok.returncode == 0, ok.stderr
    replies = [line for line in ok.stdout.splitlines() if line.startswith(f"reply from {BE1}: icmp_seq=")]
    assert len(replies) == 3 and all(" time=" in line and line.endswith(" ms") for line in replies)
    assert "3 probes, 3 replies, 0% loss" in ok.stdout
    print("\n" + ok.stdout)
    lost = lb.run([*run, "--target", ABSENT, "--count", "2", "--timeout", "0.3"], timeout=20, check=False)
    assert lost.returncode == 1 and "0 replies" in lost.stdout
