"""The pure half of the L7 proxy: its config schema, routing, header rules, rejections and plans."""

from __future__ import annotations

import pytest

from pktlb.core.config import ConfigError, parse_config
from pktlb.core.l7.headers import Hop, forwarded_element, request_headers, response_headers
from pktlb.core.l7.plan import build_proxy_snapshot
from pktlb.core.l7.rejects import REJECTS, raw_answer, reject_answer
from pktlb.core.l7.routing import host_without_port, parse_target, remove_dot_segments
from pktlb.core.l7.split import engine_part, proxy_part
from pktlb.core.snapshot import DOWN, build_snapshot

BASE = """
[[service]]
name = "web"
vip = "198.19.0.100"
port = 80
mode = "l7"
scheduler = "rr"
{extra}
  [[service.backend]]
  name = "be1"
  address = "198.18.0.11"
  [[service.backend]]
  name = "be2"
  address = "198.18.0.12"
  [[service.backend]]
  name = "api1"
  address = "198.18.0.13"
  port = 8080
"""
ROUTES = """
  [[service.route]]
  name = "api"
  host = "api.example"
  path_prefix = "/v1"
  backends = ["api1"]
  scheduler = "lc"
  [[service.route]]
  name = "static"
  host = "*.cdn.example"
  backends = ["be2"]
  [[service.route]]
  name = "rest"
  backends = ["be1", "be2"]
"""


def config(extra: str = ""):
    return parse_config(BASE.format(extra=extra))


def error_for(extra: str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        config(extra)
    return err.value


def test_l7_service_defaults_and_routes():
    svc = config(ROUTES).services[0]
    assert svc.mode == "l7" and svc.l7 is not None
    assert svc.l7.header_timeout == 10.0 and svc.l7.max_header_bytes == 16384 and svc.l7.hash_key == "connection"
    assert [(r.name, r.host, r.path_prefix, r.backends, r.scheduler) for r in svc.l7.routes] == [
        ("api", "api.example", "/v1", ("api1",), "lc"), ("static", "*.cdn.example", "/", ("be2",), None),
        ("rest", None, "/", ("be1", "be2"), None)]
    # Without routes: one route over every backend (also those added at run time).
    assert [(r.name, r.backends) for r in config().services[0].l7.routes] == [("default", None)]


@pytest.mark.parametrize("extra,key,value", [
    ("  [service.l7]\n  header_timeout = 0", "service[0].l7.header_timeout", 0),
    ("  [service.l7]\n  max_header_bytes = 10", "service[0].l7.max_header_bytes", 10),
    ("  [service.l7]\n  hash_key = \"cookie\"", "service[0].l7.hash_key", "cookie"),
    ("  [service.l7]\n  colour = 1", "service[0].l7.colour", 1),
    ("  [[service.route]]\n  backends = [\"be9\"]", "service[0].route[0].backends[0]", "be9"),
    ("  [[service.route]]\n  host = \"api.example:80\"", "service[0].route[0].host", "api.example:80"),
    ("  [[service.route]]\n  path_prefix = \"api\"", "service[0].route[0].path_prefix", "api"),
    ("  [[service.route]]\n  scheduler = \"fastest\"", "service[0].route[0].scheduler", "fastest"),
    ("  [[service.route]]\n  backends = []", "service[0].route[0].backends", []),
    ("  [[service.route]]\n  name = \"a\"\n  [[service.route]]\n  name = \"a\"", "service[0].route[1].name", "a"),
])
def test_l7_errors_name_key_and_value(extra, key, value):
    err = error_for(extra)
    assert (err.key, err.value) == (key, value)


def test_l7_needs_tcp_and_l4_services_refuse_l7_keys():
    err = error_for('protocol = "udp"')
    assert (err.key, err.value) == ("service[0].protocol", "udp")
    for extra, key in ((ROUTES, "service[0].route"), ("  [service.l7]\n  retries = 1", "service[0].l7")):
        with pytest.raises(ConfigError, match="is for mode l7 \\(the mode is nat\\)") as err:
            parse_config(BASE.format(extra=extra).replace('mode = "l7"', 'mode = "nat"'))
        assert err.value.key == key


def test_engine_and_proxy_split_one_config():
    text = BASE.format(extra="") + BASE.format(extra="").replace('name = "web"', 'name = "dns"').replace(
        'mode = "l7"', 'mode = "nat"').replace("port = 80", "port = 53").replace("198.18.0.1", "198.18.0.2")
    cfg = parse_config(text)
    engine, left_out = engine_part(cfg)
    assert [s.name for s in engine.services] == ["dns"] and left_out == ("web",)
    proxy, others = proxy_part(cfg)
    assert [s.name for s in proxy.services] == ["web"] and others == ("dns",)
    # The packet engine's snapshot never holds an L7 service, even when handed the whole config.
    assert [s.name for s in build_snapshot(cfg).services.values()] == ["dns"]


def test_the_engine_refuses_a_config_with_only_l7_services():
    from pktlb.daemon.forwarder import engine_services

    with pytest.raises(ValueError, match="mode l7: run `pktlb proxy"):
        engine_services(config())


def test_l7_backends_may_share_the_proxy_address():
    # A proxy connects to its backends itself: a backend on the VIP's host (another port) is fine at L7.
    svc = parse_config(BASE.format(extra="").replace("198.18.0.11", "198.19.0.100")).services[0]
    assert svc.backends[0].address == svc.vip


@pytest.mark.parametrize("value,host", [("Example.COM:8080", "example.com"), ("[2001:db8::1]:80", "[2001:db8::1]"),
                                        ("a.example", "a.example"), ("", "")])
def test_host_without_port(value, host):
    assert host_without_port(value) == host


@pytest.mark.parametrize("path,clean", [("/a/./b/../c", "/a/c"), ("/api/../admin", "/admin"), ("/../x", "/x"),
                                        ("/a/b/..", "/a/"), ("/", "/"), ("/a//b", "/a//b")])
def test_remove_dot_segments(path, clean):
    assert remove_dot_segments(path) == clean


def test_parse_target_origin_and_absolute_forms():
    t = parse_target(b"/v1/x?q=1", b"API.example:8080")
    assert (t.host, t.path, t.origin_form) == ("api.example", "/v1/x", b"/v1/x?q=1")
    t = parse_target(b"http://Other.example:81/v1/../x?y", b"api.example")  # absolute form wins over Host
    assert (t.host, t.path, t.origin_form) == ("other.example", "/x", b"/v1/../x?y")
    assert parse_target(b"*", b"a").path == "*"


@pytest.mark.parametrize("host,path,route", [
    ("api.example", "/v1", "api"), ("api.example", "/v1/users", "api"), ("api.example", "/v10", "rest"),
    ("API.example:80", "/v1/../v1/x", "api"), ("api.example", "/v1/../admin", "rest"),
    ("img.cdn.example", "/a.png", "static"), ("a.b.cdn.example", "/", "static"), ("cdn.example", "/", "rest"),
    ("www.example", "/v1", "rest"),
])
def test_routes_first_match_wins(host, path, route):
    plan = build_proxy_snapshot(config(ROUTES)).services["web"]
    chosen = plan.route_for(parse_target(path.encode(), host.encode()))
    assert chosen is not None and chosen.config.name == route


def test_no_route_and_route_pools_follow_states():
    cfg = config(ROUTES.replace('  [[service.route]]\n  name = "rest"\n  backends = ["be1", "be2"]\n', ""))
    snap = build_proxy_snapshot(cfg, states={("web", "be2"): DOWN})
    plan = snap.services["web"]
    assert plan.route_for(parse_target(b"/", b"www.example")) is None
    static = plan.route_for(parse_target(b"/", b"x.cdn.example"))
    assert [b.name for b in static.backends] == ["be2"] and static.eligible == ()
    assert plan.pick(static, 1, {}) is None


def test_pick_avoids_refused_backends_and_hash_key():
    plan = build_proxy_snapshot(config()).services["web"]
    route = plan.routes[0]
    assert [plan.pick(route, 0, {}).name for _ in range(6)] == ["be1", "be2", "api1"] * 2  # rr, config order
    assert plan.pick(route, 7, {}, exclude={"be1", "be2"}).name == "api1"
    assert plan.pick(route, 7, {}, exclude={"be1", "be2", "api1"}) is None
    # hash_key: the 5-tuple (a new connection may hash elsewhere) or the client address alone.
    assert plan.request_hash("10.0.0.1", 1000, "198.19.0.100", 80) != plan.request_hash("10.0.0.1", 1001,
                                                                                          "198.19.0.100", 80)
    by_client = build_proxy_snapshot(config('  [service.l7]\n  hash_key = "client"')).services["web"]
    assert by_client.request_hash("10.0.0.1", 1000, "a", 80) == by_client.request_hash("10.0.0.1", 1001, "b", 81)


def test_request_headers_forwarding_and_hop_by_hop():
    incoming = [(b"Host", b"api.example:8080"), (b"Connection", b"keep-alive, X-Secret"), (b"X-Secret", b"s"),
                (b"Keep-Alive", b"timeout=5"), (b"X-Forwarded-For", b"203.0.113.7"),
                (b"X-Forwarded-For", b"198.51.100.1"), (b"X-Forwarded-Proto", b"https"),
                (b"Forwarded", b"for=203.0.113.7"), (b"Upgrade", b"websocket"), (b"TE", b"trailers"),
                (b"Expect", b"100-continue"), (b"Content-Length", b"3"), (b"user-agent", b"t")]
    out = request_headers(incoming, Hop(client="198.18.1.10", by="198.19.0.100"), also_drop=frozenset({b"expect"}))
    names = [n.lower() for n, _ in out]
    assert not {b"connection", b"x-secret", b"keep-alive", b"upgrade", b"te", b"expect"} & set(names)
    as_dict = dict(out)
    assert as_dict[b"X-Forwarded-For"] == b"203.0.113.7, 198.51.100.1, 198.18.1.10"
    assert as_dict[b"X-Forwarded-Proto"] == b"http"  # the client's claim is replaced: this hop was plain HTTP
    assert as_dict[b"Forwarded"] == b'for=203.0.113.7, for=198.18.1.10;host="api.example:8080";proto=http;by=198.19.0.100'
    assert as_dict[b"Via"] == b"1.1 pktlb"
    assert (b"Host", b"api.example:8080") in out and (b"Content-Length", b"3") in out and (b"user-agent", b"t") in out
    plain = dict(request_headers([(b"Host", b"h")], Hop(client="10.0.0.1"), forwarded=False))
    assert b"X-Forwarded-For" not in plain and plain[b"Via"] == b"1.1 pktlb"


def test_forwarded_quotes_ipv6_and_non_tokens():
    assert forwarded_element(Hop(client="2001:db8::1", by="2001:db8::2"), b"h") == \
        b'for="[2001:db8::1]";host=h;proto=http;by="[2001:db8::2]"'


def test_response_headers_drop_hop_by_hop_and_append_via():
    out = response_headers([(b"Connection", b"close"), (b"Via", b"1.0 cache"), (b"Content-Length", b"2")])
    assert out == [(b"Content-Length", b"2"), (b"Via", b"1.0 cache, 1.1 pktlb")]


def test_every_reject_answer_is_small_and_named():
    for reason, reject in REJECTS.items():
        if reject.status is None:
            with pytest.raises(ValueError):
                reject_answer(reason)
            continue
        status, headers, body = reject_answer(reason)
        assert status == reject.status and (b"Pktlb-Reason", reason.encode()) in headers
        assert body.startswith(str(status).encode()) and len(body) < 200
    raw = raw_answer("too_many_connections")
    assert raw.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and b"Connection: close\r\n" in raw
    assert {REJECTS[r].status for r in ("backend_refused", "backend_reset", "backend_bad_response")} == {502}
    assert (REJECTS["no_backend"].status, REJECTS["backend_timeout"].status) == (503, 504)


def test_request_rules_refuse_by_named_reason_in_order():
    from pktlb.core.l7.rules import RequestHead, first_refusal

    plan = build_proxy_snapshot(config('  [service.l7]\n  max_body_bytes = 10')).services["web"]
    target = parse_target(b"/", b"h")

    def head(method=b"GET", length=None):
        return RequestHead(method=method, target=target, content_length=length, chunked=False, client="10.0.0.1")
    assert first_refusal(plan.rules, head(), 0.0) is None
    assert first_refusal(plan.rules, head(length=10), 0.0) is None
    assert first_refusal(plan.rules, head(length=11), 0.0) == "body_too_large"
    assert first_refusal(plan.rules, head(b"CONNECT", length=11), 0.0) == "not_implemented"  # the first rule wins
