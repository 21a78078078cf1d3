"""The target-tracking scaling policy (pure): synthetic series in, the exact actions and their times out."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from pktlb.core.policy.autoscale import (
    HOLD,
    REASONS,
    SCALE_IN,
    SCALE_OUT,
    BackendView,
    PolicyState,
    Sample,
    ScalingConfig,
    decide,
)
from pktlb.core.policy.autoscale_sim import actions, simulate
from pktlb.core.policy.ewma import Ewma

# target 100 per backend, 10 % tolerance, +4 or +100 % per action, -1 per action,
# 60 s scale-in window, 10 s warm-up, 15 s cool-down; one sample every 5 s.
CFG = ScalingConfig(target=100, min_backends=1, max_backends=10, scale_in_window=60, warmup=10, cooldown=15)
OLD = -math.inf
FLEET = (BackendView("be1", OLD), BackendView("be2", OLD))


def series(value, end: int = 300, period: int = 5) -> list[Sample]:
    return [Sample(t, float(value(t))) for t in range(0, end + 1, period)]


def run(values: list[Sample], config: ScalingConfig = CFG, fleet=FLEET, **kw):
    return actions(simulate(config, values, fleet, **kw))


# -- synthetic series ----------------------------------------------------------------------------------

def test_step_up_then_down():
    # 150 (75 per backend: hold) -> 500 at t=30 (250 per backend: 5 wanted, +3 at once) -> 150 at t=100.
    # The last recommendation of 5 was at t=95; the 60 s window forgets it at t=155; then one backend
    # per 15 s cool-down, newest first, down to ceil(150 / 100) = 2.
    steps = simulate(CFG, series(lambda t: 500 if 30 <= t < 100 else 150), FLEET)
    assert actions(steps) == [(30, SCALE_OUT, 3), (155, SCALE_IN, ("sim3",)), (170, SCALE_IN, ("sim2",)),
                              (185, SCALE_IN, ("sim1",))]
    by_time = {s.decision.time: s.decision for s in steps}
    assert by_time[30].recommendation == 5 and by_time[30].reason == "above_target"
    assert by_time[35].reason == "within_tolerance"  # 500 over 5 backends: on target
    assert by_time[100].reason == "stabilizing" and by_time[100].stabilized == 5
    assert by_time[160].reason == "cooldown"
    assert [b.name for b in steps[-1].backends] == ["be1", "be2"]


def test_ramp_adds_one_backend_each_time_the_band_is_left():
    # 100 + 4 t per second, flat at 700 from t=150.  2 backends leave the band above 220 (t=35);
    # 3 above 330 (t=60: 340); 4 above 440 (t=90: 460); 5 above 550 (t=115: 560); 6 above 660 (t=145: 680).
    # Exactly 1.1 x target (t=30, 85, 140) is still within the band.
    assert run(series(lambda t: min(100 + 4 * t, 700))) == [
        (35, SCALE_OUT, 1), (60, SCALE_OUT, 1), (90, SCALE_OUT, 1), (115, SCALE_OUT, 1), (145, SCALE_OUT, 1)]


def test_spike_scales_out_within_the_rate_cap_then_back_after_the_window():
    # One sample of 1000 at t=50: 10 recommended, the cap is max(4, 100 % of 2) = 4.
    steps = simulate(CFG, series(lambda t: 1000 if t == 50 else 150), FLEET)
    assert actions(steps) == [(50, SCALE_OUT, 4), (110, SCALE_IN, ("sim4",)), (125, SCALE_IN, ("sim3",)),
                              (140, SCALE_IN, ("sim2",)), (155, SCALE_IN, ("sim1",))]
    assert steps[10].decision.reason == "rate_capped" and steps[10].decision.recommendation == 10


def test_spike_absorbed_by_the_ewma():
    # Base 180 (90 per backend).  A one-sample spike to 330 (1.65 x target for 2 backends) scales out
    # unsmoothed; an EWMA with a 20 s time constant turns it into 180 + (1 - e^-0.25) * 150 = 213,
    # 107 per backend, within the band: no action.
    raw = series(lambda t: 330 if t == 50 else 180, end=130)
    assert run(raw) == [(50, SCALE_OUT, 2), (110, SCALE_IN, ("sim2",)), (125, SCALE_IN, ("sim1",))]
    ewma, smoothed = Ewma(tau=20), []
    for s in raw:
        ewma = ewma.update(s.value, s.time)
        smoothed.append(Sample(s.time, ewma.value))
    assert max(s.value for s in smoothed) == pytest.approx(180 + (1 - math.exp(-0.25)) * 150)
    assert run(smoothed) == []


def test_oscillation_is_held_by_the_scale_in_window():
    # 150 and 300 alternating every 10 s: one scale-out at the first high, then the window always
    # holds a recommendation of 3 and nothing moves.
    osc = series(lambda t: 300 if (t // 10) % 2 else 150)
    assert run(osc) == [(10, SCALE_OUT, 1)]
    # Without the window and the cool-down the fleet flaps with the load.
    flapping = replace(CFG, scale_in_window=0, cooldown=0)
    assert run(osc[:13], flapping) == [(10, SCALE_OUT, 1), (20, SCALE_IN, ("sim1",)), (30, SCALE_OUT, 1),
                                       (40, SCALE_IN, ("sim2",)), (50, SCALE_OUT, 1), (60, SCALE_IN, ("sim3",))]


def test_noise_inside_the_tolerance_band_moves_nothing():
    rng = random.Random(7)
    noisy = series(lambda t: 200 * (1 + rng.uniform(-0.09, 0.09)))
    assert run(noisy) == []


def test_noisy_step_scales_out_once_at_the_step():
    rng = random.Random(11)
    noisy = series(lambda t: (150 if t < 60 else 450) * (1 + rng.uniform(-0.05, 0.05)), end=200)
    assert run(noisy) == [(60, SCALE_OUT, 3)]  # 450 +- 5 % over 100: 5 backends (ceil of 4.3 to 4.7)


# -- single rules --------------------------------------------------------------------------------------

def one(config, sample_value, fleet, now=100.0, state=None, per_backend=None):
    sample = None if sample_value is None else Sample(now, sample_value, per_backend or {})
    return decide(config, state or PolicyState(started=0.0), sample, fleet, now)


def test_bounds_apply_without_a_sample_and_without_waiting():
    d, _ = one(replace(CFG, min_backends=3), None, FLEET, state=PolicyState(last_action=99.0))
    assert (d.action, d.reason, d.add, d.desired) == (SCALE_OUT, "below_min", 1, 3)
    fleet = tuple(BackendView(f"be{i}", OLD) for i in range(1, 5))
    d, _ = one(replace(CFG, max_backends=2), 500.0, fleet)
    assert (d.action, d.reason, d.remove) == (SCALE_IN, "above_max", ("be4", "be3"))


def test_recommendation_is_clamped_and_the_reason_says_why():
    fleet = tuple(BackendView(f"be{i}", OLD) for i in range(1, 11))
    d, _ = one(CFG, 5000.0, fleet)
    assert (d.action, d.reason, d.recommendation) == (HOLD, "at_max", 10)
    d, _ = one(replace(CFG, min_backends=2), 20.0, FLEET)
    assert (d.action, d.reason) == (HOLD, "at_min")
    d, _ = one(CFG, 90.0, FLEET[:1])  # 0.9: inside the band
    assert d.reason == "within_tolerance"
    d, _ = one(CFG, 50.0, FLEET[:1])  # ceil(0.5) = 1: rounds to the current count
    assert d.reason == "no_change"


def test_percent_cap_beats_the_step_when_larger():
    fleet = tuple(BackendView(f"be{i}", OLD) for i in range(1, 7))
    cfg = replace(CFG, max_backends=40, scale_out_step=2, scale_out_percent=50)
    d, _ = one(cfg, 3000.0, fleet)  # 30 wanted; max(2, 50 % of 6 = 3) = 3
    assert (d.add, d.reason) == (3, "rate_capped")


def test_a_warming_backend_counts_for_scale_out_and_is_not_added_twice():
    # t=0: 300 over 2 backends -> 3; the new backend warms up until t=10, and at t=5 the same load
    # spread over 3 is on target: no second scale-out for the capacity already on its way.
    steps = simulate(CFG, [Sample(0, 300), Sample(5, 300), Sample(10, 300)], FLEET)
    assert [s.decision.action for s in steps] == [SCALE_OUT, HOLD, HOLD]
    assert steps[1].decision.ready == 2 and steps[1].decision.current == 3


def test_warming_backends_values_are_set_aside():
    # be3 was just added and has no active flows yet: the mean over the ready backends (150) is the
    # load per backend, not 300 / 3 = 100.
    fleet = FLEET + (BackendView("be3", 95.0),)
    d, _ = one(CFG, 300.0, fleet, per_backend={"be1": 150, "be2": 150, "be3": 0})
    assert (d.per_backend, d.ready, d.current, d.action, d.add) == (150, 2, 3, SCALE_OUT, 2)
    # Without per-backend values the total is spread over every serving backend.
    d, _ = one(CFG, 300.0, fleet)
    assert (d.per_backend, d.action) == (100, HOLD)


def test_no_scale_in_while_a_backend_warms_up():
    fleet = FLEET + (BackendView("be3", 95.0),)
    d, _ = one(CFG, 10.0, fleet)
    assert (d.action, d.reason) == (HOLD, "warming_up")
    d, _ = one(CFG, 10.0, fleet, now=105.0)  # be3 ready at 105
    assert (d.action, d.remove) == (SCALE_IN, ("be3",))


def test_no_ready_backend_holds():
    d, state = one(CFG, 500.0, (BackendView("be1", 95.0),))
    assert (d.action, d.reason, state.recommendations) == (HOLD, "no_ready_backend", ())


def test_first_scale_in_waits_for_a_whole_window():
    d, state = decide(CFG, PolicyState(), Sample(0, 10), FLEET, 0.0)
    assert (d.reason, d.stabilized) == ("stabilizing", 2)
    d, _ = decide(CFG, state, Sample(60, 10), FLEET, 60.0)
    assert (d.action, d.remove) == (SCALE_IN, ("be2",))


def test_cooldown_blocks_scale_out_too():
    d, _ = one(CFG, 500.0, FLEET, state=PolicyState(last_action=90.0, started=0.0))
    assert (d.action, d.reason) == (HOLD, "cooldown")
    d, _ = one(CFG, 500.0, FLEET, state=PolicyState(last_action=85.0, started=0.0))
    assert d.action == SCALE_OUT


def test_protection_and_the_scale_in_switch():
    fleet = (BackendView("be1", OLD, protected=True), BackendView("be2", 50.0, protected=True))
    d, _ = one(CFG, 10.0, fleet)
    assert (d.action, d.reason) == (HOLD, "all_protected")
    fleet = (BackendView("be1", OLD), BackendView("be2", 50.0, protected=True))
    d, _ = one(CFG, 10.0, fleet)
    assert d.remove == ("be1",)  # be2 is newer but protected
    d, _ = one(replace(CFG, scale_in_enabled=False), 10.0, FLEET)
    assert (d.action, d.reason) == (HOLD, "scale_in_disabled")


def test_removal_orders():
    fleet = (BackendView("be1", OLD), BackendView("be2", 10.0), BackendView("be3", 20.0))
    loads = {"be1": 5.0, "be2": 1.0, "be3": 9.0}
    d, _ = one(replace(CFG, scale_in_step=2), 10.0, fleet, per_backend=loads)
    assert d.remove == ("be3", "be2")  # newest first
    d, _ = one(replace(CFG, scale_in_step=2, removal="least_loaded"), 10.0, fleet, per_backend=loads)
    assert d.remove == ("be2", "be1")


def test_draining_backends_are_not_counted():
    fleet = FLEET + (BackendView("be3", OLD, draining=True),)
    d, _ = one(CFG, 200.0, fleet)
    assert (d.current, d.action, d.reason) == (2, HOLD, "within_tolerance")


@pytest.mark.parametrize(("kw", "message"), [
    ({"target": 0}, "target = 0: expected a number > 0"),
    ({"target": -1.5}, "target = -1.5"),
    ({"target": math.nan}, "target = nan"),
    ({"min_backends": 5, "max_backends": 2}, "min_backends = 5 > max_backends = 2"),
    ({"min_backends": 0}, "min_backends = 0: expected an integer >= 1"),
    ({"tolerance": 1.0}, "tolerance = 1.0"),
    ({"warmup": -1}, "warmup = -1"),
    ({"removal": "oldest"}, "removal = 'oldest': expected one of newest, least_loaded"),
])
def test_bad_config_is_named(kw, message):
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        ScalingConfig(**{"target": 100, **kw})


def test_every_reason_used_is_documented():
    reasons = set()
    for value in (0, 50, 90, 150, 500, 5000):
        for fleet in (FLEET, FLEET + (BackendView("w", 99.0),), ()):
            for state in (PolicyState(), PolicyState(last_action=99.0, started=0.0)):
                reasons.add(one(CFG, value, fleet, state=state)[0].reason)
    assert reasons <= set(REASONS)


# -- the EWMA ------------------------------------------------------------------------------------------

def test_ewma_time_constant():
    e = Ewma(tau=10).update(0.0, 0.0)
    assert e.value == 0.0
    e = e.update(100.0, 10.0)  # one time constant: 63.2 % of the step
    assert e.value == pytest.approx(100 * (1 - math.exp(-1)))
    # Irregular periods give the same result as regular ones over the same time.
    a = Ewma(tau=10).update(0, 0).update(100, 5).update(100, 10)
    assert a.value == pytest.approx(e.value)


def test_ewma_edges():
    assert Ewma(tau=0).update(1, 0).update(7, 1).value == 7  # no smoothing
    e = Ewma(tau=5).update(10, 3).update(50, 3)  # no time passed: no weight
    assert (e.value, e.time) == (10, 3)
    e2 = Ewma(tau=5).update(10, 3).update(50, 2)  # a clock going back is not a negative weight
    assert (e2.value, e2.time) == (10, 3)
    with pytest.raises(ValueError, match="tau -1"):
        Ewma(tau=-1)
