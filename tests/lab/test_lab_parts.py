"""The lab's parts that need no namespace: backend HTTP service, decapsulator parsing, process
bookkeeping and the doctor's checks on hand-made facts (no root needed)."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import struct
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from pktlb.core.packet.addr import ip_to_int
from pktlb.daemon.decap import inner_packet
from pktlb.lab.doctor import REGISTRY, Finding
from pktlb.lab.facts import Link, NodeFacts
from pktlb.lab.httpd import expected_sha256, make_server, pattern_bytes
from pktlb.lab.state import is_same_process, proc_record, stop_processes


@pytest.fixture
def server():
    srv = make_server("be7", "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_backend_answers_with_its_name_and_the_client_it_saw(server):
    status, body = get(server, "/")
    answer = json.loads(body)
    assert status == 200 and answer["backend"] == "be7" and answer["client"] == "127.0.0.1"
    assert isinstance(answer["client_port"], int) and answer["server"] == f"127.0.0.1:{server}"
    assert get(server, "/health") == (200, b"ok\n")
    assert get(server, "/nope")[0] == 404


def test_downloads_are_deterministic_and_bounded(server):
    status, body = get(server, "/bytes?n=200003")
    assert status == 200 and body == pattern_bytes(200003)
    assert hashlib.sha256(body).hexdigest() == expected_sha256(200003)
    assert body[:3] == bytes([0, 1, 2]) and body[251] == 0
    assert get(server, "/download/10") == (200, bytes(range(10)))
    assert get(server, f"/bytes?n={(1 << 30) + 1}")[0] == 400
    assert get(server, "/bytes?n=abc")[0] == 400


def test_backend_serves_a_client_while_another_is_stalled(server):
    # A client that sent half a request holds its connection; a one-at-a-time server would hang here.
    with socket.create_connection(("127.0.0.1", server), timeout=5) as stalled:
        stalled.sendall(b"GET / HTTP/1.1\r\n")
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: get(server, "/bytes?n=100000"), range(8)))
    assert all(status == 200 and len(body) == 100_000 for status, body in results)


def ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0, ip_to_int(src), ip_to_int(dst))
    return header + payload


def test_decap_finds_the_inner_packet_and_names_each_drop():
    own = ip_to_int("198.18.0.11")
    inner = ipv4("198.18.1.10", "198.19.0.100", 6, b"\x00" * 20)
    outer = ipv4("198.18.0.2", "198.18.0.11", 4, inner)
    start, end, reason = inner_packet(outer, own)
    assert reason is None and outer[start:end] == inner
    assert inner_packet(outer + b"pad", own)[:2] == (20, 60)  # trailing bytes past the outer length ignored
    assert inner_packet(ipv4("198.18.0.2", "198.18.0.12", 4, inner), own)[2] == "not_for_us"
    assert inner_packet(ipv4("198.18.0.2", "198.18.0.11", 6, inner), own)[2] == "not_ipip"
    assert inner_packet(outer[:30], own)[2] == "short_outer"
    assert inner_packet(ipv4("198.18.0.2", "198.18.0.11", 4, inner[:30]), own)[2] == "inner_truncated"
    assert inner_packet(ipv4("198.18.0.2", "198.18.0.11", 4, b"\x60" + inner[1:]), own)[2] == "inner_not_ipv4"


def test_stop_processes_kills_the_recorded_process_and_spares_a_recycled_pid():
    child = subprocess.Popen(["sleep", "30"])
    try:
        record = proc_record(child.pid)
        assert is_same_process(record)
        # Same PID, other start time: a PID the kernel gave to another program. Must not be touched.
        assert stop_processes([{**record, "start_time": record["start_time"] + 1}]) == []
        assert child.poll() is None
        assert stop_processes([record], grace=5) == [child.pid]
        assert child.wait(timeout=5) is not None and not is_same_process(record)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=5)


def facts(role: str, mode: str | None, **kw) -> NodeFacts:
    node = NodeFacts("be1", role, "pktlb-x-be1", mode, "pktlb", "198.19.0.100", "198.19.0.0/24")
    node.links = {"lo": Link("lo", 65536, None, True, ["127.0.0.1/8"], "loopback"),
                  "eth0": Link("eth0", 1500, "02:00:c6:12:00:0b", True, ["198.18.0.11/24"], "veth")}
    for key, value in kw.items():
        setattr(node, key, value)
    return node


def run_check(name: str, node: NodeFacts) -> list[Finding]:
    check = REGISTRY[name]()
    assert check.applies(node)
    return list(check.run(node))


def test_doctor_flags_a_missing_vip_and_arp_sysctls_with_their_fixes():
    node = facts("backend", "dsr")
    [vip] = run_check("vip-on-lo", node)
    assert vip.level == "fail" and "ip netns exec pktlb-x-be1 ip addr add 198.19.0.100/32 dev lo" in vip.fix
    node.links["lo"].addresses.append("198.19.0.100/32")
    assert run_check("vip-on-lo", node)[0].ok
    node.sysctls = {"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.eth0.arp_announce": "2"}
    assert run_check("arp-sysctls", node)[0].ok  # effective value: the larger of all and eth0
    node.sysctls = {"net.ipv4.conf.eth0.arp_ignore": "1"}
    assert run_check("arp-sysctls", node)[0].level == "fail"


def test_doctor_uses_the_effective_rp_filter_on_the_decap_device():
    node = facts("backend", "tunnel")
    node.links["pktlbtun0"] = Link("pktlbtun0", 1500, None, True, ["198.19.1.11/32"], "tun")
    node.sysctls = {"net.ipv4.conf.all.rp_filter": "2", "net.ipv4.conf.pktlbtun0.rp_filter": "0"}
    [finding] = run_check("rp-filter", node)
    assert finding.level == "fail" and "rp_filter 2" in finding.message
    node.sysctls["net.ipv4.conf.all.rp_filter"] = "0"
    assert run_check("rp-filter", node)[0].ok
    assert run_check("decap", node)[0].ok
    node.links["pktlbtun0"].up = False  # no process attached to the TUN device
    assert run_check("decap", node)[0].level == "fail"


def test_doctor_checks_the_lb_forwarding_stray_vip_and_offloads():
    lb = facts("lb", "nat", sysctls={"net.ipv4.ip_forward": "1"})
    assert run_check("lb-forwarding", lb)[0].level == "fail"
    lb.engine = "kernel"
    assert run_check("lb-forwarding", lb)[0].ok
    lb.links["lo"].addresses.append("198.19.0.100/32")
    [stray] = run_check("stray-vip", lb)
    assert stray.level == "fail" and "ip addr del 198.19.0.100/32 dev lo" in stray.fix
    lb.offloads = {"eth0": {"tx": True, "tso": True, "gso": True}}
    [tx] = run_check("tx-checksum", lb)
    assert tx.level == "fail" and tx.fix.endswith("ethtool -K eth0 tx off")
    client = facts("client", "tunnel", offloads={"eth0": {"tx": False, "tso": False, "gso": True}})
    assert [f.level for f in run_check("tx-checksum", client)] == ["ok", "warn"]
