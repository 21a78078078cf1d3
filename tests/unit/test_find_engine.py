"""The CLI finds the engine: the default socket, else the one lab engine running, else a clear choice.

Fake engines (a Unix socket answering one JSON line, like the control socket) under a state root of
this test's own (``PKTLB_STATE_ROOT``); no root, no namespaces.
"""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pktlb.cli import main
from pktlb.lab import engines
from pktlb.lab.paths import LabPaths, labs_present
from tests.frames import config_text


class Answer(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        if not line:  # a connect to see whether an engine listens
            return
        request = json.loads(line)
        self.wfile.write(json.dumps({"ok": True, "result": {"engine": self.server.name,  # type: ignore[attr-defined]
                                                            "cmd": request["cmd"]}}).encode() + b"\n")


class FakeEngines:
    def __init__(self, root: Path) -> None:
        self.root, self.servers = root, []

    def lab(self, prefix: str, *, engine: bool = True) -> LabPaths:
        paths = LabPaths(prefix, self.root)
        paths.statedir.mkdir()
        paths.state_file.write_text(json.dumps({"prefix": prefix, "status": "up"}))
        paths.config.write_text(config_text("nat").replace("[lb]\n", f'[lb]\ncontrol_socket = "{paths.control_socket}"\n'))
        if engine:
            self.serve(paths.control_socket, prefix)
        return paths

    def serve(self, path: Path, name: str) -> None:
        server = socketserver.ThreadingUnixStreamServer(str(path), Answer)
        server.name = name  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.servers.append(server)

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEngines]:
    monkeypatch.setenv("PKTLB_STATE_ROOT", str(tmp_path))
    monkeypatch.setattr(engines, "default_socket", lambda: str(tmp_path / "pktlb.sock"))
    made = FakeEngines(tmp_path)
    yield made
    made.close()


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def test_nothing_running_says_so_and_how_to_choose(fake: FakeEngines) -> None:
    done = cli("stats")
    assert done.exit_code == 1 and "no engine is running" in done.output and "--lab PREFIX" in done.output
    fake.lab("idle-", engine=False)
    done = cli("flows")
    assert done.exit_code == 1 and "lab 'idle-' is there but no engine answers" in done.output


def test_the_one_lab_engine_is_found(fake: FakeEngines) -> None:
    fake.lab("idle-", engine=False)
    fake.lab("one-")
    assert [lab.prefix for lab in labs_present()] == ["idle-", "one-"]
    for args in (["stats", "--json"], ["reload", "--json"]):
        done = cli(*args)
        assert done.exit_code == 0, done.output
        assert json.loads(done.output)["engine"] == "one-"


def test_the_default_socket_comes_first(fake: FakeEngines) -> None:
    fake.lab("one-")
    fake.serve(fake.root / "pktlb.sock", "default")
    assert json.loads(cli("stats", "--json").output)["engine"] == "default"
    assert json.loads(cli("stats", "--json", "--lab", "one-").output)["engine"] == "one-"


def test_several_engines_need_a_choice(fake: FakeEngines) -> None:
    fake.lab("a-")
    fake.lab("b-")
    done = cli("stats", "--json")
    assert done.exit_code == 1 and "several engines are running" in done.output
    assert "lab 'a-'" in done.output and "lab 'b-'" in done.output and "--lab PREFIX" in done.output
    assert json.loads(cli("stats", "--json", "--lab", "b-").output)["engine"] == "b-"
    done = cli("backend", "drain", "be2", "--lab", "a-", "--json")
    assert done.exit_code == 0 and json.loads(done.output)["engine"] == "a-"
    done = cli("stats", "--lab", "zz-")
    assert done.exit_code == 1 and "no lab 'zz-' is up" in done.output and "'a-', 'b-'" in done.output
    done = cli("stats", "--lab", "../etc")
    assert done.exit_code == 1 and "not a path" in done.output


def test_explain_lab_uses_the_one_lab(fake: FakeEngines) -> None:
    fake.lab("one-", engine=False)
    syn = ["--tcp", "198.18.1.10:40000", "198.19.0.100:80", "--flags", "S", "--json"]
    done = cli("explain", "--lab", *syn)
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["decision"]["mode"] == "nat"
    fake.lab("two-", engine=False)
    done = cli("explain", "--lab", *syn)
    assert done.exit_code == 1 and "several labs are up" in done.output
