"""``pktlb autoscale`` on a real lab: a bounded load that steps up and down, standby backends that go in and out.

The lab has four backends; the engine starts with two (be3 and be4 are removed from it, so they are
standby hosts that `pktlb autoscale --lab` may add).  The client sends new connections at 15/s for
20 s, then 1/s for 25 s; the target is 2 new flows per second per backend.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pktlb.daemon.autoscale.journal import read_journal
from pktlb.lab.state import load_state
from tests.lab.conftest import PKTLB
from tests.lab.engine_helpers import ask, backend_counters, wait_engine

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]

# New connections at a steady rate per phase; every answer counted (bounded: 325 requests, 45 s).
LOAD = r"""
import http.client, json, sys, time
vip, phases = sys.argv[1], json.loads(sys.argv[2])
ok, failed, errors = 0, 0, []
for seconds, rate in phases:
    end = next_at = time.monotonic()
    end += seconds
    while time.monotonic() < end:
        try:
            conn = http.client.HTTPConnection(vip, 80, timeout=5)
            conn.request("GET", "/")
            status = conn.getresponse().status
            conn.close()
            ok, failed = ok + (status == 200), failed + (status != 200)
        except OSError as exc:
            failed += 1
            errors.append(repr(exc))
        next_at += 1 / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
print(json.dumps({"ok": ok, "failed": failed, "errors": errors[:5]}))
"""


def test_stepped_load_scales_out_and_back_in_without_failures(lab_factory, tmp_path):
    lab = lab_factory("nat", backends=4, engine="pktlb")
    wait_engine(lab)
    for name in ("be3", "be4"):
        ask(lab, {"cmd": "backend", "action": "remove", "service": "web", "backend": name})
    scaler = subprocess.Popen(
        [PKTLB, "autoscale", "--lab", lab.prefix, "--metric", "new_flows_per_s", "--target", "2", "--min", "2",
         "--max", "4", "--warmup", "2", "--cooldown", "3", "--scale-in-window", "8", "--drain-timeout", "20",
         "--smoothing", "1", "--duration", "55", "--out", str(tmp_path), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        load = lab.run("client", [sys.executable, "-c", LOAD, lab.vip, json.dumps([[20, 15], [25, 1]])], timeout=90)
        out, err = scaler.communicate(timeout=120)
    finally:
        if scaler.poll() is None:
            scaler.kill()
            scaler.wait()
    assert scaler.returncode == 0, err
    answers = json.loads(load.stdout)
    assert answers["failed"] == 0 and answers["ok"] > 100, answers  # no request failed, drains included

    records = read_journal(tmp_path / "autoscale.jsonl")
    counts = [r["backends"] for r in records if r["type"] == "sample"]
    assert min(counts) >= 2 and max(counts) <= 4 and max(counts) >= 3, counts
    outs = [r for r in records if r["type"] == "scale_out" and r["backends"]]
    ins = [r for r in records if r["type"] == "scale_in" and r["backends"]]
    assert outs and outs[0]["time"] < 20, outs  # while the load is high
    assert ins and all(r["time"] > 20 for r in ins), ins  # after it stepped down
    added = {name for r in outs for name in r["backends"]}
    assert added <= {"be3", "be4"}
    removed = {r["backend"]: r for r in records if r["type"] == "removed"}
    assert set(removed) == added and all(r["why"] == "drained" for r in removed.values()), removed
    assert not [r for r in records if r["type"] == "error"]
    assert records[-1]["type"] == "end" and records[-1]["backends"] == ["be1", "be2"]
    assert set(backend_counters(ask(lab, {"cmd": "stats"}))) == {"be1", "be2"}
    summary = json.loads(out)
    assert summary["backends"]["end"] == 2 and (tmp_path / "timeline.png").stat().st_size > 10_000


def test_scale_out_creates_backend_namespaces_and_scale_in_removes_them(lab_factory, tmp_path):
    """One backend with a capacity (50 ms x 2: about 40 requests/s); `--load` steps 15/s -> 50/s -> 10/s.
    Scale-out creates be2 (and be3) with `lab backend add`'s machinery; scale-in drains them and removes
    their namespaces.  No request fails; the samples carry the load's p99 latency."""
    lab = lab_factory("nat", backends=1, engine="pktlb", service_time=50.0, max_concurrent=2)
    wait_engine(lab)
    done = subprocess.run(
        [PKTLB, "autoscale", "--lab", lab.prefix, "--metric", "new_flows_per_s", "--target", "20", "--min", "1",
         "--max", "3", "--warmup", "2", "--cooldown", "3", "--scale-in-window", "8", "--drain-timeout", "15",
         "--smoothing", "1", "--load", "15:10,50:25,10:30", "--out", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    load = summary["load"]
    assert load["failed"] == 0 and load["shed"] == 0 and load["ok"] == load["sent"] > 1000, load

    records = read_journal(tmp_path / "autoscale.jsonl")
    samples = [r for r in records if r["type"] == "sample"]
    counts = [r["backends"] for r in samples]
    assert min(counts) >= 1 and max(counts) <= 3 and max(counts) >= 2, counts
    assert sum(1 for r in samples if r["p99_ms"] is not None) > 30
    added = {name for r in records if r["type"] == "scale_out" for name in r["backends"]}
    removed = {r["backend"]: r for r in records if r["type"] == "removed"}
    assert added and added <= {"be2", "be3"} and set(removed) == added, (added, removed)
    assert all(r["why"] == "drained" for r in removed.values()), removed
    assert not [r for r in records if r["type"] == "error"]
    assert records[-1]["backends"] == ["be1"]
    # Nothing left behind: namespaces, services, the lab's record, the engine.
    assert not [ns for ns in ("be2", "be3") if lab.netns(ns).exists()]
    assert sorted(n for n in lab.services() if not n.startswith("be1/")) == ["lb/engine"]
    assert [n["name"] for n in load_state(lab.prefix)["nodes"] if n["role"] == "backend"] == ["be1"]
    assert set(backend_counters(ask(lab, {"cmd": "stats"}))) == {"be1"}
