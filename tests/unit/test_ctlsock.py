"""The control socket: 0600, JSON lines, errors for bad input, never a crash."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading

import pytest

from pktlb.daemon.ctlsock import ControlClientError, ControlServer, request
from pktlb.daemon.reactor import Reactor


@pytest.fixture
def server(tmp_path):
    reactor = Reactor()
    calls = []

    def handler(req):
        calls.append(req)
        if req["cmd"] == "boom":
            raise RuntimeError("kaboom")
        if req["cmd"] == "bad":
            raise ValueError("bad value for x")
        if req["cmd"] == "big":
            return {"blob": "x" * 4_000_000}
        return {"echo": req["cmd"]}

    srv = ControlServer(str(tmp_path / "ctl.sock"), handler, reactor)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: [reactor.run_once(0.05) for _ in iter(stop.is_set, True)])
    thread.start()
    yield srv
    stop.set()
    thread.join(5)
    srv.close()
    reactor.close()


def raw(path: str, data: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(data)
        return json.loads(s.makefile().readline())


def test_socket_is_private(server):
    mode = stat.S_IMODE(os.stat(server.path).st_mode)
    assert mode == 0o600


def test_requests_and_errors(server):
    assert request(server.path, {"cmd": "hello"}) == {"echo": "hello"}
    assert raw(server.path, b"{not json\n")["error"].startswith("invalid JSON")
    assert "cmd" in raw(server.path, b'["cmd"]\n')["error"]
    with pytest.raises(ControlClientError, match="bad value for x"):
        request(server.path, {"cmd": "bad"})
    with pytest.raises(ControlClientError, match="internal error: RuntimeError"):
        request(server.path, {"cmd": "boom"})
    assert request(server.path, {"cmd": "still-alive"}) == {"echo": "still-alive"}
    assert server.errors == 4


def test_a_client_that_does_not_read_its_reply_blocks_nobody(server, monkeypatch):
    import time

    from pktlb.daemon import ctlsock

    monkeypatch.setattr(ctlsock, "REPLY_TIMEOUT", 1.0)
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.connect(server.path)
    slow.sendall(b'{"cmd": "big"}\n')  # 4 MB of reply, far more than the socket buffer; never read
    t0 = time.monotonic()
    assert request(server.path, {"cmd": "meanwhile"}, timeout=2) == {"echo": "meanwhile"}
    assert time.monotonic() - t0 < 0.5  # the loop kept serving others
    slow.settimeout(5)
    deadline = time.monotonic() + 5
    while server.clients and time.monotonic() < deadline:  # until the engine gives up on it
        time.sleep(0.05)
    assert not server.clients and time.monotonic() - t0 >= 1.0
    got = 0
    while chunk := slow.recv(1 << 20):
        got += len(chunk)
    assert 0 < got < 4_000_000  # part of the reply, then the end of the stream
    slow.close()
    whole = request(server.path, {"cmd": "big"}, timeout=5)  # a reading client gets all of it
    assert len(whole["blob"]) == 4_000_000


def test_oversized_request_is_refused(server):
    reply = raw(server.path, b"x" * 70000)
    assert reply["ok"] is False and "larger than" in reply["error"]


def test_missing_socket_says_so(tmp_path):
    with pytest.raises(ControlClientError, match="no engine control socket"):
        request(str(tmp_path / "nothing.sock"), {"cmd": "stats"})


def test_cli_adds_up_every_workers_stats_and_sends_changes_to_all(tmp_path):
    from click.testing import CliRunner

    from pktlb.cli import main

    def stats(n):
        backend = {"name": "be1", "address": "198.18.0.11", "port": 80, "state": "up", "weight": 1,
                   "active_flows": n, "packets_in": 10 * n, "bytes_in": 100 * n, "packets_out": n, "bytes_out": n,
                   "new_flows": n, "pps_in": 0.0, "bps_in": 0.0, "pps_out": 0.0, "bps_out": 0.0, "health": None}
        return {"generation": 1, "uptime": 1.0, "worker": n - 1,
                "totals": {"received": n, "forwarded": n, "replied": 0, "dropped": 0, "drops": {}},
                "drop_reasons": {}, "flows": {"entries": n, "max_entries": 9, "inserted": n, "evicted": 0, "expired": 0},
                "port": {"rx": n, "tx": n, "rx_truncated": 0, "rx_partial": 0, "rx_gso": 0, "kernel_drops": 5 * n},
                "services": [{"name": "web", "vip": "198.19.0.100", "port": 80, "protocol": "tcp", "mode": "nat",
                              "scheduler": "maglev", "backends": [backend], "drops": {}}]}

    reactor = Reactor()
    seen = []
    base = str(tmp_path / "ctl.sock")
    def worker(n):
        def handle(req):
            seen.append((n, req["cmd"]))
            if req["cmd"] == "reload":
                return {"reloaded": True, "generation": 2, "why": "config reloaded", "flows": {"evicted": 10 * n}}
            return stats(n) if req["cmd"] == "stats" else {"generation": 2, "why": "x", "ring_moved": {}}
        return handle

    servers = [ControlServer(path, worker(n), reactor) for n, path in ((1, base), (2, base + ".w1"))]
    stop = threading.Event()
    thread = threading.Thread(target=lambda: [reactor.run_once(0.05) for _ in iter(stop.is_set, True)])
    thread.start()
    try:
        done = CliRunner().invoke(main, ["stats", "-s", base, "--json"])
        data = json.loads(done.output)
        assert data["workers"] == 2 and data["totals"]["received"] == 3
        assert data["services"][0]["backends"][0]["packets_in"] == 30
        assert data["port"]["kernel_drops"] == 15 and data["port"]["rx"] == 3
        assert data["flows"]["max_entries"] == 18  # two tables of 9
        text = CliRunner().invoke(main, ["stats", "-s", base]).output
        assert "socket: 15 frames lost in the kernel before the engine read them" in text, text
        done = CliRunner().invoke(main, ["backend", "drain", "be1", "-s", base])
        assert done.exit_code == 0, done.output
        assert sorted(n for n, cmd in seen if cmd == "backend") == [1, 2]
        done = CliRunner().invoke(main, ["reload", "-s", base])
        assert "flows (worker 0): evicted 10" in done.output and "flows (worker 1): evicted 20" in done.output
    finally:
        stop.set()
        thread.join(5)
        for srv in servers:
            srv.close()
        reactor.close()


def test_a_second_server_refuses_a_socket_in_use_but_takes_over_a_stale_one(server, tmp_path):
    from pktlb.daemon.ctlsock import SocketInUse

    other = Reactor()
    with pytest.raises(SocketInUse, match="another engine"):
        ControlServer(server.path, lambda req: None, other)
    other.close()
    stale = tmp_path / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(stale))
    leftover.close()  # the file stays, nobody listens: what a killed engine leaves
    reactor = Reactor()
    ControlServer(str(stale), lambda req: None, reactor).close()
    reactor.close()
