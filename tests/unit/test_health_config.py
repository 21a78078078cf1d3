"""Per-backend health settings: [service.backend.health] overrides the service's [service.health] key by key."""

from __future__ import annotations

import pytest

from pktlb.core.config import ConfigError, HealthConfig, parse_config
from pktlb.core.health import (
    DOWN,
    INIT,
    L3OK,
    L3TOUT,
    UP,
    CheckResult,
    HealthBook,
    backend_health,
    check_targets,
)

SERVICE = """
[lb]
address = "198.18.0.2"
[[service]]
name = "web"
vip = "198.19.0.100"
port = 80
mode = "{mode}"
[service.health]
checks = ["icmp", "http"]
interval = 0.5
timeout = 0.4
rise = 2
fall = 3
http_path = "/health"
[[service.backend]]
name = "be1"
address = "198.18.0.11"
[[service.backend]]
name = "be2"
address = "198.18.0.12"
{be2_health}
[[service.backend]]
name = "be3"
address = "198.18.0.13"
"""


def config(be2_health: str = "", mode: str = "nat"):
    table = f"[service.backend.health]\n{be2_health}" if be2_health else ""
    return parse_config(SERVICE.format(be2_health=table, mode=mode))


def test_a_backend_without_a_table_uses_the_service_settings() -> None:
    cfg = config()
    svc = cfg.services[0]
    assert all(be.health is None for be in svc.backends)
    assert backend_health(svc, svc.backends[1]) is svc.health
    assert svc.health == HealthConfig(checks=("icmp", "http"), interval=0.5, timeout=0.4, rise=2, fall=3)


def test_given_keys_override_and_the_others_are_inherited() -> None:
    svc = config('rise = 5\nhttp_path = "/ready"').services[0]
    be2 = backend_health(svc, svc.backends[1])
    assert (be2.rise, be2.http_path) == (5, "/ready")
    # Everything the backend did not set comes from the service, not from the built-in defaults.
    assert (be2.checks, be2.interval, be2.timeout, be2.fall) == (("icmp", "http"), 0.5, 0.4, 3)
    assert backend_health(svc, svc.backends[0]) is svc.health  # the other backends are untouched


def test_check_targets_follow_each_backends_settings() -> None:
    cfg = config('checks = ["tcp"]\ninterval = 0.2\ntimeout = 0.1')
    targets = {(t.backend, t.check): t for t in check_targets(cfg)}
    assert sorted(targets) == [("be1", "http"), ("be1", "icmp"), ("be2", "tcp"), ("be3", "http"), ("be3", "icmp")]
    assert (targets[("be2", "tcp")].interval, targets[("be2", "tcp")].timeout) == (0.2, 0.1)
    assert (targets[("be1", "icmp")].interval, targets[("be1", "icmp")].timeout) == (0.5, 0.4)
    assert targets[("be3", "http")].http_path == "/health"


def test_an_empty_check_list_exempts_one_backend() -> None:
    cfg = config("checks = []")
    book = HealthBook.from_config(cfg, now=0.0)
    assert book.states[("web", "be2")].state == UP and book.states[("web", "be2")].checks == ()
    assert book.states[("web", "be1")].state == INIT
    assert [t.backend for t in check_targets(cfg)].count("be2") == 0


def test_the_state_machine_uses_the_backends_rise_and_fall() -> None:
    cfg = parse_config(SERVICE.format(mode="nat", be2_health="[service.backend.health]\nfall = 1\nrise = 4")
                       .replace('checks = ["icmp", "http"]', 'checks = ["icmp"]'))
    book = HealthBook.from_config(cfg, now=0.0)
    ok, lost = CheckResult("icmp", L3OK, rtt=0.001), CheckResult("icmp", L3TOUT)
    for backend in ("be1", "be2"):
        book.feed("web", backend, ok, 1.0)
    assert book.feed("web", "be1", lost, 2.0) is None  # fall 3: one loss is not enough
    event = book.feed("web", "be2", lost, 2.0)  # fall 1: one loss takes be2 out
    assert event is not None and (event.backend, event.new) == ("be2", DOWN)
    changes = [book.feed("web", "be2", ok, 3.0 + i) for i in range(4)]
    assert changes[:3] == [None, None, None] and changes[3] is not None and changes[3].new == UP  # rise 4


def test_encapsulated_icmp_can_be_set_for_one_tunnel_backend() -> None:
    targets = {(t.backend, t.check): t for t in check_targets(config("encapsulated_icmp = true", mode="tunnel"))}
    assert targets[("be2", "icmp")].encapsulated
    assert not targets[("be1", "icmp")].encapsulated and not targets[("be3", "icmp")].encapsulated


def test_a_backend_override_that_cannot_work_names_the_backend() -> None:
    with pytest.raises(ValueError, match="service web backend be2: health.encapsulated_icmp needs mode tunnel"):
        check_targets(config("encapsulated_icmp = true"))


@pytest.mark.parametrize(("table", "key", "expected"), [
    ("rise = 0", "service[0].backend[1].health.rise", "an integer from 1 to 100"),
    ("fall = true", "service[0].backend[1].health.fall", "an integer from 1 to 100"),
    ("interval = -1", "service[0].backend[1].health.interval", "a positive number of seconds"),
    ('checks = ["icmp", "udp"]', "service[0].backend[1].health.checks[1]", "one of icmp, tcp, http"),
    ("retries = 3", "service[0].backend[1].health.retries", "one of the known keys"),
    ("http_status = 99", "service[0].backend[1].health.http_status", "an integer from 100 to 599"),
])
def test_errors_name_the_key_path(table: str, key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(table)
    assert err.value.key == key and expected in err.value.expected


def test_health_must_be_a_table() -> None:
    text = SERVICE.format(mode="nat", be2_health='health = "fast"')
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert err.value.key == "service[0].backend[1].health" and err.value.expected == "a table"
