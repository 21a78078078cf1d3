"""The control socket refuses other users, and bad requests get an error reply, never a crash.

Run as root: a forked child drops to ``nobody`` (65534) and connects.  With the socket at mode
0600 the kernel refuses the connect (EACCES -> "permission denied"); with the mode loosened to
0666 the connect succeeds but the server's SO_PEERCRED check refuses the caller.  The last test
does the same against a real engine in a lab, and sends it invalid JSON and unknown commands.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from pktlb.daemon.ctlsock import ControlClientError, ControlServer, request
from pktlb.daemon.reactor import Reactor
from pktlb.daemon.report import Reporter
from tests.lab.engine_helpers import ask, engine_socket, wait_engine
from tests.unit.test_ctlsock import raw

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]
NOBODY = 65534


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the test switches to another uid to connect")


def as_nobody(path: str, payload: dict) -> str:
    """Send ``payload`` from a child running as nobody; returns "ok: <result>" or "error: <message>"."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, ask, report through the pipe, exit without cleanup
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = f"ok: {json.dumps(request(path, payload, timeout=3))}"
        except ControlClientError as exc:
            result = f"error: {exc}"
        except BaseException as exc:  # anything else is reported too, never raised in the child
            result = f"crash: {type(exc).__name__}: {exc}"
        os.write(write_end, result.encode()[:4000])
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    return answer


@pytest.fixture
def server() -> Iterator[ControlServer]:
    """A ControlServer answering like the engine (Reporter.handle over a stub) in a directory nobody may enter,
    so only the socket's own mode decides."""
    need_root()
    directory = tempfile.mkdtemp(prefix="pktlb-ctl-", dir="/tmp")
    os.chmod(directory, 0o711)
    reporter = Reporter(SimpleNamespace(control=SimpleNamespace(snapshot=SimpleNamespace(generation=7))))
    reactor = Reactor()
    srv = ControlServer(os.path.join(directory, "ctl.sock"), reporter.handle, reactor)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: [reactor.run_once(0.05) for _ in iter(stop.is_set, True)])
    thread.start()
    try:
        yield srv
    finally:
        stop.set()
        thread.join(5)
        srv.close()
        reactor.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_socket_is_0600_owned_by_root_and_refuses_another_user(server):
    info = os.stat(server.path)
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0
    assert request(server.path, {"cmd": "ping"})["generation"] == 7  # root may
    answer = as_nobody(server.path, {"cmd": "ping"})
    assert answer.startswith("error: permission denied"), answer
    assert server.refused == 0, "the kernel refused it before the server saw a connection"


def test_peer_credentials_refuse_another_user_even_with_a_loose_mode(server):
    os.chmod(server.path, 0o666)
    answer = as_nobody(server.path, {"cmd": "ping"})
    assert answer == "error: permission denied", answer
    assert server.refused == 1
    assert request(server.path, {"cmd": "ping"})["pong"] is True  # and root is still served


def test_bad_requests_get_error_replies_and_the_server_keeps_answering(server):
    assert raw(server.path, b"{not json\n")["error"].startswith("invalid JSON")
    assert raw(server.path, b"\xff\xfe\n")["ok"] is False
    assert "cmd" in raw(server.path, b"[1, 2]\n")["error"]
    assert "cmd" in raw(server.path, b'{"cmd": 5}\n')["error"]
    reply = raw(server.path, b'{"cmd": "rm -rf"}\n')
    assert reply["ok"] is False and "unknown command 'rm -rf'" in reply["error"] and "ping" in reply["error"]
    assert raw(server.path, b'{"cmd": "__init__"}\n')["ok"] is False
    assert raw(server.path, b"x" * 70000)["ok"] is False  # oversized, no newline
    assert request(server.path, {"cmd": "ping"})["pong"] is True
    assert server.errors >= 6


def test_a_real_engine_refuses_other_users_and_survives_bad_requests(lab_factory):
    lab = lab_factory("nat", engine="pktlb")
    wait_engine(lab)
    path = engine_socket(lab)
    info = os.stat(path)
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0
    answer = as_nobody(path, {"cmd": "stats"})
    assert answer.startswith("error: permission denied"), answer
    with pytest.raises(ControlClientError, match="unknown command 'nonsense'.*stats"):
        ask(lab, {"cmd": "nonsense"})
    with pytest.raises(ControlClientError, match="unknown backend action"):
        ask(lab, {"cmd": "backend", "action": "explode", "service": "web", "backend": "be1"})
    assert raw(path, b"{{{\n")["error"].startswith("invalid JSON")
    assert raw(path, b'"just a string"\n')["ok"] is False
    stats = ask(lab, {"cmd": "stats"})
    assert stats["totals"]["received"] >= 0 and all(be["state"] == "up" for be in stats["services"][0]["backends"])
