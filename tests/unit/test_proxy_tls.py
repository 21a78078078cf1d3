"""TLS termination in the proxy, on 127.0.0.1: handshakes, resumption, bad clients counted, bad certificates refused."""

from __future__ import annotations

import asyncio
import datetime
import json
import shutil
import socket
import ssl
import tempfile
from pathlib import Path

import pytest

from pktlb.adapters.certs import CertificateProblem, check_certificate, make_lab_pki
from pktlb.core.config import ConfigError, parse_config
from pktlb.daemon.proxy.server import ProxyServer, StartupError
from tests.unit.l7_support import Backend, closed_by_peer, config_text, get, read_response, run, running_proxy


@pytest.fixture(scope="module")
def pki():
    directory = tempfile.mkdtemp(prefix="pktlb-tls-")
    yield make_lab_pki(Path(directory) / "tls", ["127.0.0.1", "web.example"], ["127.0.0.1"])
    shutil.rmtree(directory, ignore_errors=True)


def tls_table(pki, extra: str = "") -> str:
    return f'  [service.l7.tls]\n  cert = "{pki.vip_cert}"\n  key = "{pki.vip_key}"\n{extra}'


def client_context(pki, *, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if version is not None:
        context.minimum_version = context.maximum_version = version
    return context


async def https_get(port: int, context: ssl.SSLContext):
    """One request over a new TLS connection: (answer, the connection's session, session_reused)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="web.example",
                                                   ssl_handshake_timeout=5)
    try:
        writer.write(get("/"))
        answer = await read_response(reader)
        ssl_object = writer.get_extra_info("ssl_object")
        return answer, ssl_object.session, ssl_object.session_reused
    finally:
        writer.close()


def blocking_get(port: int, context: ssl.SSLContext, session: ssl.SSLSession | None) -> tuple[bytes, ssl.SSLSession, bool]:
    """A request with the blocking ssl API, which can offer a session to resume (asyncio cannot)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="web.example", session=session) as tls:
            tls.sendall(get("/", extra="Connection: close\r\n"))
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
            return data, tls.session, tls.session_reused


def test_https_to_the_client_plain_http_to_the_backend(pki):
    async def scenario():
        async with running_proxy(("be1", "be2"), l7=tls_table(pki)) as p:
            answer, _, reused = await https_get(p.port, client_context(pki))
            assert answer.status == 200 and not reused
            headers = answer.json()["headers"]
            assert headers["x-forwarded-proto"] == "https" and "proto=https" in headers["forwarded"]
            counters = p.server.stats.service("web")
            assert (counters.tls_full, counters.tls_resumed, counters.requests) == (1, 0, 1)
    run(scenario())


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_returning_client_resumes_its_session(pki, version):
    async def scenario():
        async with running_proxy(("be1",), l7=tls_table(pki)) as p:
            context = client_context(pki, version=version)
            first, session, reused = await asyncio.to_thread(blocking_get, p.port, context, None)
            assert b" 200 " in first.split(b"\r\n")[0] and not reused
            second, _, reused = await asyncio.to_thread(blocking_get, p.port, context, session)
            assert b" 200 " in second.split(b"\r\n")[0] and reused
            counters = p.server.stats.service("web")
            assert (counters.tls_full, counters.tls_resumed) == (1, 1)
    run(scenario())


def test_resumption_can_be_turned_off(pki):
    async def scenario():
        async with running_proxy(("be1",), l7=tls_table(pki, "  session_resumption = false\n")) as p:
            context = client_context(pki, version=ssl.TLSVersion.TLSv1_3)
            _, session, _ = await asyncio.to_thread(blocking_get, p.port, context, None)
            _, _, reused = await asyncio.to_thread(blocking_get, p.port, context, session)
            assert not reused and p.server.stats.service("web").tls_full == 2
    run(scenario())


def test_plain_http_on_the_tls_port_is_answered_400_and_counted(pki):
    async def scenario():
        async with running_proxy(("be1",), l7=tls_table(pki)) as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(get("/"))
            answer = await read_response(reader)
            writer.close()
            assert (answer.status, answer.headers["pktlb-reason"]) == (400, "plain_http_on_tls")
            good, _, _ = await https_get(p.port, client_context(pki))
            assert good.status == 200
            assert p.server.stats.service("web").rejects == {"plain_http_on_tls": 1}
            assert len(p.backends["be1"].requests) == 1  # only the HTTPS request reached it
    run(scenario())


CLIENT_HELLO_START = bytes.fromhex("160301020001")  # a handshake record of 512 bytes announced: a ClientHello


def test_truncated_and_stalled_handshakes_are_cut_and_counted_others_unaffected(pki):
    async def scenario():
        async with running_proxy(("be1",), l7=tls_table(pki, "  handshake_timeout = 2\n")) as p:
            stalled_reader, stalled = await asyncio.open_connection("127.0.0.1", p.port)
            stalled.write(CLIENT_HELLO_START + bytes(20))  # and then nothing
            cut_reader, cut = await asyncio.open_connection("127.0.0.1", p.port)
            cut.write(CLIENT_HELLO_START + bytes(20))
            await cut.drain()
            cut.close()
            garbage_reader, garbage = await asyncio.open_connection("127.0.0.1", p.port)
            garbage.write(bytes.fromhex("1603010005") + b"\x01\x00\x00\x01\x00")  # a ClientHello that is not one
            good, _, _ = await https_get(p.port, client_context(pki))  # meanwhile a real client is served
            assert good.status == 200
            assert await closed_by_peer(stalled_reader) == b""  # cut at handshake_timeout
            await closed_by_peer(garbage_reader)  # an alert, or nothing, then closed
            stalled.close()
            garbage.close()
            rejects = p.server.stats.service("web").rejects
            assert rejects["tls_handshake_timeout"] == 1 and rejects["tls_truncated"] == 1
            assert rejects["tls_handshake_failed"] == 1
    run(scenario())


def test_a_client_that_refuses_the_certificate_is_counted(pki):
    async def scenario():
        async with running_proxy(("be1",), l7=tls_table(pki)) as p:
            with pytest.raises(ssl.SSLCertVerificationError):  # the lab CA is not trusted: an alert, then close
                await asyncio.to_thread(blocking_get, p.port, ssl.create_default_context(), None)
            good, _, _ = await https_get(p.port, client_context(pki))  # served after the refusal was counted
            assert good.status == 200
            assert p.server.stats.service("web").rejects == {"tls_cert_refused": 1}
    run(scenario())


def test_reencrypted_to_a_backend_that_terminates_tls(pki):
    async def scenario():
        backend_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        backend_tls.load_cert_chain(pki.backend_cert, pki.backend_key)
        be = TlsBackend("secure", backend_tls)
        async with running_proxy((), l7=tls_table(pki, f'  backend = "tls"\n  backend_ca = "{pki.ca}"\n'),
                                 extra_backends=[await be.start()]) as p:
            answer, _, _ = await https_get(p.port, client_context(pki))
            assert answer.status == 200 and answer.json()["backend"] == "secure"
            assert be.tls_connections == 1
        # A backend whose certificate the proxy does not trust: 502 backend_tls_failed, by name.
        stranger = await TlsBackend("stranger", backend_tls).start()
        async with running_proxy((), l7=tls_table(pki, '  backend = "tls"\n'), extra_backends=[stranger]) as p:
            answer, _, _ = await https_get(p.port, client_context(pki))
            assert (answer.status, answer.headers["pktlb-reason"]) == (502, "backend_tls_failed")
    run(scenario())


class TlsBackend(Backend):
    def __init__(self, name: str, context: ssl.SSLContext) -> None:
        super().__init__(name)
        self.context = context
        self.tls_connections = 0

    async def start(self) -> TlsBackend:
        async def counted(reader, writer):
            self.tls_connections += 1
            await self._serve(reader, writer)
        self.server = await asyncio.start_server(counted, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self


def test_an_expired_or_mismatched_certificate_stops_the_start_with_a_clear_error(pki, tmp_path):
    old = make_lab_pki(tmp_path / "old", ["127.0.0.1"], ["127.0.0.1"], days=1,
                       now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30))
    cases = [(old.vip_cert, old.vip_key, "expired on"), (pki.vip_cert, old.vip_key, "does not belong to"),
             (tmp_path / "missing.pem", pki.vip_key, "No such file"), (pki.ca, pki.ca, "not a PEM private key")]
    for cert, key, message in cases:
        text = config_text(1, [], str(tmp_path / "ctl.sock"),
                           l7=f'  [service.l7.tls]\n  cert = "{cert}"\n  key = "{key}"\n')

        async def start(text=text):
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            server = ProxyServer(parse_config(text), health=False)
            try:
                await server.start({"web": listener})
            finally:
                await server.close()
                listener.close()
        with pytest.raises(StartupError, match=message) as caught:
            run(start())
        assert "service web" in str(caught.value)


def test_check_certificate_reports_what_it_is(pki):
    info = check_certificate(str(pki.vip_cert), str(pki.vip_key))
    assert "127.0.0.1" in info.names and "web.example" in info.names
    with pytest.raises(CertificateProblem, match="not a PEM certificate"):
        check_certificate(str(pki.vip_key), str(pki.vip_key))


def test_lab_pki_keeps_no_ca_key_and_private_keys_are_private(pki):
    files = sorted(p.name for p in pki.directory.iterdir())
    assert files == ["backend.pem", "backend.pem.key", "ca.pem", "vip.pem", "vip.pem.key"]
    assert pki.vip_key.stat().st_mode & 0o777 == 0o600 and pki.directory.stat().st_mode & 0o777 == 0o700


def test_tls_config_errors_name_the_key(tmp_path):
    base = config_text(1, [], str(tmp_path / "ctl.sock"), l7='  [service.l7.tls]\n  cert = "a.pem"\n{}')
    with pytest.raises(ConfigError, match=r"service\[0\]\.l7\.tls\.key"):
        parse_config(base.format(""))
    with pytest.raises(ConfigError, match=r"l7\.tls\.backend_ca.*unless backend"):
        parse_config(base.format('  key = "a.key"\n  backend_ca = "ca.pem"\n'))
    with pytest.raises(ConfigError, match=r"l7\.tls\.backend: got 'https'"):
        parse_config(base.format('  key = "a.key"\n  backend = "https"\n'))
    tls = parse_config(base.format('  key = "a.key"\n')).services[0].l7.tls
    assert tls is not None and (tls.backend, tls.session_resumption, tls.handshake_timeout) == ("plain", True, 5.0)


def test_lab_httpd_terminates_tls_itself(pki):
    import threading

    from pktlb.lab.httpd import make_server
    server = make_server("be1", "127.0.0.1", 0, tls_cert=str(pki.backend_cert), tls_key=str(pki.backend_key))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:  # plain HTTP: no answer, closed
            raw.sendall(get("/"))
            try:
                assert not raw.recv(100).startswith(b"HTTP")  # a TLS alert or nothing, never an answer
            except ConnectionResetError:
                pass
        context = ssl.create_default_context(cafile=str(pki.ca))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(get("/", extra="Connection: close\r\n"))
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
        assert data.startswith(b"HTTP/1.1 200") and b'"backend": "be1"' in data
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_pktlb_stats_shows_the_handshakes_and_rejections(pki):
    from click.testing import CliRunner

    from pktlb.cli import main

    async def scenario():
        async with running_proxy(("be1",), l7=tls_table(pki)) as p:
            context = client_context(pki)
            _, session, _ = await asyncio.to_thread(blocking_get, p.port, context, None)
            await asyncio.to_thread(blocking_get, p.port, context, session)
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(get("/"))
            await read_response(reader)
            writer.close()
            runner = CliRunner()
            text = await asyncio.to_thread(runner.invoke, main, ["stats", "-s", p.control_socket])
            data = await asyncio.to_thread(runner.invoke, main, ["stats", "-s", p.control_socket, "--json"])
            return text.output, data.output
    text, data = run(scenario())
    assert "TLS terminated here: 2 handshakes, 1 full, 1 resumed (50 %)" in text
    assert "plain_http_on_tls" in text
    totals = json.loads(data)["totals"]
    assert (totals["tls_full"], totals["tls_resumed"], totals["rejects"]) == (1, 1, {"plain_http_on_tls": 1})


def test_handshakes_in_progress_are_bounded_by_max_connections(pki):
    async def scenario():
        l7 = "  max_connections = 3\n" + tls_table(pki, "  handshake_timeout = 2\n")  # long enough on a busy machine
        async with running_proxy(("be1",), l7=l7) as p:
            stalled = [await asyncio.open_connection("127.0.0.1", p.port) for _ in range(3)]
            for _, writer in stalled:
                writer.write(CLIENT_HELLO_START)  # a handshake begun, never finished
            # Accepted in order, each accept starts its handshake before the next: the fourth finds three pending.
            extra_reader, extra = await asyncio.open_connection("127.0.0.1", p.port)
            assert await closed_by_peer(extra_reader) == b""  # refused at once, no handshake started for it
            for reader, writer in stalled:
                assert await closed_by_peer(reader) == b""  # cut at handshake_timeout
                writer.close()
            extra.close()
            good, _, _ = await https_get(p.port, client_context(pki))
            assert good.status == 200
            rejects = p.server.stats.service("web").rejects
            assert rejects["too_many_connections"] == 1 and rejects["tls_handshake_timeout"] == 3
    run(scenario())
