"""Health checking end to end through the running engine: cut a backend off, watch traffic move, restore it
(the harness, its bounds and what it checks: ``health_failover.py``).

Cuts: the backend's link down (ICMP check), its HTTP port answering RST (TCP and HTTP checks; an
nftables reject in its namespace, because the lab supervisor restarts a stopped server within a
fraction of a second), its IP-in-IP decapsulator frozen (tunnel mode, encapsulated ICMP), and
ICMP echo dropped while the backend stays healthy (the on_backend_down policies).
Figures are printed: run with ``-s``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from pktlb.lab.httpd import expected_sha256
from pktlb.lab.state import is_same_process
from tests.lab.engine_helpers import ask, wait_engine
from tests.lab.health_failover import (
    DETECT_BOUND,
    RECOVER_BOUND,
    Download,
    await_flow,
    await_state,
    configure_health,
    failover,
    flow_row,
    link_cut,
    new_flow_reaches,
    nft_in,
    web,
)

pytestmark = [pytest.mark.lab, pytest.mark.timeout(240)]


@pytest.mark.parametrize("mode", ["nat", "dsr"])
def test_link_down_detected_by_icmp_and_traffic_fails_over(lab_factory, tmp_path, mode):
    lab = lab_factory(mode, engine="pktlb")
    wait_engine(lab)
    configure_health(lab, ["icmp"])
    cut, restore = link_cut(lab, "be1")
    outcome = failover(lab, tmp_path, cut, restore, "ICMP, be1 link down")
    assert " down [icmp:L3TOUT]" in outcome.down_line or " down [icmp:L3UNR]" in outcome.down_line
    new_flow_reaches(lab, "be1")


@pytest.mark.parametrize("mode", ["nat", "dsr"])
def test_stopped_http_service_detected_by_tcp_and_http_checks(lab_factory, tmp_path, mode):
    lab = lab_factory(mode, engine="pktlb")
    wait_engine(lab)
    configure_health(lab, ["tcp", "http"])
    removers: list[Callable[[], None]] = []
    try:
        outcome = failover(lab, tmp_path, lambda: removers.append(nft_in(lab, "be1", "tcp dport 80 reject with tcp reset")),
                           lambda: removers.pop()(), "TCP+HTTP, be1's port 80 refusing")
    finally:
        for remove in removers:
            remove()
    assert " down [tcp:L4CON,http:L4CON]" in outcome.down_line, outcome.down_line
    new_flow_reaches(lab, "be1")


def test_tunnel_encapsulated_icmp_sees_a_frozen_decapsulator(lab_factory, tmp_path):
    lab = lab_factory("tunnel", engine="pktlb")
    if lab.plan.decap_kind != "user":
        pytest.skip("the kernel decapsulates (tunl0) here: there is no decapsulator process to freeze")
    wait_engine(lab)
    configure_health(lab, ["icmp"], encapsulated=True)
    record = lab.await_service("be1/decap", lambda r: r.get("state") == "running" and bool(r.get("pid")))
    assert is_same_process(record)
    pid = int(record["pid"])
    frozen: list[bool] = []

    def freeze() -> None:
        os.kill(pid, signal.SIGSTOP)
        frozen.append(True)

    def thaw() -> None:
        os.kill(pid, signal.SIGCONT)
        frozen.clear()

    try:
        outcome = failover(lab, tmp_path, freeze, thaw, "encapsulated ICMP, be1 decapsulator frozen")
    finally:
        if frozen:
            os.kill(pid, signal.SIGCONT)
    assert " down [icmp:L3TOUT]" in outcome.down_line, outcome.down_line
    new_flow_reaches(lab, "be1")


@pytest.mark.parametrize("policy", ["drop", "reschedule"])
def test_on_backend_down_policy_for_a_flow_in_progress(lab_factory, policy):
    """be1 fails its ICMP check (echo dropped) but keeps serving: only the engine's policy acts on its flow."""
    lab = lab_factory("nat", engine="pktlb")
    wait_engine(lab)
    configure_health(lab, ["icmp"], on_backend_down=policy)
    download = Download(lab, "be1", 4 * 1024 * 1024, "600k", first_port=22000)
    remove = None
    try:
        await_flow(lab, download.client, lambda row: row["state"] == "est")
        remove = nft_in(lab, "be1", "icmp type echo-request drop")
        await_state(lab, "be1", "down", DETECT_BOUND + 3)
        drops = lambda: web(ask(lab, {"cmd": "stats"}))["drops"].get("backend_down", 0)  # noqa: E731
        if policy == "drop":
            # The client's ACKs and window updates are dropped from the moment be1 is down.  Waiting for
            # the count to grow after that moment could miss: with every ACK gone, be1 only retransmits
            # on an exponential backoff, so the client's answers can come more than 5 s apart.
            deadline = time.monotonic() + 8
            while drops() == 0:
                assert time.monotonic() < deadline, "no backend_down drops while be1 is down"
                time.sleep(0.1)
            row = flow_row(lab, download.client)
            assert row is not None and row["backend"] == "be1"  # the flow stays pinned to its backend
            dropped = drops()
            remove()
            remove = None
            await_state(lab, "be1", "up", RECOVER_BOUND + 3)
            status, digest, err = download.finish()
            print(f"\ndrop: {dropped} backend_down drops while be1 was down; the download then resumed "
                  f"(curl exit {status})")
            # Nothing was sent elsewhere, so the connection survives the outage and completes intact.
            assert status == 0 and digest == expected_sha256(download.size), err
        else:
            row = await_flow(lab, download.client, lambda r: r["backend"] != "be1")
            status, digest, err = download.finish()
            print(f"\nreschedule: the flow moved to {row['backend']}; curl exit {status} ({err})")
            assert row["backend"] in ("be2", "be3") and drops() == 0
            assert status != 0 and digest != expected_sha256(download.size)  # the new backend answers RST
    finally:
        if remove is not None:
            remove()
        download.kill()
