"""``pktlb autoscale``: the replay of a recorded run (no root), bad input, and a short live run on fake workers."""

from __future__ import annotations

import json
import threading

import pytest
from click.testing import CliRunner

from pktlb.cli import main
from pktlb.daemon.autoscale.controller import Controller, LoopSettings
from pktlb.daemon.autoscale.journal import Journal, read_journal
from pktlb.daemon.ctlsock import ControlServer
from pktlb.daemon.reactor import Reactor
from tests.unit.test_autoscale_controller import POLICY, FakeClock, FakeEngine


@pytest.fixture
def recording(tmp_path):
    """A run of the loop on a fake engine: 150/s, 450/s from t=10 to t=30, then 150/s; 70 s."""
    clock = FakeClock()
    engine = FakeEngine(clock, lambda t: 450 if 10 <= t < 30 else 150)
    path = tmp_path / "recorded.jsonl"
    with open(path, "w") as f:
        ctl = Controller(POLICY, LoopSettings("new_flows_per_s", smoothing=0.0, drain_timeout=10.0), engine, engine,
                         clock, Journal(f), initial=["be1", "be2"])
        ctl.run(duration=70)
    return path


def invoke(*args):
    return CliRunner().invoke(main, ["autoscale", *args], catch_exceptions=False)


def test_replay_gives_the_recorded_actions(recording, tmp_path):
    out = tmp_path / "replay"
    done = invoke("--replay", str(recording), "--out", str(out), "--json")
    assert done.exit_code == 0, done.output
    summary = json.loads(done.output)
    # Same policy, same samples: the same decisions (drains take no time in a replay, names r1, r2 ...).
    assert [(a["time"], a["action"], a["backends"]) for a in summary["actions"]] == [
        (10.0, "scale_out", ["r1", "r2", "r3"]), (49.0, "scale_in", ["r3"]), (54.0, "scale_in", ["r2"]),
        (59.0, "scale_in", ["r1"])]
    assert summary["replay_of"] == str(recording) and summary["samples"] == 71
    assert summary["backends"] == {"start": 2, "min": 2, "max": 5, "end": 2}
    records = read_journal(out / "autoscale.jsonl")
    assert records[0]["type"] == "start" and records[0]["replay_of"] == str(recording)
    assert records[0]["policy"]["scale_in_window"] == 20  # taken from the recording
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replay_with_other_settings(recording, tmp_path):
    done = invoke("--replay", str(recording), "--out", str(tmp_path), "--json", "--scale-in-window", "5",
                  "--cooldown", "0", "--warmup", "0", "--scale-in-step", "3")
    summary = json.loads(done.output)
    # The dip at t=30 now scales in after 5 s (a recommendation of 2 from t=30 on), all 3 at once.
    assert [(a["time"], a["action"], a["backends"]) for a in summary["actions"]] == [
        (10.0, "scale_out", ["r1", "r2", "r3"]), (34.0, "scale_in", ["r3", "r2", "r1"])]
    text = invoke("--replay", str(recording), "--out", str(tmp_path), "--no-scale-in").output
    assert "scale_in" not in text and "10.0 s  scale_out +3 (r1, r2, r3)" in text


def test_replay_errors(recording, tmp_path):
    done = CliRunner().invoke(main, ["autoscale", "--replay", str(recording), "--out", str(tmp_path),
                                     "--metric", "cpu"])
    assert done.exit_code == 1 and "no sample of 'cpu' in the recording (it has new_flows_per_s)" in done.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "sample", "time": 0}\n')
    done = CliRunner().invoke(main, ["autoscale", "--replay", str(bad), "--out", str(tmp_path)])
    assert done.exit_code == 1 and "no start record" in done.output


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "0"], "--target 0.0: expected a number > 0"),
    (["--target", "5", "--min", "5", "--max", "2"], "--min 5 > --max 2: expected min <= max"),
    (["--target", "5", "--tolerance", "2"], "--tolerance 2.0"),
    ([], "--target is required"),
    (["--target", "5", "--metric", "rps"], "'rps' is not one of"),
    (["--target", "5", "--lab", "pktlb-nolab-"], "no lab 'pktlb-nolab-' with a pktlb engine is up"),
    (["--target", "5", "--lab", "../etc"], "expected 1-32 letters"),
    (["--target", "5", "-s", "/nonexistent/pktlb.sock"], "no engine control socket at /nonexistent/pktlb.sock"),
    (["--target", "5", "-s", "SOCK", "--period", "0"], "period = 0.0"),
    (["--target", "5", "-s", "SOCK", "--pool", "be3"], "expected NAME=ADDRESS"),
    (["--target", "5", "-s", "SOCK", "--load", "20:30"], "--load drives the lab's client: it needs --lab"),
    (["--target", "5", "--lab", "pktlb-nolab-", "--load", "20"], "expected RATE:SECONDS"),
])
def test_bad_input_is_a_clear_error(args, message, tmp_path, monkeypatch):
    monkeypatch.setenv("PKTLB_STATE_ROOT", str(tmp_path / "state"))
    args = [str(tmp_path / "x.sock") if a == "SOCK" else a for a in args]
    done = CliRunner().invoke(main, ["autoscale", "--out", str(tmp_path / "out"), *args])
    assert done.exit_code != 0 and message in done.output, done.output
    assert "Traceback" not in done.output


@pytest.fixture
def fake_engine(tmp_path):
    reactor = Reactor()
    changes = []
    rows = {"be1": 0}

    def handle(req):
        if req["cmd"] == "stats":
            rows["be1"] += 1000  # 1000 new flows per reading: far above any target below
            backends = [{"name": n, "state": "up", "new_flows": v, "packets_in": v, "active_flows": 0}
                        for n, v in rows.items()]
            return {"cpu_seconds": 1.0, "services": [{"name": "web", "backends": backends}]}
        changes.append((req["action"], req["backend"], req.get("address")))
        if req["action"] == "add":
            rows[req["backend"]] = 0
        return {"generation": 2, "why": "ok", "ring_moved": {}}

    path = str(tmp_path / "ctl.sock")
    server = ControlServer(path, handle, reactor)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: [reactor.run_once(0.02) for _ in iter(stop.is_set, True)])
    thread.start()
    yield path, changes
    stop.set()
    thread.join(5)
    server.close()
    reactor.close()


@pytest.mark.timeout(60)
def test_live_run_on_a_fake_engine(fake_engine, tmp_path):
    path, changes = fake_engine
    done = CliRunner().invoke(main, ["autoscale", "-s", path, "--target", "10", "--max", "3", "--out",
                                     str(tmp_path), "--duration", "0.2", "--period", "0.1", "--smoothing", "0",
                                     "--pool", "be2=198.18.1.12", "--pool", "be3=198.18.1.13:8080", "--json"])
    assert done.exit_code == 0, done.output
    records = read_journal(tmp_path / "autoscale.jsonl")
    assert [r["type"] for r in records] == ["start", "sample", "sample", "scale_out", "sample", "end"]
    # The first reading has no rate yet; the second one is far above target: both standby backends go in.
    assert records[3]["backends"] == ["be2", "be3"]  # far above target: straight to --max 3
    assert changes == [("add", "be2", "198.18.1.12"), ("add", "be3", "198.18.1.13")]
    assert records[0]["protected"] == ["be1"]
    summary = json.loads(done.output)
    assert summary["files"]["timeline"].endswith("timeline.png")
    # --max beyond what the pool can give is refused before anything runs (the engine has be1-be3 now).
    done = CliRunner().invoke(main, ["autoscale", "-s", path, "--target", "10", "--max", "5", "--out",
                                     str(tmp_path), "--pool", "be9=198.18.1.19", "--pool", "be3=198.18.1.13"])
    assert done.exit_code == 2
    assert "--max 5 needs up to 2 backends beyond the 3 the engine has, and --pool gives 1 standby ones" in done.output
