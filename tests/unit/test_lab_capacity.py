"""A lab backend's capacity: the concurrency cap queues requests first come first served, and the service time
holds (the gate and the HTTP server on 127.0.0.1; no root)."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

from pktlb.lab.capacity import Capacity
from pktlb.lab.httpd import main as httpd_main
from pktlb.lab.httpd import make_server


def until(predicate, timeout: float = 5.0) -> None:
    """Wait (bounded) for a condition that has no event to wait on (a thread reaching the queue)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


def test_the_cap_queues_in_arrival_order():
    gates = {f"r{i}": threading.Event() for i in range(5)}
    order = []

    def held(seconds):  # the service time: each request blocked until the test opens its own gate
        name = threading.current_thread().name
        order.append(name)
        gates[name].wait(5)

    cap = Capacity(max_concurrent=2, service_time=1.0, sleep=held)

    def request():
        with cap.slot():
            pass

    threads = []
    for i in range(5):
        t = threading.Thread(target=request, name=f"r{i}")
        t.start()
        threads.append(t)
        until(lambda n=i + 1: cap.in_service + cap.waiting == n)
    assert (cap.in_service, cap.waiting, order) == (2, 3, ["r0", "r1"])
    # Each finished request hands its slot to the longest-waiting one.
    for done, (n, expected) in zip(("r1", "r0", "r3"), ((3, "r2"), (4, "r3"), (5, "r4")), strict=True):
        gates[done].set()
        until(lambda n=n: len(order) == n)
        assert order[-1] == expected and cap.in_service == 2
    for gate in gates.values():
        gate.set()
    for t in threads:
        t.join(5)
    assert cap.as_dict() == {"max_concurrent": 2, "service_time_ms": 1000.0, "in_service": 0, "waiting": 0,
                             "served": 5, "peak_in_service": 2, "peak_waiting": 3}


def test_unlimited_concurrency_never_queues():
    cap = Capacity(service_time=0.0)
    with cap.slot() as a, cap.slot() as b:
        assert cap.in_service == 2 and cap.waiting == 0
    assert (a.queued < 1 and b.queued < 1) and cap.served == 2
    with pytest.raises(ValueError, match="max_concurrent -1"):
        Capacity(max_concurrent=-1)
    with pytest.raises(ValueError, match="service_time -0.5"):
        Capacity(service_time=-0.5)


@pytest.fixture
def backend():
    """be1 on 127.0.0.1 with one slot and a 50 ms service time that waits for the test's gate first."""
    gate = threading.Event()
    cap = Capacity(max_concurrent=1, service_time=0.05, sleep=lambda s: (gate.wait(5), time.sleep(s)))
    server = make_server("be1", "127.0.0.1", 0, cap)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server.server_address[1], cap, gate
    gate.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_http_requests_queue_behind_the_cap_and_wait_the_service_time(backend):
    port, cap, gate = backend
    answers: dict[int, tuple[int, dict[str, str], bytes, float]] = {}

    def client(i):
        begin = time.monotonic()
        status, headers, body = get(port, "/")
        answers[i] = (status, headers, body, time.monotonic() - begin)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    until(lambda: cap.in_service == 1 and cap.waiting == 2)
    # Health checks and the counters pass the queue while the slot is taken.
    assert get(port, "/health")[0] == 200
    status, _, body = get(port, "/capacity")
    assert status == 200 and json.loads(body)["waiting"] == 2
    gate.set()
    for t in threads:
        t.join(10)
    assert sorted(a[0] for a in answers.values()) == [200, 200, 200]
    assert {json.loads(a[2])["backend"] for a in answers.values()} == {"be1"}
    for _, headers, _, elapsed in answers.values():
        assert float(headers["X-Service-Ms"]) >= 50.0 and elapsed >= 0.05  # the service time holds
    waited = sorted(float(a[1]["X-Queue-Ms"]) for a in answers.values())
    assert waited[1] >= 50.0 and waited[2] >= 100.0  # behind one, then two 50 ms services
    until(lambda: cap.served == 3)  # the slot is released (and counted) just after the answer is sent
    assert cap.as_dict()["peak_waiting"] == 2 and cap.as_dict()["served"] == 3


def test_head_takes_one_slot(backend):
    port, cap, gate = backend
    gate.set()
    status, headers, body = get(port, "/", method="HEAD")
    assert status == 200 and body == b"" and "X-Service-Ms" in headers
    until(lambda: cap.served >= 1)  # the slot is given back after the answer is written
    assert cap.served == 1 and cap.in_service == 0


def test_httpd_refuses_negative_capacity():
    with pytest.raises(SystemExit):
        httpd_main(["--name", "be1", "--port", "0", "--host", "127.0.0.1", "--max-concurrent", "-1"])
    with pytest.raises(SystemExit):
        httpd_main(["--name", "be1", "--port", "0", "--host", "127.0.0.1", "--service-time", "nan"])
