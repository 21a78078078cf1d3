"""The proxy when backends fail: killed mid-run, all down, refusing, resetting, answering nonsense, too slow."""

from __future__ import annotations

import asyncio
import json

from pktlb.daemon.ctlsock import request as control_request
from tests.unit.l7_support import get, read_response, request, run, running_proxy

FAST_HEALTH = 'checks = ["tcp"]\n  interval = 0.1\n  timeout = 0.2\n  rise = 2\n  fall = 2'


def _watch_state(p, backend: str, state: str) -> asyncio.Event:
    """An event set once the proxy's snapshot shows ``backend`` in ``state``."""
    reached = asyncio.Event()
    previous = p.server.control.on_snapshot

    def on_snapshot(snapshot):
        previous(snapshot)
        if snapshot.services["web"].backends[backend].state == state:
            reached.set()
    p.server.control.on_snapshot = on_snapshot
    return reached


def test_a_backend_killed_mid_run_costs_at_most_the_requests_in_flight():
    async def scenario():
        async with running_proxy(("be1", "be2", "be3"), scheduler="rr", health=FAST_HEALTH) as p:
            down = _watch_state(p, "be2", "down")
            outcomes: list[tuple[str, object]] = []  # (phase, status or exception name)
            phase = "before"
            finished, warmed_up = asyncio.Event(), asyncio.Event()
            workers = 8

            async def client(i: int) -> None:
                reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
                post = i % 2  # half the clients POST a body: those requests are never repeated by the proxy
                while not finished.is_set():
                    raw = get("/echo", extra="Content-Length: 5\r\n", method="POST") + b"hello" if post else get("/")
                    started_in = phase
                    try:
                        writer.write(raw)
                        outcome: object = (await read_response(reader)).status
                    except (ConnectionError, asyncio.IncompleteReadError) as exc:
                        outcome = type(exc).__name__
                        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
                    outcomes.append((started_in, outcome))
                    if len(outcomes) >= 200:  # a running start: every backend serving
                        warmed_up.set()
                    if sum(1 for ph, _ in outcomes if ph == "after") >= 300:
                        finished.set()
                writer.close()

            tasks = [asyncio.create_task(client(i)) for i in range(workers)]
            await asyncio.wait_for(warmed_up.wait(), 20)
            assert len(p.backends["be2"].requests) > 30
            await p.backends["be2"].kill()
            phase = "killed"
            await asyncio.wait_for(down.wait(), 5)
            phase = "after"
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
            errors = [(ph, o) for ph, o in outcomes if o != 200]
            assert len(errors) <= workers, errors  # at most the requests that were in flight at the kill
            assert not [e for e in errors if e[0] == "after"]  # none once it is marked down
            stats = p.server.stats
            assert stats.backend("web", "be1").responses["2xx"] > 100 and stats.backend("web", "be3").responses["2xx"] > 100
            # Requests that met the dead backend before the health check did were retried elsewhere:
            assert stats.backend("web", "be2").failures  # (refused connections or reset exchanges, counted)
    run(scenario())


def test_503_when_no_backend_is_live_and_control_socket_changes():
    async def scenario():
        async with running_proxy(("be1", "be2")) as p:
            for name in ("be1", "be2"):
                change = await asyncio.to_thread(control_request, p.control_socket,
                                                 {"cmd": "backend", "action": "down", "service": "web",
                                                  "backend": name})
                assert f"web/{name} set down" in change["why"]
            answer = await request(p.port, get("/"))
            assert (answer.status, answer.headers["pktlb-reason"]) == (503, "no_backend")
            assert answer.body.startswith(b"503 Service Unavailable: no live backend")
            await asyncio.to_thread(control_request, p.control_socket,
                                    {"cmd": "backend", "action": "drain", "service": "web", "backend": "be2"})
            assert (await request(p.port, get("/"))).status == 503  # draining takes no new request either
            await asyncio.to_thread(control_request, p.control_socket,
                                    {"cmd": "backend", "action": "up", "service": "web", "backend": "be1"})
            assert {(await request(p.port, get("/"))).json()["backend"] for _ in range(4)} == {"be1"}
            stats = await asyncio.to_thread(control_request, p.control_socket, {"cmd": "stats"})
            assert stats["kind"] == "l7-proxy" and stats["totals"]["rejects"] == {"no_backend": 2}
            assert stats["reject_reasons"]["no_backend"] == "no live backend in the route's pool"
            rows = {b["name"]: b for b in stats["services"][0]["backends"]}
            assert (rows["be1"]["state"], rows["be2"]["state"], rows["be2"]["admin"]) == ("up", "drain", "drain")
            assert rows["be1"]["responses"] == {"2xx": 4} and rows["be1"]["pool"] == {"active": 0, "idle": 1}
    run(scenario())


def test_502_when_backends_refuse_reset_or_answer_nonsense():
    async def scenario():
        async with running_proxy(("be1", "be2"), l7="  retries = 1") as p:
            # GET /close: the backend resets; an idempotent request is repeated, at most 2 + retries times.
            answer = await request(p.port, get("/close"))
            assert (answer.status, answer.headers["pktlb-reason"]) == (502, "backend_reset")
            tried = sum(len(p.backends[n].requests) for n in ("be1", "be2"))
            assert 2 <= tried <= 3
            # A POST is never repeated: one reset, one 502.
            before = tried
            answer = await request(p.port, get("/close", extra="Content-Length: 2\r\n", method="POST") + b"hi")
            assert answer.status == 502 and sum(len(p.backends[n].requests) for n in ("be1", "be2")) == before + 1
            # Nonsense instead of HTTP.
            garbage = await asyncio.start_server(_answer_garbage, "127.0.0.1", 0)
            p.server.control.remove_backend("web", "be2")
            from pktlb.daemon.control import backend_config
            p.server.control.add_backend("web", backend_config("junk", "127.0.0.1", garbage.sockets[0].getsockname()[1]))
            p.server.control.remove_backend("web", "be1")
            answer = await request(p.port, get("/", method="POST", extra="Content-Length: 0\r\n"))
            assert (answer.status, answer.headers["pktlb-reason"]) == (502, "backend_bad_response")
            garbage.close()
            await garbage.wait_closed()
            # Every backend gone: connections refused, retried on the others, then 502.
            p.server.control.add_backend("web", backend_config("be1", "127.0.0.1", p.backends["be1"].port))
            for be in p.backends.values():
                await be.kill()
            answer = await request(p.port, get("/"))
            assert (answer.status, answer.headers["pktlb-reason"]) == (502, "backend_refused")
            assert p.server.stats.backend("web", "be1").failures["backend_refused"] == 1
    run(scenario())


async def _answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()
    writer.close()


def test_504_on_a_backend_timeout_and_others_unaffected():
    async def scenario():
        async with running_proxy(("be1",), l7="  backend_timeout = 0.3") as p:
            hanging = asyncio.create_task(request(p.port, get("/hang")))
            fine = [await request(p.port, get("/")) for _ in range(5)]  # while the other one waits
            assert {a.status for a in fine} == {200}
            answer = await asyncio.wait_for(hanging, 5)
            assert (answer.status, answer.headers["pktlb-reason"]) == (504, "backend_timeout")
            assert p.server.stats.backend("web", "be1").failures == {"backend_timeout": 1}
            # The connection that timed out is not reused: it might still deliver the late answer.
            p.backends["be1"].release.set()
            assert json.loads((await request(p.port, get("/"))).body)["backend"] == "be1"
            pool = p.server.services["web"].pools["be1"]
            assert pool.active == 0 and all(u.exchanges >= 1 for u in pool.idle)
    run(scenario())


def test_a_pooled_connection_the_backend_closed_is_not_an_error():
    async def scenario():
        async with running_proxy(("be1",)) as p:
            assert (await request(p.port, get("/"))).status == 200
            pool = p.server.services["web"].pools["be1"]
            assert len(pool.idle) == 1
            for writer in list(p.backends["be1"].writers):  # the backend's idle timeout closes it
                writer.close()
            answers = [await request(p.port, get("/")) for _ in range(3)]
            assert {a.status for a in answers} == {200} and p.server.stats.service("web").rejects == {}
    run(scenario())


def test_bytes_a_backend_sends_on_an_idle_connection_are_never_taken_for_an_answer():
    async def scenario():
        stray = asyncio.Event()
        connections = []

        async def backend(reader, writer):  # answers one request, then says "408" unasked once told to
            connections.append(writer)
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nfirst\n")
            await stray.wait()
            writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
            await reader.read()  # until the proxy closes it

        server = await asyncio.start_server(backend, "127.0.0.1", 0)
        async with running_proxy(("be1",)) as p:
            from pktlb.daemon.control import backend_config
            p.server.control.add_backend("web", backend_config("odd", "127.0.0.1", server.sockets[0].getsockname()[1]))
            p.server.control.remove_backend("web", "be1")
            assert (await request(p.port, get("/"))).body == b"first\n"
            pool = p.server.services["web"].pools["odd"]
            (parked,) = pool.idle
            stray.set()
            for _ in range(1000):  # let the loop deliver the stray bytes to the parked connection
                if parked.counting.received > parked.bytes_in:
                    break
                await asyncio.sleep(0)
            assert parked.counting.received > parked.bytes_in
            answer = await request(p.port, get("/"))
            assert answer.body == b"first\n" and len(connections) == 2  # a new connection, not the 408
        server.close()
        await server.wait_closed()
    run(scenario())


def test_the_proxys_own_answer_to_head_has_no_body():
    async def scenario():
        async with running_proxy(("be1",)) as p:
            p.server.control.set_admin("web", "be1", "down")
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(get("/", method="HEAD") + get("/"))  # pipelined: a body after the first would show
            first = await read_response(reader, head=True)
            second = await read_response(reader)
            assert (first.status, first.body, int(first.headers["content-length"])) == (503, b"", len(second.body))
            assert second.status == 503 and second.body.startswith(b"503 Service Unavailable")
            writer.close()
    run(scenario())
