"""The L7 proxy at work on 127.0.0.1: routing, per-request balancing, pooling, forwarding headers, framing."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import threading

from pktlb.lab.httpd import make_server
from tests.unit.l7_support import closed_by_peer, get, read_response, request, run, running_proxy

ROUTES = """
  [[service.route]]
  name = "api"
  host = "api.example"
  backends = ["api"]
  [[service.route]]
  name = "static"
  path_prefix = "/static/"
  backends = ["static"]
  [[service.route]]
  name = "web"
  backends = ["be1", "be2"]
"""


def test_routing_by_host_and_path_reaches_the_right_pool():
    async def scenario():
        async with running_proxy(("be1", "be2", "api", "static"), routes=ROUTES) as p:
            cases = [("api.example", "/anything"), ("API.Example:8080", "/static/x"), ("www.example", "/static/a.css"),
                     ("www.example", "/static/../api"), ("www.example", "/"), ("www.example", "/staticx")]
            seen = [(await request(p.port, get(path, host))).json()["backend"] for host, path in cases]
            assert seen[:4] == ["api", "api", "static", "be1"] and set(seen[4:]) <= {"be1", "be2"}
            # The absolute form names the host in the target: it wins over Host, and the backend gets the path.
            answer = await request(p.port, get("http://api.example/v1?x=1", "www.example"))
            assert answer.json()["backend"] == "api" and p.backends["api"].requests[-1].target == b"/v1?x=1"
    run(scenario())


def test_no_matching_route_is_404_and_the_connection_goes_on():
    async def scenario():
        async with running_proxy(("api",), routes=ROUTES.split("  [[service.route]]\n  name = \"static\"")[0]) as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(get("/", "www.example") + get("/", "api.example"))  # pipelined
            first, second = await read_response(reader), await read_response(reader)
            assert (first.status, first.headers["pktlb-reason"]) == (404, "no_route")
            assert second.status == 200 and second.json()["backend"] == "api"
            writer.close()
            assert p.server.stats.service("web").rejects == {"no_route": 1}
    run(scenario())


def test_per_request_balancing_over_one_keepalive_connection():
    async def scenario():
        async with running_proxy(("be1", "be2", "be3"), scheduler="rr") as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            seen = []
            for _ in range(4):
                writer.write(get("/"))
                seen.append((await read_response(reader)).json()["backend"])
            writer.close()
            assert seen == ["be1", "be2", "be3", "be1"]  # rr over the pool, per request, on one client connection
        # A hash scheduler keyed on the connection keeps one connection's requests together, as at L4 ...
        async with running_proxy(("be1", "be2", "be3"), scheduler="maglev") as p:
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
                seen = []
                for _ in range(4):
                    writer.write(get("/"))
                    seen.append((await read_response(reader)).json()["backend"])
                writer.close()
                assert len(set(seen)) == 1
        # ... and keyed on the client address, every connection of the client goes to the same backend.
        async with running_proxy(("be1", "be2", "be3"), scheduler="sh", l7='  hash_key = "client"') as p:
            seen = [(await request(p.port, get("/"))).json()["backend"] for _ in range(6)]
            assert len(set(seen)) == 1
    run(scenario())


def test_backend_connections_are_pooled_with_and_without_client_keepalive():
    async def scenario():
        async with running_proxy(("be1", "be2"), scheduler="rr") as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            for _ in range(40):  # one client connection, kept alive
                writer.write(get("/"))
                assert (await read_response(reader)).status == 200
            writer.close()
            for _ in range(40):  # a new client connection per request (Connection: close)
                answer = await request(p.port, get("/", extra="Connection: close\r\n"))
                assert answer.status == 200 and answer.headers["connection"] == "close"
            opened = sum(be.connections for be in p.backends.values())
            requests = sum(len(be.requests) for be in p.backends.values())
            assert requests == 80 and opened <= 4  # 0.05 backend connections per request at most
            counters = [p.server.stats.backend("web", name) for name in ("be1", "be2")]
            assert sum(c.connections_opened for c in counters) == opened
            assert sum(c.reused for c in counters) == requests - opened
            # Requests at once need connections at once; they return to the pool afterwards.
            answers = await asyncio.gather(*(request(p.port, get("/")) for _ in range(10)))
            assert {a.status for a in answers} == {200}
            idle = sum(len(pool.idle) for pool in p.server.services["web"].pools.values())
            assert idle == sum(be.connections for be in p.backends.values()) <= 12
    run(scenario())


def test_forwarding_headers_are_appended():
    async def scenario():
        async with running_proxy(("be1",)) as p:
            answer = await request(p.port, get("/", "site.example:8080",
                                               "X-Forwarded-For: 203.0.113.9\r\nForwarded: for=203.0.113.9\r\n"
                                               "X-Forwarded-Proto: https\r\nConnection: keep-alive, X-Secret\r\n"
                                               "X-Secret: 1\r\nKeep-Alive: timeout=9\r\n"))
            body = answer.json()
            headers, (peer_address, peer_port) = body["headers"], body["peer"]
            assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
            assert headers["forwarded"] == 'for=203.0.113.9, for=127.0.0.1;host="site.example:8080";proto=http;by=127.0.0.1'
            assert headers["x-forwarded-proto"] == "http" and headers["via"] == "1.1 pktlb"
            assert headers["host"] == "site.example:8080"
            assert not {"x-secret", "keep-alive", "connection"} & set(headers)
            assert answer.headers["via"] == "1.1 pktlb"
            # The backend's peer is the proxy's own connection, not the client's.
            assert peer_address == "127.0.0.1" and peer_port != p.port
    run(scenario())


def test_the_lab_httpd_echoes_what_the_proxy_says_about_the_client():
    lab = make_server("lab1", "127.0.0.1", 0)
    thread = threading.Thread(target=lab.serve_forever, daemon=True)
    thread.start()

    async def scenario():
        async with running_proxy(("be1",)) as p:
            p.server.control.add_backend("web", _backend("lab1", lab.server_address[1]))
            p.server.control.remove_backend("web", "be1")
            answer = (await request(p.port, get("/", "site.example", "X-Forwarded-For: 203.0.113.9\r\n"))).json()
            assert answer["backend"] == "lab1" and answer["client"] == "127.0.0.1"
            assert answer["x_forwarded_for"] == "203.0.113.9, 127.0.0.1" and answer["host"] == "site.example"
            assert answer["forwarded"].endswith("for=127.0.0.1;host=site.example;proto=http;by=127.0.0.1")
            assert answer["x_forwarded_proto"] == "http" and answer["via"] == "1.1 pktlb"
    try:
        run(scenario())
    finally:
        lab.shutdown()
        lab.server_close()


def _backend(name: str, port: int):
    from pktlb.daemon.control import backend_config

    return backend_config(name, "127.0.0.1", port)


def test_chunked_request_and_response_bodies():
    async def scenario():
        async with running_proxy(("be1",)) as p:
            body = bytes(range(256)) * 300
            chunks = [body[i:i + 7000] for i in range(0, len(body), 7000)]
            raw = get("/echo?chunked=1", extra="Transfer-Encoding: chunked\r\n", method="POST")
            raw += b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
            answer = await request(p.port, raw)
            assert answer.headers["transfer-encoding"] == "chunked"
            assert answer.json() == {"backend": "be1", "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
            answer = await request(p.port, get("/chunked?n=50"))
            assert answer.body == b"".join(f"part {i}\n".encode() for i in range(50))
            # An HTTP/1.0 client cannot read chunks: it gets the body delimited by the close.
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(b"GET /chunked?n=3 HTTP/1.0\r\nHost: x\r\n\r\n")
            data = await closed_by_peer(reader)
            head, _, rest = data.partition(b"\r\n\r\n")
            assert b"chunked" not in head.lower() and rest == b"part 0\npart 1\npart 2\n"
            # A Content-Length body through http.client (another HTTP implementation than the proxy's).
            status, echoed = await asyncio.to_thread(_post_with_http_client, p.port, body)
            assert status == 200 and echoed["bytes"] == len(body)
    run(scenario())


def _post_with_http_client(port: int, body: bytes) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/echo", body=body, headers={"Content-Type": "application/octet-stream"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_head_204_and_304_have_no_body_and_keep_the_connection():
    async def scenario():
        async with running_proxy(("be1",)) as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(get("/", method="HEAD") + get("/status/204") + get("/status/304") + get("/"))  # pipelined
            head = await read_response(reader, head=True)
            assert head.status == 200 and int(head.headers["content-length"]) > 0
            no_content, not_modified = await read_response(reader), await read_response(reader)
            assert (no_content.status, not_modified.status) == (204, 304)
            assert "content-length" not in no_content.headers and not_modified.headers["etag"] == '"v1"'
            last = await read_response(reader)  # would be garbage if any of the above had carried a body
            assert last.status == 200 and last.json()["backend"] == "be1"
            writer.close()
            assert p.backends["be1"].connections == 1
    run(scenario())


def test_the_pool_is_bounded_and_ages_out_idle_connections():
    async def scenario():
        async with running_proxy(("be1",), l7="  pool_max_idle = 2\n  pool_idle_timeout = 5") as p:
            answers = await asyncio.gather(*(request(p.port, get("/")) for _ in range(6)))  # 6 at once
            assert {a.status for a in answers} == {200}
            pool = p.server.services["web"].pools["be1"]
            assert (pool.active, len(pool.idle)) == (0, 2)  # the others were closed on their way back
            assert pool.sweep(p.server.services["web"].loop.time() + 1) == 0
            assert pool.sweep(p.server.services["web"].loop.time() + 6) == 2 and not pool.idle
            assert (await request(p.port, get("/"))).status == 200
            assert p.server.stats.backend("web", "be1").connections_opened == p.backends["be1"].connections
    run(scenario())


def test_a_client_that_leaves_mid_response_costs_the_backend_connection_only():
    async def scenario():
        async with running_proxy(("be1",)) as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(get("/bytes?n=50000000"))  # 50 MB: far more than the sockets' buffers hold
            await reader.readexactly(1000)
            (session,) = p.server.sessions
            writer.transport.abort()  # gone, with most of the answer still to come
            await asyncio.wait_for(session, 10)  # the proxy notices and ends that client's session
            assert set(p.server.stats.service("web").rejects) <= {"client_gone", "client_stalled"}
            assert p.server.stats.service("web").rejects
            pool = p.server.services["web"].pools["be1"]
            assert pool.active == 0 and not pool.idle  # that backend connection was mid-answer: closed
            assert (await request(p.port, get("/"))).status == 200
    run(scenario())
