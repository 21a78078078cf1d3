"""`pktlb lab backend add|remove` on a running lab: a new backend namespace with its services, wired for
the mode and added to the engine; removal drains first (downloads in progress finish intact, a steady
stream of requests sees no failure), then the namespace and services go; a backend added again under
the same name starts fresh; `lab down` removes added backends too.  Bounded: about 30 s, a few hundred
requests.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from pktlb.lab.httpd import expected_sha256
from pktlb.lab.manage import lab_down
from pktlb.lab.netns import Namespace
from pktlb.lab.state import load_state
from tests.lab.conftest import PKTLB, need_root
from tests.lab.engine_helpers import ask, backend_counters, wait_engine

pytestmark = [pytest.mark.lab, pytest.mark.timeout(180)]

# New connections at 20/s for `seconds`; every answer counted and the backends that answered.
STEADY = r"""
import http.client, json, sys, time
vip, seconds = sys.argv[1], float(sys.argv[2])
ok, failed, errors, seen = 0, 0, [], {}
end = next_at = time.monotonic()
end += seconds
while time.monotonic() < end:
    try:
        conn = http.client.HTTPConnection(vip, 80, timeout=5)
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        ok, failed = ok + (resp.status == 200), failed + (resp.status != 200)
        seen[body["backend"]] = seen.get(body["backend"], 0) + 1
    except (OSError, ValueError) as exc:
        failed += 1
        errors.append(repr(exc))
    next_at += 0.05
    time.sleep(max(0.0, next_at - time.monotonic()))
print(json.dumps({"ok": ok, "failed": failed, "errors": errors[:5], "seen": seen}))
"""
DOWNLOAD = 600_000  # bytes, at 200 kB/s: ~3 s each


def _cli(*args: str) -> dict:
    done = subprocess.run([PKTLB, *args, "--json"], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_backend_added_and_removed_on_a_running_lab(lab_factory, tmp_path):
    lab = lab_factory("nat", backends=1, engine="pktlb", service_time=5.0, max_concurrent=4)
    wait_engine(lab)
    added = _cli("lab", "backend", "add", "--prefix", lab.prefix)
    assert added["backend"] == "be2" and added["address"] == "198.18.0.12"
    assert sorted(added["engine_services"]) == ["iperf", "web"]
    assert Namespace(lab.ns("be2")).exists()
    httpd = lab.await_service("be2/httpd", lambda r: r["state"] == "running")
    assert "--service-time" in httpd["argv"] and "--max-concurrent" in httpd["argv"]  # the lab's capacity
    status = lab.status()
    assert [n["name"] for n in status["nodes"] if n["role"] == "backend"] == ["be1", "be2"]
    be2 = next(n for n in status["nodes"] if n["name"] == "be2")
    assert be2["exists"] and {s["service"] for s in be2["services"] if s["pid"]} >= {"httpd"}
    wait_engine(lab)

    # Downloads in progress from several source addresses (some land on be2), a steady request
    # stream, and be2 removed meanwhile: the drain waits for be2's downloads.
    # (Into files: a pipe nobody reads until the end would stall them, and the drain with them.)
    files = [tmp_path / f"download{i}" for i in range(6)]
    downloads = [lab.popen("client", ["curl", "-sS", "--max-time", "30", "--limit-rate", "200k", "-o", str(path),
                                      "--interface", f"198.18.1.{100 + i}", f"http://{lab.vip}/bytes?n={DOWNLOAD}"],
                           stderr=subprocess.PIPE) for i, path in enumerate(files)]
    steady = lab.popen("client", [sys.executable, "-c", STEADY, lab.vip, "8"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    try:
        held = backend_counters(ask(lab, {"cmd": "stats"}))["be2"]["active_flows"]
        removed = _cli("lab", "backend", "remove", "--prefix", lab.prefix, "--drain-timeout", "25", "be2")
        out, err = steady.communicate(timeout=30)
        errors = [d.communicate(timeout=40)[1] for d in downloads]
    finally:
        for proc in [steady, *downloads]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    answers = json.loads(out)
    assert answers["failed"] == 0 and answers["ok"] > 100, answers  # none failed during the drain
    assert answers["seen"].get("be2", 0) > 0 or held > 0, answers  # be2 did serve
    assert removed["flows_cut"] == 0 and removed["engine_services"], removed
    assert all(d.returncode == 0 for d in downloads), errors
    want = expected_sha256(DOWNLOAD)
    assert all(hashlib.sha256(path.read_bytes()).hexdigest() == want for path in files)

    # Gone from everywhere: namespace, engine, supervisor, lab record.
    assert not Namespace(lab.ns("be2")).exists()
    assert set(backend_counters(ask(lab, {"cmd": "stats"}))) == {"be1"}
    assert not [n for n in lab.services() if n.startswith("be2/")]
    assert [n["name"] for n in load_state(lab.prefix)["nodes"] if n["role"] == "backend"] == ["be1"]

    # Added again under the same name: it starts fresh (up, not still draining) and gets new flows.
    again = _cli("lab", "backend", "add", "--prefix", lab.prefix)
    assert again["backend"] == "be2"
    stats = wait_engine(lab)
    assert backend_counters(stats)["be2"]["state"] == "up"
    seen = json.loads(lab.run("client", [sys.executable, "-c", STEADY, lab.vip, "2"], timeout=30).stdout)
    assert seen["failed"] == 0 and seen["seen"].get("be2", 0) > 0, seen

    # Errors are clear, and `lab down` removes the added backend too.
    bad = lab.cli("lab", "backend", "remove", "--prefix", lab.prefix, "be9")
    assert bad.returncode == 1 and "no backend 'be9'" in bad.stderr
    taken = lab.cli("lab", "backend", "add", "--prefix", lab.prefix, "--name", "be1")
    assert taken.returncode == 1 and "already has a backend 'be1'" in taken.stderr
    report = lab_down(lab.prefix)
    assert lab.ns("be2") in report["namespaces_removed"] and not report["errors"]
    assert not Namespace(lab.ns("be2")).exists()


def test_lab_backend_needs_a_running_lab():
    need_root()
    done = subprocess.run([PKTLB, "lab", "backend", "add", "--prefix", "pktlb-tnone-"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 1 and "no lab with prefix 'pktlb-tnone-' is up" in done.stderr


@pytest.mark.parametrize("mode", ["dsr", "tunnel", "fullnat"])
def test_an_added_backend_is_wired_for_the_mode(lab_factory, mode):
    """DSR (VIP on lo, ARP sysctls), tunnel (a decapsulator), full-NAT: the added backend answers
    through the VIP, and goes again without a trace."""
    lab = lab_factory(mode, backends=1, engine="pktlb")
    wait_engine(lab)
    added = _cli("lab", "backend", "add", "--prefix", lab.prefix)
    if lab.plan.decap_kind == "user":
        assert f"{added['backend']}/decap" in added["services"]
    seen = json.loads(lab.run("client", [sys.executable, "-c", STEADY, lab.vip, "1.5"], timeout=30).stdout)
    assert seen["failed"] == 0 and seen["seen"].get("be2", 0) > 0 and seen["seen"].get("be1", 0) > 0, seen
    removed = _cli("lab", "backend", "remove", "--prefix", lab.prefix, "be2")
    assert removed["flows_cut"] == 0 and not Namespace(lab.ns("be2")).exists()
    assert not [n for n in lab.services() if n.startswith("be2/")]
