"""pktlb announce: the verdict (pure), rise/fall, and the supervisor against a fake engine and BIRD."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest

from pktlb.daemon.announce.policy import Hysteresis, Verdict, decide, healthy_backends
from pktlb.daemon.announce.supervisor import Announcer, AnnounceSettings
from tests.unit.tier_fakes import FakeBird, FakeEngine, engine_stats

VIP = "198.19.0.100"


def test_decide_announces_only_a_healthy_engine():
    assert decide(engine_stats(), None, [VIP]).announce
    assert decide(engine_stats(states=("down", "up")), None, [VIP]).announce
    v = decide(engine_stats(states=("down", "drain")), None, [VIP])
    assert not v.announce and "no healthy backend" in v.reason
    v = decide(None, "connection refused", [VIP])
    assert not v.announce and "connection refused" in v.reason and not v.immediate
    assert "nothing on 198.19.0.9" in decide(engine_stats(), None, ["198.19.0.9"]).reason
    assert not decide({"kind": "engine"}, None, [VIP]).announce
    assert not decide(engine_stats(), None, []).announce


def test_drain_and_stop_win_and_act_at_once():
    for kwargs, reason in (({"drained": True}, "drained"), ({"stopping": True}, "stopping")):
        v = decide(engine_stats(), None, [VIP], **kwargs)
        assert not v.announce and v.immediate and reason in v.reason


def test_healthy_backends_counts_every_service_of_the_vip_once():
    stats = engine_stats(states=("down", "up"))
    stats["services"].append({"vip": VIP, "backends": [{"name": "be2", "state": "up", "weight": 1},
                                                       {"name": "be3", "state": "up", "weight": 0}]})
    assert healthy_backends(stats, VIP) == ["be2"]


def test_hysteresis_rise_and_fall():
    h = Hysteresis(rise=2, fall=2)
    good, bad = Verdict(True, "ok"), Verdict(False, "bad")
    assert not h.feed(good) and not h.announced
    assert h.feed(good) and h.announced
    assert not h.feed(bad) and h.announced
    assert not h.feed(good)  # a good poll resets the bad streak
    assert not h.feed(bad)
    assert h.feed(bad) and not h.announced and h.reason == "bad"
    assert not h.feed(Verdict(False, "drained", immediate=True))
    h.feed(good), h.feed(good)
    assert h.feed(Verdict(False, "drained", immediate=True)) and not h.announced
    with pytest.raises(ValueError):
        Hysteresis(rise=0)


@pytest.fixture
def rig(tmp_path):
    bird = FakeBird(str(tmp_path / "bird.ctl"))
    engine = FakeEngine(str(tmp_path / "engine.sock"), engine_stats())
    settings = AnnounceSettings(engine.path, bird.path, str(tmp_path / "announce.sock"), (VIP,), interval=0.05,
                                rise=2, fall=1, journal=str(tmp_path / "journal.jsonl"))
    yield Announcer(settings), bird, engine
    bird.close()
    engine.close()


def test_announcer_follows_engine_health(rig):
    ann, bird, engine = rig
    ann.poll()
    assert bird.protocols["announce"] == "down"  # rise 2: one good poll is not enough
    ann.poll()
    assert bird.protocols["announce"] == "up" and ann.status()["announced"]
    engine.stats = engine_stats(states=("down", "down"))
    ann.poll()
    assert bird.protocols["announce"] == "down" and "no healthy backend" in ann.status()["reason"]
    engine.stats = engine_stats()
    ann.poll(), ann.poll()
    assert bird.protocols["announce"] == "up"
    engine.close()  # the engine is gone: its socket refuses
    os.unlink(engine.path)
    ann.poll()
    assert bird.protocols["announce"] == "down" and "engine not answering" in ann.status()["reason"]


def test_announcer_repairs_a_restarted_bird(rig):
    ann, bird, _ = rig
    ann.poll(), ann.poll()
    bird.protocols["announce"] = "down"  # BIRD restarted: its config starts the protocol disabled
    ann.poll()
    assert bird.protocols["announce"] == "up"


def test_drain_withdraws_until_resume(rig):
    ann, bird, _ = rig
    ann.poll(), ann.poll()
    reply = ann.handle({"cmd": "drain"})
    assert not reply["announced"] and reply["drained"] and bird.protocols["announce"] == "down"
    ann.poll(), ann.poll(), ann.poll()
    assert bird.protocols["announce"] == "down"
    ann.handle({"cmd": "resume"})
    ann.poll(), ann.poll()
    assert bird.protocols["announce"] == "up"
    with pytest.raises(ValueError, match="unknown command"):
        ann.handle({"cmd": "explode"})


def test_bird_unreachable_is_reported_not_fatal(rig, tmp_path):
    ann, bird, _ = rig
    bird.close()
    os.unlink(bird.path)
    ann.poll()
    assert ann.status()["bird"]["protocol_up"] is None and "no BIRD control socket" in ann.status()["bird"]["error"]


def test_sigterm_withdraws_then_exits(rig):
    from pktlb.daemon.ctlsock import ControlClientError, request

    ann, bird, _ = rig
    done = threading.Event()
    result = {}

    def serve():
        result["code"] = ann.run()
        done.set()

    # The signal handlers are installed by run(); run it in the main thread's stead via a timer.
    timer = threading.Timer(0.6, lambda: os.kill(os.getpid(), signal.SIGTERM))
    old = signal.getsignal(signal.SIGTERM)
    timer.start()
    try:
        serve()
    finally:
        signal.signal(signal.SIGTERM, old)
        timer.cancel()
    assert done.is_set() and result["code"] == 0
    assert bird.protocols["announce"] == "down"
    journal = [json.loads(line) for line in open(ann.s.journal)]
    events = [j["event"] for j in journal]
    assert events[0] == "start" and "announce" in events and events[-1] == "stop"
    assert journal[-1]["announced"] is False
    assert not os.path.exists(ann.s.control_socket)
    with pytest.raises(ControlClientError):
        request(ann.s.control_socket, {"cmd": "status"})
