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


def test_oversized_request_is_refused(server):
    reply = raw(server.path, b"x" * 70000)
    assert reply["ok"] is False and "larger than" in reply["error"]


def test_missing_socket_says_so(tmp_path):
    with pytest.raises(ControlClientError, match="no engine control socket"):
        request(str(tmp_path / "nothing.sock"), {"cmd": "stats"})
