"""The encapsulated ICMP check in the full lab (tunnel mode, user-space decapsulators, no engine).

With a backend's decapsulator frozen, plain ICMP to the backend still works, but the probe that
travels the data's IP-in-IP path gets no answer, and the backend goes down.  The decapsulator is
frozen with SIGSTOP rather than killed: the lab's supervisor restarts a dead service within a
fraction of a second, faster than ``interval * fall``; a stopped process keeps its raw socket, so
the kernel keeps handing it the probes and nothing answers (L3TOUT).  A killed one would make the
kernel answer "protocol unreachable" (L3UNR); see test_health_local.py, which has no supervisor.

Recovery after SIGCONT is near zero: the probes still in flight were queued on the decapsulator's
socket and are answered at once, which makes ``rise`` good results in a row.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from pktlb.core.health import DOWN, L3OK, L3TOUT, L3UNR, UP
from pktlb.daemon.health.icmp import probe_once
from pktlb.lab.state import is_same_process
from tests.lab.test_health_local import FALL, INTERVAL, PKTLB, RISE, SLACK, TIMEOUT, Watch, config, inside

pytestmark = pytest.mark.lab


def test_encapsulated_probe_sees_a_frozen_decapsulator(lab_factory) -> None:
    lab = lab_factory("tunnel", backends=2, engine="none")
    if lab.plan.decap_kind != "user":
        pytest.skip("the kernel decapsulates (tunl0) here: there is no decapsulator process to freeze")
    lb_address = lab.plan.constants["lb_address"]
    be1, be2 = (b.address for b in lab.backends())
    assert (be1, be2, lab.vip) == ("198.18.0.11", "198.18.0.12", "198.19.0.100")  # what config() assumes
    record = lab.await_service("be1/decap", lambda r: r.get("state") == "running" and bool(r.get("pid")))
    pid = int(record["pid"])
    with inside(lab.ns("lb")):
        through = list(probe_once(be1, count=2, interval=0.1, timeout=TIMEOUT, tunnel_vip=lab.vip, source=lb_address))
        assert [o.status for o in through] == [L3OK, L3OK] and all(o.reply_from == lab.vip for o in through)
        watch = Watch(config(["icmp"], mode="tunnel", encapsulated=True))
        frozen = False
        try:
            watch.wait_state("be1", UP, 5)
            watch.wait_state("be2", UP, 5)
            assert is_same_process(record)
            t_cut = time.monotonic()
            os.kill(pid, signal.SIGSTOP)
            frozen = True
            down = watch.wait_state("be1", DOWN, 5)
            detection = down.at - t_cut
            plain = list(probe_once(be1, count=2, interval=0.1, timeout=TIMEOUT))
            t_restore = time.monotonic()
            os.kill(pid, signal.SIGCONT)
            frozen = False
            up = watch.wait_state("be1", UP, 10)
            recovery = up.at - t_restore
            assert watch.state("be2") == UP and [e.backend for e in watch.events].count("be2") == 1
        finally:
            if frozen:
                os.kill(pid, signal.SIGCONT)
            watch.monitor.close()
    print(f"\nencapsulated ICMP in the lab, be1 decapsulator frozen: detected in {detection:.3f} s "
          f"({down.reason}); back {recovery:.3f} s after SIGCONT (interval={INTERVAL}, fall={FALL}, "
          f"rise={RISE}, timeout={TIMEOUT})")
    assert down.status in (L3TOUT, L3UNR) and detection <= INTERVAL * FALL + TIMEOUT + SLACK
    assert [o.status for o in plain] == [L3OK, L3OK]  # the backend itself is fine: only its tunnel is broken
    assert recovery <= INTERVAL * RISE + TIMEOUT + SLACK


def test_pktlb_probe_through_the_tunnel(lab_factory) -> None:
    lab = lab_factory("tunnel", backends=1, engine="none")
    be1 = lab.backends()[0].address
    done = lab.run("lb", [PKTLB, "probe", "--target", be1, "--count", "2", "--interval", "0.1",
                          "--tunnel-vip", lab.vip], timeout=20)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"IP-in-IP via {be1} to VIP {lab.vip}" in done.stdout
    assert done.stdout.count(f"reply from {lab.vip}: icmp_seq=") == 2
