"""Cookie persistence: pure cookie rewriting, and the proxy keeping a client on its backend until that backend fails."""

from __future__ import annotations

import asyncio
import json

import h11
import pytest

from pktlb.core.config import ConfigError, parse_config
from pktlb.core.l7.haproxy import haproxy_config
from pktlb.core.l7.sticky import CookieConfig, read_request, sticky_outcome, write_response
from tests.unit.l7_support import Backend, get, read_response, request, run, running_proxy

INSERT, PREFIX = CookieConfig("SRVID", "insert"), CookieConfig("JSESSIONID", "prefix")


def test_insert_mode_reads_and_hides_its_cookie():
    sticky = read_request([(b"Host", b"a"), (b"Cookie", b"lang=fr; SRVID=be2; theme=dark")], INSERT)
    assert sticky.backend == "be2"
    assert sticky.headers == [(b"Host", b"a"), (b"Cookie", b"lang=fr; theme=dark")]
    only_ours = read_request([(b"Cookie", b"SRVID=be1")], INSERT)
    assert only_ours.backend == "be1" and only_ours.headers == []  # no empty Cookie header left behind
    assert read_request([(b"Cookie", b"lang=fr")], INSERT).backend is None


def test_insert_mode_sets_the_cookie_only_when_the_client_lacks_the_right_one():
    base = [(b"Content-Type", b"text/plain"), (b"Cache-Control", b"max-age=60")]
    assert write_response(base, INSERT, "be1", "be1") == base
    moved = write_response(base, INSERT, "be3", "be1")
    assert (b"Set-Cookie", b"SRVID=be3; Path=/; HttpOnly") in moved
    assert (b"Cache-Control", b"private") in moved and (b"Cache-Control", b"max-age=60") not in moved
    assert [sticky_outcome(a, b) for a, b in [(None, "be1"), ("be1", "be1"), ("be1", "be2")]] == ["new", "kept", "moved"]


def test_prefix_mode_rides_on_the_application_cookie():
    sticky = read_request([(b"Cookie", b"JSESSIONID=be2~abc123; x=1")], PREFIX)
    assert sticky.backend == "be2" and sticky.headers == [(b"Cookie", b"JSESSIONID=abc123; x=1")]
    unprefixed = read_request([(b"Cookie", b"JSESSIONID=abc123")], PREFIX)
    assert unprefixed.backend is None and unprefixed.headers == [(b"Cookie", b"JSESSIONID=abc123")]
    out = write_response([(b"Set-Cookie", b"JSESSIONID=abc123; Path=/; Secure"), (b"Set-Cookie", b"x=1")],
                         PREFIX, "be2", None)
    assert out == [(b"Set-Cookie", b"JSESSIONID=be2~abc123; Path=/; Secure"), (b"Set-Cookie", b"x=1")]
    assert write_response([(b"Content-Type", b"a")], PREFIX, "be2", None) == [(b"Content-Type", b"a")]


async def backend_of(port: int, cookie: str | None = None) -> tuple[str, dict[str, str], str | None]:
    extra = f"Cookie: {cookie}\r\n" if cookie else ""
    answer = await request(port, get("/", extra=extra))
    assert answer.status == 200, answer
    set_cookie = answer.headers.get("set-cookie")
    return answer.json()["backend"], answer.json()["headers"], set_cookie


def test_the_cookie_keeps_a_client_on_its_backend_and_a_down_backend_moves_it():
    async def scenario():
        async with running_proxy(("be1", "be2", "be3"), scheduler="rr", l7='  [service.l7.cookie]\n') as p:
            first, _, set_cookie = await backend_of(p.port)
            assert set_cookie == f"SRVID={first}; Path=/; HttpOnly"
            cookie = set_cookie.split(";")[0]
            for _ in range(6):  # new connections, rr underneath: the cookie wins
                seen, headers, again = await backend_of(p.port, cookie + "; lang=fr")
                assert seen == first and again is None and headers["cookie"] == "lang=fr"
            p.server.control.set_admin("web", first, "down")
            moved, _, set_cookie = await backend_of(p.port, cookie)
            assert moved != first and set_cookie == f"SRVID={moved}; Path=/; HttpOnly"
            for _ in range(3):
                assert (await backend_of(p.port, set_cookie.split(";")[0]))[0] == moved
            assert dict(p.server.stats.service("web").sticky) == {"new": 1, "kept": 9, "moved": 1}
    run(scenario())


def test_a_killed_sticky_backend_costs_no_request():
    async def scenario():
        async with running_proxy(("be1", "be2"), scheduler="rr", l7='  [service.l7.cookie]\n') as p:
            _, _, set_cookie = await backend_of(p.port, "SRVID=be1")  # a client stuck to be1
            assert set_cookie is None
            await p.backends["be1"].kill()  # before any health check notices
            for _ in range(4):  # refused -> retried on be2 -> the cookie follows
                seen, _, set_cookie = await backend_of(p.port, "SRVID=be1")
                assert seen == "be2" and set_cookie.startswith("SRVID=be2;")
            assert p.server.stats.service("web").rejects == {}
    run(scenario())


class SessionBackend(Backend):
    """/login answers with the application's own session cookie."""

    async def _answer(self, conn, writer, request, body):
        if request.target != b"/login":
            return await super()._answer(conn, writer, request, body)
        cookie = dict(request.headers).get(b"cookie", b"").decode()
        payload = json.dumps({"backend": self.name, "cookie": cookie}).encode()
        for event in (h11.Response(status_code=200, headers=[("Content-Length", str(len(payload))),
                                                             ("Set-Cookie", "JSESSIONID=s42; Path=/")]),
                      h11.Data(data=payload), h11.EndOfMessage()):
            writer.write(conn.send(event) or b"")
        await writer.drain()


def test_prefix_mode_through_the_proxy():
    async def scenario():
        backends = [await SessionBackend(name).start() for name in ("be1", "be2")]
        async with running_proxy((), extra_backends=backends, scheduler="rr",
                                 l7='  [service.l7.cookie]\n  mode = "prefix"\n  name = "JSESSIONID"\n') as p:
            login = await request(p.port, get("/login"))
            owner = login.json()["backend"]
            assert login.headers["set-cookie"] == f"JSESSIONID={owner}~s42; Path=/"
            for _ in range(4):
                again = await request(p.port, get("/login", extra=f"Cookie: JSESSIONID={owner}~s42\r\n"))
                assert again.json() == {"backend": owner, "cookie": "JSESSIONID=s42"}  # the app sees its own value
    run(scenario())


def test_haproxy_renders_the_same_persistence():
    text = haproxy_config(parse_config('''
[[service]]
name = "web"
vip = "198.19.0.100"
port = 80
mode = "l7"
  [service.l7.cookie]
  [[service.backend]]
  name = "be1"
  address = "198.18.0.11"
'''))
    assert "    cookie SRVID insert indirect nocache httponly" in text.splitlines()
    assert "    server be1 198.18.0.11:80 weight 1 cookie be1" in text.splitlines()


def test_cookie_config_errors_name_the_key():
    base = '[[service]]\nname = "web"\nvip = "198.19.0.100"\nport = 80\nmode = "l7"\n  [service.l7.cookie]\n{}'
    with pytest.raises(ConfigError, match=r"l7\.cookie\.mode: got 'rewrite'"):
        parse_config(base.format('  mode = "rewrite"\n'))
    with pytest.raises(ConfigError, match=r"l7\.cookie\.name: got 'a b'"):
        parse_config(base.format('  name = "a b"\n'))
    assert parse_config(base.format("")).services[0].l7.cookie == CookieConfig("SRVID", "insert")


def test_source_hashing_at_l7_follows_the_client_address():
    """``sh`` hashes the client's address (as at L4): one address, one backend; another address may move."""

    async def from_address(port: int, address: str) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
        writer.write(get("/", extra="Connection: close\r\n"))
        answer = await read_response(reader)
        writer.close()
        return answer.json()["backend"]

    async def scenario():
        async with running_proxy(("be1", "be2", "be3"), scheduler="sh") as p:
            seen = {a: {await from_address(p.port, a) for _ in range(3)} for a in (f"127.0.0.{i}" for i in range(2, 12))}
            assert all(len(backends) == 1 for backends in seen.values())
            assert len(set().union(*seen.values())) > 1  # 10 addresses do not all hash to one backend
    run(scenario())
