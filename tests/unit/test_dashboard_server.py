"""The dashboard's HTTP side end to end on 127.0.0.1, polling fake control sockets (no root, no engine)."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pktlb.daemon.dashboard.poller import DashboardState, Poller
from pktlb.daemon.dashboard.server import DashboardServer
from pktlb.daemon.dashboard.sources import Source
from tests.unit.dashboard_fixtures import FakeControlSocket, backend, engine_reply


class Counters:
    """What the fake engine's workers report; a test bumps it and awaits the next poll."""

    def __init__(self) -> None:
        self.new_flows = {"be1": 10, "be2": 20}

    def reply(self, worker: int) -> dict[str, Any]:
        share = (lambda n: n // 2) if worker == 0 else (lambda n: n - n // 2)  # two workers split the flows
        return engine_reply([backend(name, f"198.18.0.1{i}", new_flows=share(n))
                             for i, (name, n) in enumerate(self.new_flows.items(), 1)])


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[tuple[DashboardServer, DashboardState, Counters]]:
    counters = Counters()
    main = str(tmp_path / "pktlb.sock")
    fakes = [FakeControlSocket(main, lambda: counters.reply(0)),
             FakeControlSocket(main + ".w1", lambda: counters.reply(1))]
    state = DashboardState([Source("lab", main), Source("gone", str(tmp_path / "missing.sock"))], interval=0.2)
    poller = Poller(state)
    server = DashboardServer("127.0.0.1", 0, state)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    poller.start()
    state.wait_newer(1, timeout=5)  # both sources polled once
    try:
        yield server, state, counters
    finally:
        server.shutdown()
        poller.stop()
        server.server_close()
        for fake in fakes:
            fake.close()


def get(server: DashboardServer, path: str, method: str = "GET", host: str | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    conn.request(method, path, headers={"Host": host} if host else {})
    return conn.getresponse()


def new_flows(server: DashboardServer) -> dict[str, float]:
    text = get(server, "/metrics").read().decode()
    family = next(f for f in text_string_to_metric_families(text) if f.name == "pktlb_backend_new_flows")
    return {s.labels["backend"]: s.value for s in family.samples if s.labels["lb"] == "lab"}


def await_poll(state: DashboardState) -> None:
    seq = state.seq
    for _ in range(4):  # two sources: wait until "lab" was polled again
        seq = state.wait_newer(seq, timeout=5)


def test_metrics_add_up_the_workers_and_follow_the_counters(dashboard) -> None:
    server, state, counters = dashboard
    response = get(server, "/metrics")
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/plain")
    assert new_flows(server) == {"be1": 10, "be2": 20}
    counters.new_flows["be1"] += 25
    await_poll(state)
    assert new_flows(server) == {"be1": 35, "be2": 20}
    text = get(server, "/metrics").read().decode()
    ups = {s.labels["lb"]: s.value for f in text_string_to_metric_families(text) if f.name == "pktlb_source_up"
           for s in f.samples}
    assert ups == {"lab": 1.0, "gone": 0.0}


def test_the_page_and_its_files(dashboard) -> None:
    server, _, _ = dashboard
    page = get(server, "/")
    body = page.read().decode()
    assert page.status == 200 and '<script src="dashboard.js">' in body
    assert "default-src 'self'" in page.getheader("Content-Security-Policy")
    assert get(server, "/dashboard.js").getheader("Content-Type").startswith("text/javascript")
    assert get(server, "/dashboard.css").status == 200
    assert get(server, "/nothing-here").status == 404


def test_state_json_says_which_source_fails_and_why(dashboard) -> None:
    server, _, _ = dashboard
    view = json.loads(get(server, "/api/state").read())
    by_name = {s["name"]: s for s in view["sources"]}
    assert by_name["lab"]["ok"] and by_name["lab"]["kind"] == "engine" and by_name["lab"]["workers"] == 2
    assert not by_name["gone"]["ok"] and "no engine control socket" in by_name["gone"]["error"]
    assert any(e["source"] == "gone" and e["to"] == "unreachable" for e in view["events"])
    history = json.loads(get(server, "/api/history").read())
    assert set(history["sources"]) == {"lab", "gone"}


def test_read_only_and_only_for_its_own_host_name(dashboard) -> None:
    server, _, _ = dashboard
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = get(server, "/api/state", method=method)
        assert response.status == 405 and b"read-only" in response.read()
    assert get(server, "/metrics", host="evil.example:9180").status == 421
    assert get(server, "/metrics", host="localhost:9999").status == 200
    assert get(server, "/metrics", host=f"127.0.0.1:{server.port}").status == 200


def test_events_stream_pushes_the_state_after_each_poll(dashboard) -> None:
    server, _, counters = dashboard
    response = get(server, "/events")
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    counters.new_flows["be2"] = 99
    for _ in range(20):  # bounded: one event per poll, 0.2 s apart
        line = response.fp.readline().decode()
        if not line.startswith("data: "):
            continue
        view = json.loads(line[len("data: "):])
        lab = next(s for s in view["sources"] if s["name"] == "lab")
        rows = {b["name"]: b for b in lab["data"]["services"][0]["backends"]}
        if rows["be2"]["new_flows"] == 99:
            break
    else:
        raise AssertionError("the stream never showed the new counter")
    response.close()


def test_cli_json_polls_once(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pktlb.cli import main

    fake = FakeControlSocket(str(tmp_path / "pktlb.sock"), lambda: engine_reply())
    try:
        result = CliRunner().invoke(main, ["dashboard", "-s", f"edge={fake.path}", "--json"])
    finally:
        fake.close()
    assert result.exit_code == 0, result.output
    (source,) = json.loads(result.output)["sources"]
    assert (source["name"], source["ok"], source["kind"]) == ("edge", True, "engine")
    assert fake.requests == [{"cmd": "stats"}]
