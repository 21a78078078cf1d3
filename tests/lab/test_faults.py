"""Faults in the lab: a backend cut off mid-transfer, the engine killed and restarted, a reload.

Downloads are read at a steady rate through a small receive window (fault_helpers ``download``),
so they are really in flight when the fault strikes; curl's ``--limit-rate`` reads in bursts and
lets the client's kernel take megabytes ahead, which can leave nothing on the wire to disturb.

* Cut: a backend's cable is pulled at the switch (its bridge port goes down) while a download runs
  on it.  The ICMP checks (interval 0.5 s, timeout 0.5 s, fall 2) mark it down within about
  ``interval * fall + timeout``; every new request then succeeds on the others.  The download on
  the dead backend cannot be saved (it stalls and gives up).  A reload while the backend is down,
  then the cable back: the backend returns (it once stayed down for good: the reloaded health
  monitor starts at ``init``, and its init -> up event was not passed on to the control plane).
* SIGKILL: a download runs while the engine is killed; the lab's supervisor starts it again with
  an empty flow table.  A mid-stream client packet creates an ``est`` entry, scheduled by Maglev on
  the same backend set, so it reaches the same backend: in dsr and tunnel (no reply state at all)
  and in nat (the reverse rewrite is derived from the config, not from the flow table) the download
  completes intact.  Full-NAT's source-port mapping lived only in the killed engine: the backend's
  segments to the old SNAT port are dropped as ``no_flow`` and the download stalls.  A few requests
  are made before the download so its SNAT port is not the first of the range, which a restarted
  engine hands out again to the first flow it sees and so would save the connection by luck.
* SIGHUP with a changed backend set (one removed, then added back): the download's flow keeps its
  backend and completes intact; new connections follow the new table.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from pktlb.lab.httpd import expected_sha256
from tests.lab import fault_helpers as fh
from tests.lab.engine_helpers import ask, predicted_backend, wait_engine

pytestmark = [pytest.mark.lab, pytest.mark.timeout(150)]

DETECTION_SLACK = 0.3  # seconds on top of interval * fall + timeout: timer and polling granularity
SURVIVES_RESTART = {"nat": True, "dsr": True, "tunnel": True, "fullnat": False}


def source_for(lab, backend: str, first_port: int, avoid: str | None = None) -> tuple[str, int]:
    """A (source address, source port) that the current config's Maglev table sends to ``backend``."""
    for i in range(200):
        src, sport = f"198.18.1.{100 + i % 64}", first_port + i
        if predicted_backend(lab, src, sport) == backend and src != avoid:
            return src, sport
    raise AssertionError(f"no source maps to {backend}")


def start_download(lab, n: int, rate: int, src: str | None = None, sport: int | None = None,
                   stall: float = 12.0) -> subprocess.Popen[str]:
    """A paced download in the client (fault_helpers ``download``): in flight for n / rate seconds."""
    where = ["--source", src, "--sport", str(sport)] if src else []
    return fh.start_in_node(lab, "client", "download", "--vip", lab.vip, "--n", str(n), "--rate", str(rate),
                            "--stall", str(stall), *where)


def download_result(proc: subprocess.Popen[str], timeout: float) -> dict:
    """{bytes, sha256, seconds, error, local} of a finished download."""
    return json.loads(fh.finish(proc, timeout))


def client_bytes_received(lab) -> int:
    """What the client's kernel has received so far on its connection(s) to the VIP's port 80 (ss -ti)."""
    done = lab.run("client", ["ss", "-tinH", "state", "established", "dst", f"{lab.vip}:80"], check=True)
    return max((int(m) for m in re.findall(r"bytes_received:(\d+)", done.stdout)), default=0)


def await_download_flow(lab, client: str = "198.18.1.10:", timeout: float = 5.0) -> dict:
    """The established port-80 flow of ``client`` ("addr:port", or "addr:" for any port of addr)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for flow in ask(lab, {"cmd": "flows"})["flows"]:
            who = flow["client"]
            if flow["state"] == "est" and flow["vip"].endswith(":80") and (
                    who == client or (client.endswith(":") and who.startswith(client))):
                return flow
        time.sleep(0.05)
    raise AssertionError(f"no established flow for {client} in the engine's table")


def with_fast_health(lab) -> float:
    data = fh.engine_config(lab)
    bound = fh.fast_health(data)
    fh.write_engine_config(lab, data)
    assert ask(lab, {"cmd": "reload"})["reloaded"]
    wait_engine(lab)
    return bound


def test_a_backend_cut_mid_transfer_is_detected_and_new_requests_succeed(lab_factory):
    lab = lab_factory("nat", engine="pktlb")
    wait_engine(lab)
    bound = with_fast_health(lab)
    n = 4 * 1024 * 1024
    src, sport = source_for(lab, "be2", 45000)
    download = start_download(lab, n, 400_000, src, sport, stall=5)
    cut = False
    try:
        assert await_download_flow(lab, client=f"{src}:{sport}")["backend"] == "be2"
        time.sleep(1.0)
        t_cut = fh.set_backend_link(lab, "be2", up=False)
        cut = True
        # timed to the engine's decision (its health.since_monotonic), not to when this poll saw it
        detection = fh.await_backend_decision(lab, ask, "be2", "down", bound + 5)[1] - t_cut
        # New connections, from sources that hashed to be2 as well, all land on the live backends.
        served = [lab.curl_json("client", f"http://{lab.vip}/", interface=f"198.18.1.{100 + i}")["backend"]
                  for i in range(30)]
        got = download_result(download, 30)
        # While be2 is down, a reload must not lose track of it: it comes back when its cable does.
        fh.reload_by_signal(lab, ask)
        t_restore = fh.set_backend_link(lab, "be2", up=True)
        cut = False
        recovery = fh.await_backend_decision(lab, ask, "be2", "up", 5)[1] - t_restore
    finally:
        if cut:
            fh.set_backend_link(lab, "be2", up=True)
        fh.stop(download)
    back = lab.curl_json("client", f"http://{lab.vip}/", interface=src)
    print("FIGURES backend_cut", json.dumps({"detection_s": round(detection, 3), "bound_s": bound,
                                              "served_after": {b: served.count(b) for b in set(served)},
                                              "download": got,
                                              "recovery_after_reload_s": round(recovery, 3)}))
    assert detection <= bound + DETECTION_SLACK
    assert len(served) == 30 and "be2" not in served and set(served) == {"be1", "be3"}
    assert got["error"] and got["bytes"] < n, "a download from a backend that vanished cannot complete"
    assert back["backend"] in {"be1", "be2", "be3"}
    assert fh.backend_state(lab, ask, "be2") == "up"


@pytest.mark.parametrize("mode", ["dsr", "tunnel", "nat", "fullnat"])
def test_established_connections_across_an_engine_restart(lab_factory, mode):
    lab = lab_factory(mode, engine="pktlb")
    wait_engine(lab)
    for i in range(3):  # other flows first (see the module docstring: full-NAT's port allocation)
        lab.curl_json("client", f"http://{lab.vip}/", interface=f"198.18.1.{120 + i}")
    n = 8 * 1024 * 1024
    download = start_download(lab, n, 1_000_000)
    try:
        before = await_download_flow(lab)
        time.sleep(1.5)
        old = fh.engine_pid(lab)
        received_at_kill = client_bytes_received(lab)
        t_kill = time.monotonic()
        os.kill(old, signal.SIGKILL)
        lab.await_service(fh.ENGINE_SERVICE, lambda r: r["state"] == "running" and r["pid"] not in (None, old), 15)
        wait_engine(lab)
        gap = time.monotonic() - t_kill
        after = None
        if SURVIVES_RESTART[mode]:
            after = await_download_flow(lab, client=before["client"], timeout=10)
        got = download_result(download, 60)
    finally:
        fh.stop(download)
    stats = ask(lab, {"cmd": "stats"})
    # Packets of the download the new engine forwarded (client -> backend: data ACKs in every mode).
    carried = sum(f["packets_in"] for f in ask(lab, {"cmd": "flows"})["flows"] if f["client"] == before["client"])
    print("FIGURES restart", mode, json.dumps({
        "gap_s": round(gap, 2), "received_at_kill": received_at_kill, "download": got,
        "backend_before": before["backend"], "backend_after": after and after["backend"],
        "packets_via_new_engine": carried,
        "snat_before": before.get("snat"), "drops_after": stats["totals"]["drops"]}))
    assert lab.services()[fh.ENGINE_SERVICE]["restarts"] == 1
    if SURVIVES_RESTART[mode]:
        assert not got["error"] and got["sha256"] == expected_sha256(n), got
        assert after["backend"] == before["backend"]
        # Most of the body crossed after the restart, and the new engine carried the client's side of it.
        assert 0 < received_at_kill < 0.5 * n and carried >= 10
    else:
        assert got["error"] and got["bytes"] < n, got
        assert stats["totals"]["drops"].get("no_flow", 0) > 0, "the backend's segments to the lost SNAT port"
    # Either way the restarted engine serves new connections.
    assert lab.curl_json("client", f"http://{lab.vip}/")["backend"]


def test_sighup_with_a_changed_backend_set_keeps_established_flows(lab_factory):
    lab = lab_factory("dsr", engine="pktlb")
    wait_engine(lab)
    n = 6 * 1024 * 1024
    download = start_download(lab, n, 1_000_000)
    try:
        flow = await_download_flow(lab)
        carrier = flow["backend"]
        other = next(b.name for b in lab.backends() if b.name != carrier)
        original = fh.engine_config(lab)
        reduced = json.loads(json.dumps(original))
        fh.web_service(reduced)["backend"] = [b for b in fh.web_service(reduced)["backend"] if b["name"] != other]
        fh.write_engine_config(lab, reduced)
        removed = fh.reload_by_signal(lab, ask)
        during = [f for f in ask(lab, {"cmd": "flows"})["flows"] if f["client"] == flow["client"]]
        # New connections follow the reduced table (predicted_backend reads the file just written).
        for i in range(12):
            src, sport = f"198.18.1.{130 + i}", 47000 + i
            done = lab.run("client", ["curl", "-sS", "--max-time", "5", "--interface", src, "--local-port", str(sport),
                                      f"http://{lab.vip}/"])
            assert json.loads(done.stdout)["backend"] == predicted_backend(lab, src, sport) != other
        fh.write_engine_config(lab, original)
        added = fh.reload_by_signal(lab, ask)
        after = [f for f in ask(lab, {"cmd": "flows"})["flows"] if f["client"] == flow["client"]]
        got = download_result(download, 40)
    finally:
        fh.stop(download)
    print("FIGURES reload", json.dumps({"carrier": carrier, "removed": other, "reload_removed": removed,
                                         "reload_added": added, "download": got}))
    assert f"removed ['web/{other}']" in removed["why"] and removed["ring_moved"]["web"] > 0
    assert f"added ['web/{other}']" in added["why"] and added["ring_moved"]["web"] > 0
    assert [f["backend"] for f in during] == [carrier] and [f["backend"] for f in after] == [carrier]
    assert not got["error"] and got["sha256"] == expected_sha256(n), got
