"""Floods against the engine in the lab: the flow table stays bounded, real clients still get through.

SYN flood: crafted SYNs from random sources in 198.18.64.0/18 and random ports, sent from the
client namespace through the router (its rp_filter is 0, so spoofed sources are forwarded), in two
bursts, while a client makes new HTTP connections to the VIP.  The engine runs with a small flow
table (``max_entries``) and a short ``syn_timeout``: the table never holds more than its limit,
the overflow shows up as evictions, and the engine's RSS grows by about the table's size during
the first burst and not again in the second.  Mode nat: replies come back through the engine too,
so it handles both directions of every half-open flow.

UDP flood to a port no service uses: the frames reach the LB's interface, but the engine's kernel
filter drops them before they cost a system call; the engine's receive counter barely moves.

Each test prints a ``FIGURES`` line (run with ``-s`` to see it); the README's Reliability section
quotes them.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from tests.lab import fault_helpers as fh
from tests.lab.engine_helpers import ask, wait_engine

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]

MAX_ENTRIES = 2000
SYN_TIMEOUT = 1.0
FLOOD_RATE = 5000  # packets/s: what the engine absorbs on this 2-vCPU VM alongside the clients
FLOOD_COUNT = 20000  # per burst
RSS_GROWTH_LIMIT_KIB = 16 * 1024


class Sampler:
    """Samples the engine's flow-table size and RSS every 0.2 s in a thread."""

    def __init__(self, lab, pid: int):
        self.lab, self.pid = lab, pid
        self.rows: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            stats = ask(self.lab, {"cmd": "stats"})
            self.rows.append((time.monotonic(), stats["flows"]["entries"], fh.rss_kib(self.pid)))
            self._stop.wait(0.2)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def restart_engine_with(lab, data: dict) -> int:
    """[flows] sizes the flow table when the engine starts: write the config, stop the engine, and
    let the lab's supervisor start it again.  The new PID."""
    fh.write_engine_config(lab, data)
    old = fh.engine_pid(lab)
    os.kill(old, signal.SIGTERM)
    lab.await_service(fh.ENGINE_SERVICE, lambda r: r["state"] == "running" and r["pid"] not in (None, old), 15)
    wait_engine(lab)
    return fh.engine_pid(lab)


def client_requests(lab, seconds: float):
    """Back-to-back HTTP requests, a new connection each, from the client (started, not awaited)."""
    return fh.start_in_node(lab, "client", "requests", "--vip", lab.vip, "--duration", str(seconds),
                            "--interval", "0", "--timeout", "3")


def request_figures(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["ok"]]
    span = rows[-1]["end"] - rows[0]["start"] if rows else 0.0
    return {"requests": len(rows), "ok": len(ok), "ok_per_s": round(len(ok) / span, 1) if span else 0.0,
            "slowest_s": round(max((r["end"] - r["start"] for r in rows), default=0.0), 3),
            "errors": sorted({r.get("error", "") for r in rows if not r["ok"]})}


def syn_burst(lab, pid: int, seed: int) -> dict:
    seconds = FLOOD_COUNT / FLOOD_RATE
    requests = client_requests(lab, seconds)
    flood = None
    try:
        with Sampler(lab, pid) as sampler:
            flood = fh.start_in_node(lab, "client", "flood", "--proto", "syn", "--dst", lab.vip, "--dport", "80",
                                     "--count", str(FLOOD_COUNT), "--rate", str(FLOOD_RATE), "--seed", str(seed),
                                     "--max-seconds", str(seconds + 10))
            sent = json.loads(fh.finish(flood, seconds + 20))
            rows = fh.request_rows(fh.finish(requests, seconds + 20))
    finally:
        fh.stop(flood)
        fh.stop(requests)
    return {"sent": sent["sent"], "flood_pps": sent["pps"], **request_figures(rows),
            "max_entries_seen": max(r[1] for r in sampler.rows), "rss_max_kib": max(r[2] for r in sampler.rows)}


def test_syn_flood_keeps_the_flow_table_bounded_and_clients_served(lab_factory):
    lab = lab_factory("nat", engine="pktlb")
    wait_engine(lab)
    data = fh.engine_config(lab)
    data["flows"] = {"max_entries": MAX_ENTRIES, "syn_timeout": SYN_TIMEOUT}
    pid = restart_engine_with(lab, data)
    assert ask(lab, {"cmd": "stats"})["flows"]["max_entries"] == MAX_ENTRIES
    rss_start = fh.rss_kib(pid)
    baseline = request_figures(fh.request_rows(fh.finish(client_requests(lab, 2.0), 20)))
    assert baseline["requests"] >= 10 and baseline["ok"] == baseline["requests"], baseline

    first = syn_burst(lab, pid, seed=1)
    after_first = ask(lab, {"cmd": "stats"})["flows"]
    second = syn_burst(lab, pid, seed=2)
    flows = ask(lab, {"cmd": "stats"})["flows"]
    assert fh.engine_pid(lab) == pid, "the engine restarted during the flood"

    figures = {"max_entries": MAX_ENTRIES, "syn_timeout": SYN_TIMEOUT, "rss_start_kib": rss_start,
               "baseline": baseline, "first": first, "second": second, "flows": flows}
    print("FIGURES syn_flood", json.dumps(figures))
    for burst in (first, second):
        assert burst["sent"] == FLOOD_COUNT
        assert burst["max_entries_seen"] <= MAX_ENTRIES
        # Real clients keep getting through while the table churns (a lost SYN costs a 1 s retry).
        assert burst["requests"] >= 20 and burst["ok"] >= 0.9 * burst["requests"], burst
    assert flows["entries"] <= MAX_ENTRIES
    # Far more flows than fit were created: the overflow was evicted (LRU), not kept.
    assert after_first["evicted"] >= FLOOD_COUNT - MAX_ENTRIES - after_first["expired"] - 500
    assert flows["evicted"] >= 2 * FLOOD_COUNT - MAX_ENTRIES - flows["expired"] - 1000
    assert flows["inserted"] >= 2 * FLOOD_COUNT * 0.95
    # Memory follows the table's limit, not the number of flows seen: bounded, and flat the second time.
    assert first["rss_max_kib"] - rss_start < RSS_GROWTH_LIMIT_KIB
    assert second["rss_max_kib"] - first["rss_max_kib"] < max(1024, (first["rss_max_kib"] - rss_start) // 2), figures


def test_udp_flood_to_another_port_is_dropped_by_the_kernel_filter(lab_factory):
    lab = lab_factory("nat", engine="pktlb")
    wait_engine(lab)
    count = 20000
    rx_if_before = fh.iface_rx_packets(lab, "lb")
    rx_engine_before = ask(lab, {"cmd": "stats"})["port"]["rx"]
    flood = fh.start_in_node(lab, "client", "flood", "--proto", "udp", "--dst", lab.vip, "--dport", "9999",
                             "--count", str(count), "--rate", "10000", "--max-seconds", "15")
    try:
        sent = json.loads(fh.finish(flood, 30))
    finally:
        fh.stop(flood)
    time.sleep(0.2)  # let the last frames cross the bridge before reading the counters
    rx_if = fh.iface_rx_packets(lab, "lb") - rx_if_before
    rx_engine = ask(lab, {"cmd": "stats"})["port"]["rx"] - rx_engine_before
    print("FIGURES udp_flood", json.dumps({"sent": sent, "lb_eth0_rx": rx_if, "engine_rx": rx_engine}))
    assert sent["sent"] == count
    assert rx_if >= 0.95 * count, "the flood must reach the LB's interface for the test to mean anything"
    # What does reach the engine meanwhile is health-check replies and the like: a few per second.
    assert rx_engine < 0.01 * count
    assert lab.curl_json("client", f"http://{lab.vip}/")["backend"]
