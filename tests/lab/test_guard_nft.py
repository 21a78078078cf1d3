"""The engine's nftables guard in a real namespace: with forwarding on, the LB's kernel neither
forwards VIP traffic nor NAT replies while the guard is in place, its own health-check style
connections still work, removal restores exactly the state before, and a table left by a
SIGKILLed owner is removed by the next one.

Uses the two-armed lab of ``tests.lab.twoarm``: the client c reaches the server side through lb,
which forwards (ip_forward=1) and has the server s as the way to the VIP (s holds it on lo).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pktlb.adapters.nft import Nft
from pktlb.daemon.guard import GUARD_FAMILY, GUARD_TABLE, Guard, GuardSpec
from tests.lab.conftest import need_root
from tests.lab.twoarm import TwoArm, sh

pytestmark = pytest.mark.lab
VIP = "198.19.0.100"
SERVER = "198.18.202.2"
LISTEN_SECONDS = 30  # the test server's own bound


@pytest.fixture
def lab() -> Iterator[TwoArm]:
    need_root()
    topo = TwoArm()
    server = None
    try:
        topo.build()
        sh("ip", "netns", "exec", topo.ns("lb"), "sysctl", "-qw", "net.ipv4.ip_forward=1")
        topo.ip("c", "route", "add", "default", "via", "198.18.201.1")
        topo.ip("s", "route", "add", "default", "via", "198.18.202.1")
        topo.ip("s", "addr", "add", f"{VIP}/32", "dev", "lo")
        server = subprocess.Popen(
            ["ip", "netns", "exec", topo.ns("s"), sys.executable, "-c",
             "import socket, time\n"
             f"s = socket.create_server(('{SERVER}', 80)); s.settimeout(1); end = time.monotonic() + {LISTEN_SECONDS}\n"
             "print('listening', flush=True)\n"
             "while time.monotonic() < end:\n"
             "    try: s.accept()[0].close()\n"
             "    except OSError: pass\n"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        # Listening before the test's first connect (3 quick refused tries could all beat a slow start).
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        yield topo
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        topo.teardown()


def pings(topo: TwoArm, node: str, dst: str) -> bool:
    return sh("ip", "netns", "exec", topo.ns(node), "ping", "-c", "1", "-W", "1", dst, check=False).returncode == 0


def connects(topo: TwoArm, node: str, dst: str, port: int = 80, tries: int = 3) -> bool:
    probe = f"import socket; socket.create_connection(('{dst}', {port}), timeout=1).close()"
    for _ in range(tries):  # the server may still be starting: refused or timed out counts as not yet
        done = sh("ip", "netns", "exec", topo.ns(node), sys.executable, "-c", probe, check=False)
        if done.returncode == 0:
            return True
    return False


def test_the_guard_keeps_the_kernel_from_forwarding_vip_traffic_and_nat_replies(lab: TwoArm):
    nft = Nft(netns=lab.ns("lb"))
    nft.load("table inet user_table {\n chain c { type filter hook input priority 0; }\n}\n")
    assert pings(lab, "c", VIP) and connects(lab, "c", SERVER)  # without a guard the kernel forwards both
    guard = Guard(nft)
    guard.install(GuardSpec(devices=("lb-c", "lb-s"), vips=(VIP,), nat_replies=((SERVER, "tcp", 80),),
                            owner="test"))
    assert not pings(lab, "c", VIP)
    assert not connects(lab, "c", SERVER, tries=1)  # the SYN-ACK is a "NAT reply": dropped at lb-s
    assert connects(lab, "lb", SERVER)  # addressed to the LB itself (a health check): let through
    assert pings(lab, "c", SERVER)  # everything else is still forwarded
    listing = nft.table_text(GUARD_FAMILY, GUARD_TABLE) or ""
    counted = re.search(r"ip daddr 198\.19\.0\.100 counter packets (\d+)", listing)
    assert counted is not None and int(counted.group(1)) >= 1, listing
    assert guard.remove()
    assert nft.tables() == [("inet", "user_table")]
    assert pings(lab, "c", VIP)


def test_a_guard_left_by_a_sigkilled_owner_is_removed_by_the_next(lab: TwoArm):
    owner = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from pktlb.adapters.nft import Nft\n"
         "from pktlb.daemon.guard import Guard, GuardSpec, owner_text\n"
         f"Guard(Nft(netns='{lab.ns('lb')}')).install(GuardSpec(devices=('lb-c',), vips=('{VIP}',), owner=owner_text()))\n"
         "print('ready', flush=True)\n"
         "time.sleep(30)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "ready"
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=10)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(timeout=10)
    nft = Nft(netns=lab.ns("lb"))
    assert (GUARD_FAMILY, GUARD_TABLE) in nft.tables() and not pings(lab, "c", VIP)
    previous = Guard(nft).clear_stale()
    assert previous is not None and previous.startswith(f"pktlb engine pid {owner.pid} since ")
    assert nft.tables() == [] and pings(lab, "c", VIP)
