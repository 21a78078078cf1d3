"""The proxy against slow and hostile clients: every limit answers (or cuts) one client, never the others."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner

from pktlb.cli import main
from tests.unit.l7_support import closed_by_peer, get, read_response, request, run, running_proxy

LIMITS = "  header_timeout = 0.5\n  body_timeout = 0.5\n  max_header_bytes = 4096\n  max_body_bytes = 1000"


async def _served_meanwhile(port: int, n: int = 5) -> set[int]:
    return {(await request(port, get("/"))).status for _ in range(n)}


def test_slowloris_clients_are_cut_off_without_hurting_others():
    async def scenario():
        async with running_proxy(("be1",), l7=LIMITS) as p:
            slow = []
            for _ in range(5):  # each sends part of a head, then a byte now and then, never the end
                reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                slow.append((reader, writer))
            assert await _served_meanwhile(p.port) == {200}
            for _, writer in slow:
                writer.write(b"a")  # a trickle does not extend the deadline: it runs from the first byte
            answers = await asyncio.gather(*(closed_by_peer(reader) for reader, _ in slow))
            assert all(a.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and b"header_timeout" in a for a in answers)
            # A connection that never sends anything is cut as well.
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            assert (await closed_by_peer(reader)).startswith(b"HTTP/1.1 408")
            assert p.server.stats.service("web").rejects == {"header_timeout": 6}
            assert await _served_meanwhile(p.port) == {200}
            for _, writer in slow:
                writer.close()
    run(scenario())


def test_oversized_headers_get_431_and_a_slow_body_408():
    async def scenario():
        async with running_proxy(("be1",), l7=LIMITS) as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(get("/", extra="X-Big: " + "b" * 5000 + "\r\n"))
            answer = await read_response(reader)
            assert (answer.status, answer.headers["pktlb-reason"], answer.headers["connection"]) == \
                (431, "headers_too_large", "close")
            await closed_by_peer(reader)
            # A body that stops coming: 408 body_timeout, nothing half-sent reaches a pool.
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(get("/echo", extra="Content-Length: 100\r\n", method="POST") + b"x" * 10)
            data = await closed_by_peer(reader)
            assert data.startswith(b"HTTP/1.1 408") and b"body_timeout" in data
            assert await _served_meanwhile(p.port) == {200}
            pool = p.server.services["web"].pools["be1"]
            assert pool.active == 0 and p.server.stats.backend("web", "be1").failures == {}
            assert p.server.stats.service("web").rejects == {"headers_too_large": 1, "body_timeout": 1}
    run(scenario())


def test_bodies_over_the_limit_get_413_by_length_or_as_they_come():
    async def scenario():
        async with running_proxy(("be1",), l7=LIMITS) as p:
            answer = await request(p.port, get("/echo", extra="Content-Length: 5000\r\n", method="POST"))
            assert (answer.status, answer.headers["pktlb-reason"]) == (413, "body_too_large")
            assert len(p.backends["be1"].requests) == 0  # refused before any backend saw it
            chunked = get("/echo", extra="Transfer-Encoding: chunked\r\n", method="POST")
            chunked += b"".join(b"200\r\n" + b"c" * 512 + b"\r\n" for _ in range(3)) + b"0\r\n\r\n"
            answer = await request(p.port, chunked)
            assert (answer.status, answer.headers["pktlb-reason"]) == (413, "body_too_large")
            ok = get("/echo", extra="Content-Length: 1000\r\n", method="POST") + b"o" * 1000
            assert (await request(p.port, ok)).json()["bytes"] == 1000
    run(scenario())


def test_bad_requests_are_answered_400_or_501():
    async def scenario():
        async with running_proxy(("be1",)) as p:
            for raw, status, reason in [
                (b"GET / HTTP/1.1\r\n\r\n", 400, "bad_request"),  # HTTP/1.1 without Host
                (b"NONSENSE\r\n\r\n", 400, "bad_request"),
                (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, "bad_request"),
                (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "not_implemented"),
                (b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 501, "not_implemented"),
            ]:
                answer = await request(p.port, raw)
                assert (answer.status, answer.headers["pktlb-reason"]) == (status, reason), raw
            assert len(p.backends["be1"].requests) == 0
    run(scenario())


def test_max_connections_answers_503_to_the_extra_ones():
    async def scenario():
        async with running_proxy(("be1",), l7="  max_connections = 3") as p:
            held = [await asyncio.open_connection("127.0.0.1", p.port) for _ in range(3)]
            for reader, writer in held[:1]:
                writer.write(get("/"))
                assert (await read_response(reader)).status == 200  # all three are counted by now
            reader, _ = await asyncio.open_connection("127.0.0.1", p.port)
            data = await closed_by_peer(reader)
            assert data.startswith(b"HTTP/1.1 503") and b"too_many_connections" in data
            for _, writer in held:
                writer.close()
            for reader, _ in held:
                await closed_by_peer(reader)
            assert (await request(p.port, get("/"))).status == 200  # room again once they are gone
    run(scenario())


def test_expect_100_continue_is_answered_by_the_proxy():
    async def scenario():
        async with running_proxy(("be1",)) as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(get("/echo", extra="Content-Length: 4\r\nExpect: 100-continue\r\n", method="POST"))
            interim = await reader.readuntil(b"\r\n\r\n")
            assert interim.startswith(b"HTTP/1.1 100 ")
            writer.write(b"body")
            answer = await read_response(reader)
            assert answer.json()["bytes"] == 4 and "expect" not in {n.lower() for n, _ in
                                                                     p.backends["be1"].requests[-1].headers}
            writer.close()
    run(scenario())


def test_pktlb_stats_and_backend_commands_talk_to_the_proxy():
    async def scenario():
        async with running_proxy(("be1", "be2"), l7=LIMITS) as p:
            for _ in range(4):
                await request(p.port, get("/"))
            await request(p.port, get("/", extra="X-Big: " + "b" * 5000 + "\r\n"))
            runner = CliRunner()
            text = await asyncio.to_thread(runner.invoke, main, ["stats", "-s", p.control_socket])
            assert text.exit_code == 0, text.output
            assert "pktlb proxy: snapshot 1" in text.output and "headers_too_large" in text.output
            assert "route default: any host path / -> be1 be2 [rr]" in text.output
            be1 = next(line for line in text.output.splitlines() if line.strip().startswith("be1 "))
            assert be1.split()[3:6] == ["1", "2", "2"]  # weight, requests, 2xx
            as_json = await asyncio.to_thread(runner.invoke, main, ["stats", "-s", p.control_socket, "--json"])
            data = json.loads(as_json.output)
            assert data["totals"]["requests"] == 4 and data["totals"]["rejects"] == {"headers_too_large": 1}
            drained = await asyncio.to_thread(runner.invoke, main, ["backend", "drain", "be2", "-s", p.control_socket])
            assert drained.exit_code == 0 and "snapshot 2: web/be2 set drain by operator" in drained.output
            assert {(await request(p.port, get("/"))).json()["backend"] for _ in range(3)} == {"be1"}
            text = await asyncio.to_thread(runner.invoke, main, ["stats", "-s", p.control_socket])
            assert "-> be1 (be2) [rr]" in text.output  # a backend out of the live pool is shown in brackets
    run(scenario())


def test_an_idle_keepalive_connection_is_closed_after_idle_timeout():
    async def scenario():
        async with running_proxy(("be1",), l7="  idle_timeout = 0.3\n  header_timeout = 5") as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(get("/"))
            assert (await read_response(reader)).status == 200
            assert await closed_by_peer(reader) == b""  # closed quietly: no request was cut
            assert p.server.stats.service("web").idle_closed == 1
            assert p.server.stats.service("web").rejects == {}
            writer.close()
    run(scenario())
