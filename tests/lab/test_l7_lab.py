"""The l7 lab (``pktlb lab up --mode l7``) with each proxy: pktlb's own and HAProxy, from the same service definition.

One lab per engine (module fixture, 3 backends, rr).  What an L7 balancer must do, checked from the
client namespace: routing by Host and path reaches the route's pool; the requests of one kept-alive
client connection are balanced one by one; slowloris clients and oversized heads are cut off while
other clients are served; a backend killed mid-run costs at most the requests in flight, then none.
Every client is bounded (``tests/lab/l7_clients.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pktlb.lab.l7 import API_HOST, STATIC_PREFIX, await_backends_up
from pktlb.lab.manage import lab_down, lab_up, service_states
from pktlb.lab.netns import Namespace
from pktlb.lab.paths import LabPaths
from pktlb.lab.topology import LabOptions
from tests.lab.conftest import PKTLB, need_root, unique_prefix

pytestmark = pytest.mark.lab

CLIENTS = str(Path(__file__).with_name("l7_clients.py"))
ENGINES = ("pktlb", "haproxy")
PROXY = "198.18.0.2"
CLIENT = "198.18.1.10"


class L7Lab:
    def __init__(self, engine: str, prefix: str, plan: Any):
        self.engine, self.prefix, self.plan = engine, prefix, plan
        self.url = f"http://{plan.constants['vip']}/"

    def client(self, kind: str, *args: str, timeout: float = 60) -> dict[str, Any]:
        done = Namespace(self.prefix + "client").run([sys.executable, CLIENTS, kind, self.url, *args],
                                                     timeout=timeout, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.splitlines()[-1])

    def curl(self, path: str, *headers: str) -> tuple[int, str, str]:
        """(status, X-Backend, body) of one request."""
        argv = ["curl", "-sS", "--max-time", "5", "-o", "/dev/stdout", "-D", "/dev/stderr"]
        for header in headers:
            argv += ["-H", header]
        done = Namespace(self.prefix + "client").run([*argv, self.url.rstrip("/") + path], timeout=15, check=False)
        head = done.stderr.lower().splitlines()
        status = int(head[0].split()[1]) if head and head[0].startswith("http/") else 0
        backend = next((line.split(":", 1)[1].strip() for line in head if line.startswith("x-backend:")), "")
        return status, backend, done.stdout


@pytest.fixture(scope="module", params=ENGINES)
def l7lab(request: pytest.FixtureRequest) -> Iterator[L7Lab]:
    need_root()
    engine = request.param
    if engine == "haproxy" and not os.path.exists("/usr/sbin/haproxy"):
        pytest.skip("haproxy is not installed (make deps installs it)")
    prefix = unique_prefix()
    try:
        result = lab_up(LabOptions(mode="l7", engine=engine, scheduler="rr", backends=3, prefix=prefix))
        assert result.engine_problem is None and result.warnings == [], result
        yield L7Lab(engine, prefix, result.plan)
    finally:
        lab_down(prefix)


def test_routing_by_host_and_path_reaches_the_routes_pool(l7lab: L7Lab):
    default = Counter(l7lab.curl("/")[1] for _ in range(6))
    assert set(default) == {"be1", "be2", "be3"}, default
    api = Counter(l7lab.curl("/", f"Host: {API_HOST}")[1] for _ in range(4))
    assert api == {"be1": 4}
    static = [l7lab.curl(STATIC_PREFIX + "logo.png") for _ in range(4)]
    assert {(status, backend) for status, backend, _ in static} == {(404, "be3")}  # the backend's 404, from be3


def test_the_backend_sees_the_proxy_and_the_client_in_the_forwarding_headers(l7lab: L7Lab):
    status, _, body = l7lab.curl("/")
    answer = json.loads(body)
    assert status == 200 and answer["client"] == PROXY
    assert answer["x_forwarded_for"] == CLIENT and f"for={CLIENT}" in answer["forwarded"]


def test_four_requests_on_one_kept_alive_connection_are_balanced_one_by_one(l7lab: L7Lab):
    result = l7lab.client("keepalive", "4")
    assert result["client_connections"] == 1
    backends = [a["backend"] for a in result["answers"]]
    assert all(a["status"] == 200 for a in result["answers"])
    assert len(set(backends)) == 3, backends  # rr over 3 backends, per request


def test_slowloris_clients_are_cut_off_and_other_clients_are_served(l7lab: L7Lab):
    slow = Namespace(l7lab.prefix + "client").popen([sys.executable, CLIENTS, "slow", l7lab.url, "20", "25"],
                                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        served = l7lab.client("keepalive", "20")
        assert [a["status"] for a in served["answers"]] == [200] * 20
        out, err = slow.communicate(timeout=60)
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()
    ended = json.loads(out.splitlines()[-1])["ended"]
    assert "open" not in ended, ended  # every slow head was cut (header_timeout 5 s) before the client gave up
    assert l7lab.curl("/")[0] == 200


def test_an_oversized_request_head_is_refused_and_others_are_served(l7lab: L7Lab):
    status, _, _ = l7lab.curl("/", "X-Big: " + "b" * 40000)
    assert status in (400, 431), status  # pktlb: 431 Request Header Fields Too Large; HAProxy: 400
    assert l7lab.curl("/")[0] == 200


def test_a_backend_killed_mid_run_costs_at_most_the_requests_in_flight(l7lab: L7Lab):
    threads, count = 4, 150
    be2 = service_states(LabPaths.at(l7lab.plan.statedir))["be2/httpd"]
    load = Namespace(l7lab.prefix + "client").popen(
        [sys.executable, CLIENTS, "steady", l7lab.url, str(threads), str(count)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert load.stdout is not None
        line = load.stdout.readline()
        assert line.strip() == "# half", line + (load.stderr.read() if load.stderr else "")
        os.kill(be2["pid"], signal.SIGKILL)
        out, err = load.communicate(timeout=120)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    outcomes = json.loads(out.splitlines()[-1])["outcomes"]
    errors = [o for per_thread in outcomes for o in per_thread if o.startswith("error")]
    assert len(errors) <= threads, errors
    for per_thread in outcomes:
        assert len(per_thread) == count
        assert not any(o.startswith("error") for o in per_thread[-count // 4:]), per_thread  # then none
    assert await_backends_up(l7lab.plan, 15) == []  # the supervisor restarted it and the proxy took it back


def test_pktlb_stats_reads_either_proxy_and_counts_pooled_connections(l7lab: L7Lab):
    for _ in range(6):
        assert l7lab.curl("/")[0] == 200
    done = subprocess.run([PKTLB, "stats", "--lab", l7lab.prefix, "--json"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["kind"] == ("l7-proxy" if l7lab.engine == "pktlb" else "haproxy")
    backends = stats["services"][0]["backends"]
    requests = sum(b["requests"] for b in backends)
    assert requests >= 6 and sum(b["connections_opened"] for b in backends) < requests
    text = subprocess.run([PKTLB, "stats", "--lab", l7lab.prefix], capture_output=True, text=True, timeout=30)
    assert text.returncode == 0 and "conn/req" in text.stdout
