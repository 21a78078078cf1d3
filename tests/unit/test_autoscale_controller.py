"""The auto-scaling loop against fakes: a fake clock, a fake engine that is metric source and actuator."""

from __future__ import annotations

import math

import pytest

from pktlb.core.policy.autoscale import ScalingConfig
from pktlb.daemon.autoscale.controller import Controller, LoopSettings
from pktlb.daemon.autoscale.interfaces import AutoscaleError, Reading
from pktlb.daemon.autoscale.journal import Journal

POLICY = ScalingConfig(target=100, min_backends=1, max_backends=6, scale_in_window=20, warmup=4, cooldown=5)
SETTINGS = LoopSettings(metric="new_flows_per_s", period=1.0, smoothing=0.0, drain_timeout=10.0)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.t += seconds


class FakeEngine:
    """Demand is spread evenly over the 'up' backends; a drained backend's flows end ``flow_life`` s
    after its drain began (never, with math.inf)."""

    def __init__(self, clock: FakeClock, demand, names=("be1", "be2"), flow_life: float = 3.0) -> None:
        self.clock, self.demand, self.flow_life = clock, demand, flow_life
        self.state = dict.fromkeys(names, "up")
        self.drained_at: dict[str, float] = {}
        self.created = 0
        self.calls: list[tuple[str, str]] = []
        self.fail_read = self.fail_add = False

    def read(self, now: float) -> Reading:
        if self.fail_read:
            raise AutoscaleError("engine: no engine control socket")
        up = [n for n, s in self.state.items() if s == "up"]
        total = float(self.demand(now))
        each = {n: total / len(up) if n in up else 0.0 for n in self.state}
        return Reading(now, {"new_flows_per_s": total, "active_flows": None, "pps": None, "cpu": None},
                       {"new_flows_per_s": each}, dict(self.state))

    def add_backend(self) -> str:
        if self.fail_add:
            raise AutoscaleError("no standby backend left")
        self.created += 1
        name = f"as{self.created}"
        self.state[name] = "up"
        self.calls.append(("add", name))
        return name

    def drain_backend(self, name: str) -> None:
        self.state[name] = "drain"
        self.drained_at[name] = self.clock.now()
        self.calls.append(("drain", name))

    def active_flows(self, name: str) -> int:
        left = self.drained_at[name] + self.flow_life - self.clock.now()
        return 7 if math.isinf(left) else max(0, math.ceil(left * 10))

    def remove_backend(self, name: str) -> None:
        del self.state[name]
        self.calls.append(("remove", name))


def make(demand, **kw):
    clock = FakeClock()
    engine = FakeEngine(clock, demand, **{k: v for k, v in kw.items() if k in ("names", "flow_life")})
    journal = Journal()
    ctl = Controller(kw.get("policy", POLICY), kw.get("settings", SETTINGS), engine, engine, clock, journal,
                     initial=list(engine.state), protected=kw.get("protected", ()))
    return ctl, engine, journal


def events(journal, *types):
    return [(r["time"], r["type"], r.get("backends") or r.get("backend"), r.get("why"))
            for r in journal.records if r["type"] in types]


def test_step_load_scales_out_then_drains_and_removes():
    # 150/s until t=10, 450/s until t=30, then 150/s again; 2 backends, target 100 each.
    ctl, engine, journal = make(lambda t: 450 if 10 <= t < 30 else 150)
    ctl.run(duration=70)
    assert events(journal, "scale_out", "scale_in", "removed") == [
        (10.0, "scale_out", ["as1", "as2", "as3"], None),  # 225 per backend: ceil(2 x 2.25) = 5
        (49.0, "scale_in", ["as3"], None),  # last recommendation of 5 at t=29, 20 s window; newest first
        (52.0, "removed", "as3", "drained"),  # its flows ended 3 s after the drain began
        (54.0, "scale_in", ["as2"], None),  # 5 s cool-down after t=49
        (57.0, "removed", "as2", "drained"),
        (59.0, "scale_in", ["as1"], None),
        (62.0, "removed", "as1", "drained"),
    ]
    assert engine.calls == [("add", "as1"), ("add", "as2"), ("add", "as3"), ("drain", "as3"), ("remove", "as3"),
                            ("drain", "as2"), ("remove", "as2"), ("drain", "as1"), ("remove", "as1")]
    samples = [r for r in journal.records if r["type"] == "sample"]
    assert len(samples) == 71 and samples[0]["time"] == 0.0 and samples[-1]["time"] == 70.0
    at = {r["time"]: r for r in samples}
    assert at[10.0]["decision"]["desired"] == 5 and at[10.0]["decision"]["recommendation"] == 5
    # While as1-as3 warm up (4 s) only be1 and be2 are measured: 450 / 5 = 90 each.
    assert (at[11.0]["backends"], at[11.0]["ready"], at[11.0]["decision"]["per_backend"]) == (5, 2, 90.0)
    assert at[30.0]["decision"]["reason"] == "stabilizing"
    assert (at[50.0]["backends"], at[50.0]["draining"]) == (4, 1)
    assert (at[52.0]["backends"], at[52.0]["draining"]) == (4, 0)
    assert journal.records[0]["type"] == "start" and journal.records[0]["backends"] == ["be1", "be2"]
    assert journal.records[-1] == {"type": "end", "time": 70.0, "backends": ["be1", "be2"], "samples": 71}


def test_a_drain_that_does_not_end_is_cut_at_the_timeout():
    ctl, engine, journal = make(lambda t: 50, flow_life=math.inf)
    ctl.run(duration=40)
    # 50/s over 2: 1 wanted; the first scale-in needs a whole 20 s window; be2 is the newest by name.
    assert events(journal, "scale_in", "removed") == [(20.0, "scale_in", ["be2"], None),
                                                      (30.0, "removed", "be2", "drain_timeout")]
    removed = next(r for r in journal.records if r["type"] == "removed")
    assert removed["flows_left"] > 0 and removed["after_s"] == 10.0


def test_protected_backends_stay():
    ctl, engine, journal = make(lambda t: 50, protected=("be1", "be2"))
    ctl.run(duration=30)
    assert events(journal, "scale_in", "removed") == []
    assert journal.records[0]["protected"] == ["be1", "be2"]
    assert {r["decision"]["reason"] for r in journal.records if r["type"] == "sample" and r["time"] >= 20} == \
        {"all_protected"}


def test_stopping_lets_a_drain_finish():
    ctl, engine, journal = make(lambda t: 50)
    ctl.run(duration=20)  # the scale-in at t=20 is the last step
    assert events(journal, "scale_in", "removed") == [(20.0, "scale_in", ["be2"], None),
                                                      (23.0, "removed", "be2", "drained")]
    assert journal.records[-1]["type"] == "end" and journal.records[-1]["backends"] == ["be1"]


def test_errors_are_journaled_and_the_loop_goes_on():
    ctl, engine, journal = make(lambda t: 500)
    engine.fail_read = True
    d = ctl.step()
    assert (d.action, d.reason) == ("hold", "no_sample")
    engine.fail_read, engine.fail_add = False, True
    ctl.clock.sleep(1)
    d = ctl.step()
    assert d.action == "scale_out"
    errors = [(r["what"], r["error"]) for r in journal.records if r["type"] == "error"]
    assert errors == [("read", "engine: no engine control socket"), ("scale_out", "no standby backend left")]
    assert events(journal, "scale_out") == [(1.0, "scale_out", None, None)]  # nothing was added
    assert sorted(ctl.fleet) == ["be1", "be2"]


def test_the_engine_view_wins():
    ctl, engine, journal = make(lambda t: 200)
    ctl.step()
    del engine.state["be2"]  # an operator removed it
    engine.state["op1"] = "up"  # and added another
    engine.state["be1"] = "drain"  # and drained be1
    ctl.clock.sleep(1)
    ctl.step()
    assert events(journal, "vanished", "adopted") == [(1.0, "vanished", "be2", None), (1.0, "adopted", "op1", None)]
    assert ctl.fleet["op1"].protected and ctl.fleet["be1"].draining
    assert "be1" not in ctl.drains  # not ours to remove


def test_loop_settings_are_checked():
    with pytest.raises(ValueError, match="metric 'rps': expected one of new_flows_per_s, active_flows, pps, cpu"):
        LoopSettings(metric="rps")
    with pytest.raises(ValueError, match="period = 0"):
        LoopSettings(metric="cpu", period=0)
    with pytest.raises(ValueError, match="drain_timeout = -1"):
        LoopSettings(metric="cpu", drain_timeout=-1)
