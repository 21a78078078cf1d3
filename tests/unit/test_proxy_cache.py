"""The response cache: freshness rules, the bounded LRU store, and the proxy answering repeated URLs itself."""

from __future__ import annotations

import threading
from urllib.parse import parse_qs, urlsplit

import h11
import pytest

from pktlb.core.config import ConfigError, parse_config
from pktlb.core.l7.cache_policy import cache_control, freshness, request_verdict
from pktlb.core.l7.cache_store import CacheConfig, CacheEntry, CacheStore
from tests.unit.l7_support import Backend, get, request, run, running_proxy

DATE = b"Thu, 03 Dec 2026 06:00:00 GMT"


def test_cache_control_directives():
    assert cache_control([(b"Cache-Control", b'public, max-age=60, s-maxage="30"'), (b"X", b"y")]) == \
        {"public": None, "max-age": "60", "s-maxage": "30"}


@pytest.mark.parametrize("headers, expected", [
    ([(b"Cache-Control", b"max-age=60")], (60.0, "")),
    ([(b"Cache-Control", b"max-age=60, s-maxage=10")], (10.0, "")),  # a shared cache reads s-maxage first
    ([(b"Cache-Control", b"max-age=60"), (b"Age", b"15")], (45.0, "")),
    ([(b"Cache-Control", b"max-age=60"), (b"Age", b"60")], (0.0, "stale")),
    ([(b"Date", DATE), (b"Expires", b"Thu, 03 Dec 2026 06:02:00 GMT")], (120.0, "")),
    ([(b"Expires", b"0")], (0.0, "no_freshness")),
    ([], (0.0, "no_freshness")),  # no heuristic freshness
    ([(b"Cache-Control", b"private, max-age=60")], (0.0, "private")),
    ([(b"Cache-Control", b"no-store")], (0.0, "no_store")),
    ([(b"Cache-Control", b"no-cache, max-age=60")], (0.0, "no_cache")),
    ([(b"Cache-Control", b"max-age=60"), (b"Set-Cookie", b"a=b")], (0.0, "set_cookie")),
    ([(b"Cache-Control", b"max-age=60"), (b"Vary", b"Accept-Encoding")], (0.0, "vary")),
])
def test_freshness(headers, expected):
    assert freshness(200, headers, 0.0) == expected


def test_only_some_statuses_are_kept():
    assert freshness(404, [(b"Cache-Control", b"max-age=5")], 0.0) == (5.0, "")
    assert freshness(500, [(b"Cache-Control", b"max-age=5")], 0.0) == (0.0, "status")


def test_request_verdicts():
    assert request_verdict(b"GET", [], False).lookup
    head = request_verdict(b"HEAD", [], False)
    assert head.lookup and not head.store  # a HEAD is answered from a GET, never stored (no body)
    assert request_verdict(b"POST", [], True).reason == "method"
    assert request_verdict(b"GET", [(b"Authorization", b"Basic eA==")], False).reason == "authorization"
    reload = request_verdict(b"GET", [(b"Cache-Control", b"no-cache")], False)
    assert (reload.lookup, reload.store, reload.reason) == (False, True, "request_no_cache")
    assert request_verdict(b"GET", [(b"Cache-Control", b"no-store")], False).store is False


def entry(body: bytes, at: float = 0.0, lifetime: float = 60.0) -> CacheEntry:
    return CacheEntry(200, b"OK", ((b"Content-Length", str(len(body)).encode()),), body, at, lifetime)


def test_store_is_bounded_in_entries_and_bytes_least_recently_used_out_first():
    store = CacheStore(CacheConfig(max_bytes=10_000, max_entries=3, max_object_bytes=5000))
    for name in ("a", "b", "c"):
        store.put(("h", name.encode()), entry(b"x" * 100))
    assert store.get(("h", b"a"), 1.0) is not None  # a is now the most recently used
    store.put(("h", b"d"), entry(b"x" * 100))
    assert [k[1] for k in store.entries] == [b"c", b"a", b"d"] and store.counters["evicted"] == 1
    store.put(("h", b"big"), entry(b"x" * 4900))
    store.put(("h", b"big2"), entry(b"x" * 4900))
    assert store.bytes <= 10_000 and (("h", b"big2") in store.entries)
    assert not store.put(("h", b"huge"), entry(b"x" * 6000)) and store.counters["too_big"] == 1
    assert sum(e.size for e in store.entries.values()) == store.bytes


def test_store_drops_stale_entries_and_counts_hits_and_misses():
    store = CacheStore(CacheConfig())
    store.put(("h", b"/a"), entry(b"body", at=100.0, lifetime=10.0))
    assert store.get(("h", b"/a"), 105.0).age(105.0) == 5
    assert store.get(("h", b"/a"), 110.0) is None and not store.entries
    figures = store.figures()
    assert (figures["hits"], figures["misses"], figures["expired"], figures["hit_ratio"]) == (1, 1, 1, 0.5)


def test_cache_config_errors_name_the_key():
    base = '[[service]]\nname = "web"\nvip = "198.19.0.100"\nport = 80\nmode = "l7"\n  [service.l7.cache]\n{}'
    with pytest.raises(ConfigError, match=r"l7\.cache\.max_object_bytes: got 9000, expected at most half"):
        parse_config(base.format("  max_bytes = 16384\n  max_object_bytes = 9000\n"))
    with pytest.raises(ConfigError, match=r"l7\.cache\.max_entries"):
        parse_config(base.format("  max_entries = 0\n"))
    assert parse_config(base.format("")).services[0].l7.cache == CacheConfig()


class CachingBackend(Backend):
    """/c/NAME?cc=DIRECTIVES answers with that Cache-Control (and ?vary=1, ?cookie=1), counting requests by path."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.hits_by_path: dict[str, int] = {}

    async def _answer(self, conn, writer, request, body):
        url = urlsplit(request.target.decode())
        if not url.path.startswith("/c/"):
            return await super()._answer(conn, writer, request, body)
        query = parse_qs(url.query)
        self.hits_by_path[url.path] = self.hits_by_path.get(url.path, 0) + 1
        payload = f"{self.name} {url.path} #{self.hits_by_path[url.path]}\n".encode() + b"x" * int(query.get("n", [0])[0])
        headers = [("Content-Length", str(len(payload))), ("Cache-Control", query.get("cc", ["max-age=60"])[0])]
        if "vary" in query:
            headers.append(("Vary", "Accept-Encoding"))
        if "cookie" in query:
            headers.append(("Set-Cookie", "s=1"))
        writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
        if request.method != b"HEAD":
            writer.write(conn.send(h11.Data(data=payload)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()


def test_repeated_urls_are_answered_by_the_proxy():
    async def scenario():
        be = await CachingBackend("be1").start()
        async with running_proxy((), extra_backends=[be], l7="  [service.l7.cache]\n") as p:
            bodies = [await request(p.port, get(f"/c/{i % 4}")) for i in range(40)]  # 4 URLs, 10 times each
            assert be.hits_by_path == {f"/c/{i}": 1 for i in range(4)}  # each URL reached the backend once
            assert all(b.body.startswith(f"be1 /c/{i % 4} #1".encode()) for i, b in enumerate(bodies))
            hits = [b for b in bodies if b.headers.get("pktlb-cache") == "hit"]
            assert len(hits) == 36 and all("age" in b.headers for b in hits)
            head = await request(p.port, get("/c/1", method="HEAD"), head=True)
            assert head.status == 200 and head.headers["pktlb-cache"] == "hit" and head.body == b""
            figures = p.server.services["web"].cache.figures()
            assert (figures["hits"], figures["misses"], figures["backend_requests_saved"]) == (37, 4, 37)
            assert figures["hit_ratio"] == round(37 / 41, 4)
    run(scenario())


def test_what_must_not_be_cached_is_not():
    async def scenario():
        be = await CachingBackend("be1").start()
        async with running_proxy((), extra_backends=[be], l7="  [service.l7.cache]\n  max_bytes = 65536\n"
                                 "  max_object_bytes = 1000\n") as p:
            for path in ("/c/p?cc=private", "/c/n?cc=no-store", "/c/v?vary=1", "/c/k?cookie=1", "/c/big?n=5000"):
                for _ in range(3):
                    assert (await request(p.port, get(path))).status == 200
            assert all(n == 3 for n in be.hits_by_path.values()) and len(be.hits_by_path) == 5
            for _ in range(2):
                await request(p.port, get("/c/a", extra="Authorization: Basic eA==\r\n"))
                await request(p.port, get("/c/r", extra="Cache-Control: no-cache\r\n"))  # a reload refetches ...
            assert be.hits_by_path["/c/a"] == 2 and be.hits_by_path["/c/r"] == 2
            assert (await request(p.port, get("/c/r"))).headers["pktlb-cache"] == "hit"  # ... and refreshes
            bypass = p.server.services["web"].cache.figures()["bypass"]
            assert bypass == {"private": 3, "no_store": 3, "vary": 3, "set_cookie": 3, "authorization": 2,
                              "request_no_cache": 2}
            assert p.server.services["web"].cache.counters["too_big"] == 3
    run(scenario())


def test_lab_httpd_cacheable_path():
    from pktlb.lab.httpd import make_server
    server = make_server("be1", "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
        seen = []
        for _ in range(2):
            conn.request("GET", "/cacheable/x?max_age=30&n=300")
            answer = conn.getresponse()
            body = answer.read()
            seen.append((answer.getheader("Cache-Control"), len(body), body.split(b'"served": ')[1][:1]))
        assert seen == [("public, max-age=30", 300, b"1"), ("public, max-age=30", 300, b"2")]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
