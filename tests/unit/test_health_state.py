"""The per-backend health state machine, driven by a fake clock (no sockets)."""

from __future__ import annotations

import pytest

from pktlb.core.config import parse_config
from pktlb.core.health import (
    DOWN,
    INIT,
    L3OK,
    L3TOUT,
    L4CON,
    L4OK,
    L7OK,
    L7STS,
    UP,
    CheckResult,
    HealthBook,
    HealthState,
    check_targets,
    forwarding_state,
)


class FakeClock:
    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def tick(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


OK_ICMP = CheckResult("icmp", L3OK, rtt=0.0002)
TOUT_ICMP = CheckResult("icmp", L3TOUT, "no echo reply within 1 s")
OK_TCP = CheckResult("tcp", L4OK, rtt=0.0005)
REFUSED = CheckResult("tcp", L4CON, "connection refused")


def feed_all(state: HealthState, clock: FakeClock, results: list[CheckResult]) -> list:
    return [state.feed(r, clock.tick()) for r in results]


def test_result_ok_follows_status_and_rejects_unknowns() -> None:
    assert OK_ICMP.ok and not TOUT_ICMP.ok and CheckResult("http", L7OK).ok
    assert not CheckResult("http", L7STS, "status 503, expected 200").ok
    with pytest.raises(ValueError, match="unknown check status"):
        CheckResult("tcp", "L4MAYBE")
    with pytest.raises(ValueError, match="unknown check type"):
        CheckResult("udp", L4OK)


def test_starts_in_init_which_is_served() -> None:
    state = HealthState("web", "be1", ("icmp",), rise=2, fall=3, since=5.0)
    assert state.state == INIT and state.forwarding == UP and state.last_change == 5.0
    assert state.summary()["checks"][0]["status"] == "INI"


def test_init_goes_up_on_first_success_and_down_on_first_failure() -> None:
    clock = FakeClock()
    up = HealthState("web", "a", ("icmp",), rise=2, fall=3)
    event = up.feed(OK_ICMP, clock.tick())
    assert event is not None and (event.old, event.new) == (INIT, UP) and not event.forwarding_changed
    down = HealthState("web", "b", ("icmp",), rise=2, fall=3)
    event = down.feed(TOUT_ICMP, clock.tick())
    assert event is not None and (event.old, event.new) == (INIT, DOWN) and event.forwarding_changed
    assert event.status == L3TOUT and "no echo reply" in event.reason


def test_goes_down_after_exactly_fall_failures_and_up_after_rise_successes() -> None:
    clock = FakeClock()
    state = HealthState("web", "be1", ("icmp",), rise=2, fall=3)
    state.feed(OK_ICMP, clock.tick())
    assert feed_all(state, clock, [TOUT_ICMP, TOUT_ICMP]) == [None, None]
    assert state.state == UP
    down_at = clock.tick()
    event = state.feed(TOUT_ICMP, down_at)
    assert event is not None and (event.old, event.new, event.at) == (UP, DOWN, down_at)
    assert "3 failures in a row" in event.reason and state.last_change == down_at
    assert state.feed(OK_ICMP, clock.tick()) is None and state.state == DOWN
    event = state.feed(OK_ICMP, clock.tick())
    assert event is not None and (event.old, event.new) == (DOWN, UP) and "all checks passed" in event.reason
    assert state.changes == 3 and state.last_rtt == OK_ICMP.rtt


def test_a_success_resets_the_failure_count() -> None:
    clock = FakeClock()
    state = HealthState("web", "be1", ("icmp",), rise=2, fall=3)
    state.feed(OK_ICMP, clock.tick())
    events = feed_all(state, clock, [TOUT_ICMP, TOUT_ICMP, OK_ICMP, TOUT_ICMP, TOUT_ICMP])
    assert events == [None] * 5 and state.state == UP


def test_flapping_backend_does_not_flap_the_state() -> None:
    clock = FakeClock()
    state = HealthState("web", "be1", ("icmp",), rise=2, fall=3)
    state.feed(OK_ICMP, clock.tick())
    events = feed_all(state, clock, [TOUT_ICMP, OK_ICMP] * 20)
    assert all(e is None for e in events) and state.state == UP and state.changes == 1
    # Once down, alternating results never reach rise=2 successes in a row: it stays down.
    feed_all(state, clock, [TOUT_ICMP] * 3)
    events = feed_all(state, clock, [OK_ICMP, TOUT_ICMP] * 20)
    assert all(e is None for e in events) and state.state == DOWN


def test_rise_and_fall_of_one_react_to_every_result() -> None:
    clock = FakeClock()
    state = HealthState("web", "be1", ("tcp",), rise=1, fall=1)
    changes = [e.new for e in feed_all(state, clock, [OK_TCP, REFUSED, OK_TCP, REFUSED]) if e]
    assert changes == [UP, DOWN, UP, DOWN]


def test_several_checks_up_only_when_all_are_up() -> None:
    clock = FakeClock()
    state = HealthState("web", "be1", ("icmp", "tcp"), rise=2, fall=2)
    assert state.feed(OK_ICMP, clock.tick()) is None and state.state == INIT  # tcp still unknown
    event = state.feed(OK_TCP, clock.tick())
    assert event is not None and event.new == UP and "icmp L3OK" in event.reason and "tcp L4OK" in event.reason
    # ICMP keeps answering while the service is stopped: the TCP check alone takes the backend down.
    feed_all(state, clock, [OK_ICMP, REFUSED, OK_ICMP])
    event = state.feed(REFUSED, clock.tick())
    assert event is not None and event.new == DOWN and event.status == L4CON and "refused" in event.reason
    # Coming back needs rise good TCP results; the failing ICMP meanwhile keeps it down.
    feed_all(state, clock, [TOUT_ICMP, TOUT_ICMP, OK_TCP, OK_TCP])
    assert state.state == DOWN and "icmp L3TOUT" in state.current_problem()
    assert "tcp" not in state.current_problem()
    assert state.feed(OK_ICMP, clock.tick()) is None
    event = state.feed(OK_ICMP, clock.tick())
    assert event is not None and event.new == UP


def test_events_only_on_change() -> None:
    clock = FakeClock()
    state = HealthState("web", "be1", ("icmp",), rise=2, fall=3)
    events = [e for e in feed_all(state, clock, [OK_ICMP] * 10 + [TOUT_ICMP] * 10 + [OK_ICMP] * 10) if e]
    assert [(e.old, e.new) for e in events] == [(INIT, UP), (UP, DOWN), (DOWN, UP)]
    assert str(events[1]).startswith("web/be1: up -> down (icmp L3TOUT")


def test_result_for_an_unconfigured_check_is_a_bug() -> None:
    state = HealthState("web", "be1", ("icmp",))
    with pytest.raises(ValueError, match="only icmp"):
        state.feed(OK_TCP, 1.0)


def test_no_checks_means_always_up() -> None:
    state = HealthState("web", "be1", ())
    assert state.state == UP and state.reason == "no checks configured"


def test_bad_rise_fall_rejected() -> None:
    with pytest.raises(ValueError, match="rise and fall"):
        HealthState("web", "be1", ("icmp",), rise=0)


def test_forwarding_state_maps_init_to_up() -> None:
    assert [forwarding_state(s) for s in (INIT, UP, DOWN)] == [UP, UP, DOWN]


CONFIG = """
[lb]
address = "198.18.0.2"
[[service]]
name = "web"
vip = "198.19.0.100"
port = 80
mode = "tunnel"
[service.health]
checks = ["icmp", "http"]
interval = 0.2
timeout = 0.5
rise = 2
fall = 3
http_path = "/ok"
encapsulated_icmp = true
[[service.backend]]
name = "be1"
address = "198.18.0.11"
port = 80
[[service.backend]]
name = "be2"
address = "198.18.0.12"
port = 80
"""


def test_book_routes_results_and_gives_snapshot_states() -> None:
    config = parse_config(CONFIG)
    book = HealthBook.from_config(config, now=0.0)
    assert book.forwarding_states() == {("web", "be1"): UP, ("web", "be2"): UP}
    for t in (1.0, 2.0, 3.0):
        book.feed("web", "be2", CheckResult("http", L7STS, "status 503, expected 200"), t)
    assert book.forwarding_states()[("web", "be2")] == DOWN
    assert book.feed("web", "gone", OK_ICMP, 4.0) is None
    rows = {r["backend"]: r for r in book.summaries()}
    assert rows["be2"]["state"] == DOWN and rows["be2"]["checks"][1]["status"] == L7STS


def test_check_targets_from_config() -> None:
    targets = check_targets(parse_config(CONFIG))
    assert [(t.backend, t.check) for t in targets] == [("be1", "icmp"), ("be1", "http"), ("be2", "icmp"),
                                                      ("be2", "http")]
    icmp = targets[0]
    assert icmp.encapsulated and icmp.vip == "198.19.0.100" and icmp.source == "198.18.0.2"
    assert (icmp.interval, icmp.timeout) == (0.2, 0.5)
    assert not targets[1].encapsulated and targets[1].http_path == "/ok" and targets[1].port == 80


def test_encapsulated_icmp_needs_tunnel_mode() -> None:
    with pytest.raises(ValueError, match="needs mode tunnel"):
        check_targets(parse_config(CONFIG.replace('mode = "tunnel"', 'mode = "nat"')))
