"""Filtering at the balancer: token buckets, method and path allow-lists, refused before any backend sees them."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner

from pktlb.cli import main
from pktlb.core.config import ConfigError, parse_config
from pktlb.core.l7.ratelimit import RateLimit, TokenBuckets
from pktlb.core.l7.routing import parse_target
from pktlb.core.l7.rules import RequestHead, first_refusal, request_rules
from tests.unit.l7_support import get, read_response, request, run, running_proxy


def test_token_bucket_allows_the_burst_then_the_rate():
    buckets = TokenBuckets(RateLimit(rate=2.0, burst=3))
    assert [buckets.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.allow("b", 0.0)  # another client has its own bucket
    assert buckets.allow("a", 0.5) and not buckets.allow("a", 0.5)  # 0.5 s at 2/s: one token
    assert [buckets.allow("a", 10.0) for _ in range(4)] == [True, True, True, False]  # refilled, never past burst


def test_token_bucket_table_is_bounded():
    buckets = TokenBuckets(RateLimit(rate=1.0, burst=1, max_clients=100))
    for i in range(1000):
        buckets.allow(f"198.18.{i // 256}.{i % 256}", 0.0)
    assert len(buckets.buckets) == 100 and buckets.evicted == 900


def l7(table: str):
    text = f'[[service]]\nname = "web"\nvip = "198.19.0.100"\nport = 80\nmode = "l7"\n  [service.l7.filter]\n{table}'
    return parse_config(text).services[0].l7


def head(method: bytes, path: bytes) -> RequestHead:
    return RequestHead(method=method, target=parse_target(path, b"x"), content_length=None, chunked=False,
                       client="198.18.1.10")


def test_method_and_path_allow_lists():
    rules = request_rules(l7('  methods = ["GET", "HEAD"]\n  paths = ["/api", "/static/"]\n'))
    cases = [(b"GET", b"/api"), (b"GET", b"/api/v1"), (b"HEAD", b"/static/a.css"), (b"POST", b"/api"),
             (b"GET", b"/apix"), (b"GET", b"/static/../admin"), (b"GET", b"/"), (b"CONNECT", b"/api")]
    assert [first_refusal(rules, head(m, p), 0.0) for m, p in cases] == [
        None, None, None, "method_not_allowed", "path_not_allowed", "path_not_allowed", "path_not_allowed",
        "not_implemented"]


@pytest.mark.parametrize("table, key", [
    ('  methods = ["get"]\n', r"filter\.methods\[0\]: got 'get'"),
    ("  methods = []\n", r"filter\.methods: got \[\]"),
    ('  paths = ["api"]\n', r"filter\.paths\[0\]: got 'api'"),
    ("  rate = 0\n", r"filter\.rate: got 0"),
    ("  burst = 5\n", r"filter\.burst: got 5, expected nothing without rate"),
])
def test_filter_config_errors_name_the_key(table, key):
    with pytest.raises(ConfigError, match=key):
        l7(table)


def test_defaults():
    flt = l7("  rate = 2.5\n").filter
    assert flt.rate_limit == RateLimit(rate=2.5, burst=2, max_clients=10_000) and flt.methods is None


FILTER = ('  [service.l7.filter]\n  methods = ["GET"]\n  paths = ["/"]\n  rate = 0.001\n  burst = 5\n'
          '  max_clients = 100\n')


def test_a_flooding_client_is_held_back_others_unaffected_backends_never_see_it():
    async def scenario():
        async with running_proxy(("be1",), l7=FILTER) as p:
            be = p.backends["be1"]
            # The flood: one keep-alive connection, 30 requests pipelined from one address (127.0.0.1).
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(get("/") * 30)
            statuses = [(await read_response(reader)).status for _ in range(30)]
            writer.close()
            assert statuses == [200] * 5 + [429] * 25
            assert len(be.requests) == 5  # the 25 refused requests never reached the backend
            # Another client address (127.0.0.2 is loopback too) still has its whole bucket.
            other_reader, other = await asyncio.open_connection("127.0.0.1", p.port, local_addr=("127.0.0.2", 0))
            other.write(get("/") * 5)
            assert [(await read_response(other_reader)).status for _ in range(5)] == [200] * 5
            other.close()
            assert len(be.requests) == 10
            refused = await request(p.port, get("/"))
            assert (refused.status, refused.headers["pktlb-reason"]) == (429, "rate_limited")
            assert p.server.stats.service("web").rejects == {"rate_limited": 26}
            result = await asyncio.to_thread(CliRunner().invoke, main, ["stats", "-s", p.control_socket])
            return result.output
    text = run(scenario())
    assert "rate limit: 0.001 requests/s per client, burst 5; 2 clients tracked (at most 100); 26 requests refused" \
        in text
    assert "rate_limited" in text


def test_methods_and_paths_refused_at_the_balancer():
    async def scenario():
        async with running_proxy(("be1",), l7='  [service.l7.filter]\n  methods = ["GET", "HEAD"]\n'
                                              '  paths = ["/public/"]\n') as p:
            post = await request(p.port, b"POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
            admin = await request(p.port, get("/admin"))
            sneaky = await request(p.port, get("/public/../admin"))
            fine = await request(p.port, get("/public/x"))
            assert [(a.status, a.headers.get("pktlb-reason")) for a in (post, admin, sneaky)] == \
                [(405, "method_not_allowed"), (403, "path_not_allowed"), (403, "path_not_allowed")]
            assert fine.status == 200 and len(p.backends["be1"].requests) == 1
            assert p.server.stats.service("web").rejects == {"method_not_allowed": 1, "path_not_allowed": 2}
    run(scenario())
