"""Hostile input against the running engine, in a lab, among real traffic.

(a) A few thousand crafted malformed frames are injected on the LB's segment (from the router's
    server-side interface, an AF_PACKET socket, addressed to the LB's MAC) while a stream of real
    curl requests runs: no request fails, the engine's drop counters grow by exactly what the
    kernel filter lets through (predicted with the same filter program and the same pure data
    path), under named reasons, and the totals stay balanced.  Then an hping3 SYN flood from a
    spoofed (unassigned, in-lab) client address runs beside the curls: again no request fails.
(b) Spoofed and crafted frames — to a backend's real address through the LB's MAC, to the VIP on
    ports and protocols no service uses, with the VIP or the LB as source, a "reply" from a
    backend's non-service port — are never forwarded: tcpdump at every backend and at the client
    sees none of them, the engine's forwarded counter does not move, its drops are named.
Everything is bounded in frames and seconds; the frames only travel inside the lab's namespaces.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pktlb.adapters.configfile import load_config
from pktlb.core.datapath import DataPath
from pktlb.core.decision import DROP, DROP_REASONS
from pktlb.core.packet.addr import ip_to_int, mac_to_bytes
from pktlb.daemon.filter import engine_filter_program
from pktlb.lab.addressing import lab_macs, mac_for_ip
from tests.lab.engine_helpers import ask, wait_engine
from tests.unit.bpf_interpreter import run as run_bpf
from tests.unit.fuzz_frames import ICMP, TCP, UDP, fix_ip_checksum, ip_header, l4_checksum

pytestmark = [pytest.mark.lab, pytest.mark.timeout(240)]
VIP, LB, ROUTER, CLIENT, SPOOFED_CLIENT = "198.19.0.100", "198.18.0.2", "198.18.0.1", "198.18.1.10", "198.18.1.200"
LB_MAC, ROUTER_MAC = mac_to_bytes(mac_for_ip(LB)), mac_to_bytes(mac_for_ip(ROUTER))
HOSTILE_FRAMES = 3000
REQUESTS = 100

# Runs in the router's namespace: send length-prefixed frames from a file out of eth0, paced, bounded.
SENDER = """
import socket, struct, sys, time
data = open(sys.argv[1], "rb").read()
per_tick, tick = int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
print("sending", flush=True)
off = sent = 0
while off < len(data):
    n, = struct.unpack_from("!H", data, off)
    s.send(data[off + 2:off + 2 + n])
    off += 2 + n
    sent += 1
    if sent % per_tick == 0:
        time.sleep(tick)
print(sent, flush=True)
"""


# -- crafting --------------------------------------------------------------------------------------
def _eth(packet: bytes | bytearray, ethertype: bytes = b"\x08\x00") -> bytes:
    return bytes(LB_MAC + ROUTER_MAC + ethertype + packet)


def _syn(src: int, dst: int, sport: int, dport: int = 80, *, ttl: int = 64, flags_frag: int = 0x4000,
         doff: int = 5, proto: int = 6) -> bytearray:
    seg = bytearray(TCP.pack(sport, dport, 1, 0, doff << 4, 0x02, 65535, 0, 0))
    seg[16:18] = l4_checksum(src, dst, 6, seg).to_bytes(2, "big")
    return ip_header(src, dst, proto, len(seg), ttl=ttl, flags_frag=flags_frag) + seg


def hostile_frames(count: int, seed: int = 9) -> list[bytes]:
    """Malformed frames of many kinds, each addressed to the LB's MAC (ports below 2000, which curl never uses)."""
    rng = random.Random(seed)
    vip, lb = ip_to_int(VIP), ip_to_int(LB)
    out = []
    for i in range(count):
        src = ip_to_int(f"198.18.1.{rng.randint(100, 163)}")
        sport = rng.randint(1024, 1999)
        kind = i % 16
        packet = _syn(src, vip, sport)
        if kind == 0:
            packet[10] ^= 0x5A  # bad IP checksum
        elif kind == 1:
            packet[2:4] = (len(packet) + rng.randint(1, 400)).to_bytes(2, "big")  # longer than the frame
        elif kind == 2:
            packet[2:4] = rng.randint(0, 19).to_bytes(2, "big")  # shorter than the header
        elif kind == 3:
            packet[0] = 0x65  # IP version 6 in an IPv4 frame
        elif kind == 4:
            packet = _syn(src, vip, sport, flags_frag=0x2000)  # first fragment (MF)
        elif kind == 5:
            packet = _syn(src, vip, sport, flags_frag=rng.randint(1, 0x1FFF))  # a later fragment
        elif kind == 6:
            packet = _syn(src, vip, sport, ttl=rng.choice([0, 1]))
        elif kind == 7:
            packet = _syn(src, vip, sport, doff=rng.choice([0, 3, 4, 15]))
        elif kind == 8:
            packet = _syn(rng.choice([vip, lb]), vip, sport)  # spoofed: the VIP or the LB as source
        elif kind == 9:
            message = bytearray(ICMP.pack(13, 0, 0, 0) + bytes(12))  # a timestamp request
            packet = ip_header(src, vip, 1, len(message)) + message
        elif kind == 10:  # an error quoting a truncated header, and one about a flow nobody has
            quoted = _syn(vip, src, 80)[: rng.choice([0, 8, 19, 24])] if rng.random() < 0.5 else \
                _syn(vip, ip_to_int("198.18.1.77"), 80, sport)[:28]
            message = bytearray(ICMP.pack(3, rng.choice([1, 3, 4]), 0, 1400)) + quoted
            packet = ip_header(ip_to_int("198.18.1.1"), vip, 1, len(message)) + message
        elif kind == 11:
            packet = packet[: rng.randint(1, 39)]  # truncated anywhere
        elif kind == 12:
            packet = bytearray(rng.randbytes(rng.randint(20, 80)))
            packet[0] = 0x45
            packet[16:20] = vip.to_bytes(4, "big")
            fix_ip_checksum(packet)
        elif kind == 13:
            out.append(_eth(b"\x00\x05" + packet, b"\x81\x00"))  # 802.1Q tagged
            continue
        elif kind == 14:
            out.append(_eth(struct.pack("!IHBB", 0x60000000, 20, 6, 64) + bytes(52), b"\x86\xdd"))  # IPv6
            continue
        else:
            udp = bytearray(UDP.pack(sport, 80, rng.choice([0, 4, 200]), 0))  # UDP with a bad length
            packet = ip_header(src, vip, 17, len(udp)) + udp
        out.append(_eth(packet))
    return out


def predict(lab, frames: list[bytes]) -> tuple[Counter[str], int]:
    """What the engine will count: the kernel filter's verdict, then the pure data path's decision."""
    config = load_config(str(lab.paths.config))
    dp = DataPath(config, macs=lab_macs(config))
    program = engine_filter_program(dp.snapshot)
    reasons: Counter[str] = Counter()
    filtered = 0
    for frame in frames:
        if not run_bpf(program, frame):
            filtered += 1
            continue
        _, dec = dp.handle(bytearray(frame), 1.0)
        assert dec.verdict == DROP, f"a crafted frame would be forwarded: {dec} {frame.hex()}"
        reasons[dec.reason] += 1
    return reasons, filtered


def write_frames(path: Path, frames: list[bytes]) -> None:
    path.write_bytes(b"".join(struct.pack("!H", len(f)) + f for f in frames))


def start_sender(lab, path: Path, per_tick: int = 25, tick: float = 0.02) -> subprocess.Popen:
    sender = lab.popen("router", [sys.executable, "-c", SENDER, str(path), str(per_tick), str(tick)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert sender.stdout.readline().strip() == "sending", sender.stderr.read()
    return sender


def finish(process: subprocess.Popen, timeout: float = 30) -> str:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    return out


def curl_loop(lab, requests: int, pause: float = 0.02) -> list[str]:
    """``requests`` sequential requests to the VIP from the client (one namespace entry); one status per line."""
    script = (f"for i in $(seq {requests}); do curl -sS -o /dev/null -w '%{{http_code}}\\n' --max-time 5 "
              f"http://{lab.vip}/ || echo FAILED; sleep {pause}; done")
    done = lab.run("client", ["sh", "-c", script], timeout=requests * 6 + 10)
    return done.stdout.split()


def totals_balanced(stats: dict) -> bool:
    t = stats["totals"]
    return t["received"] == t["forwarded"] + t["replied"] + t["dropped"] and t["dropped"] == sum(t["drops"].values())


def settled_stats(lab, predicate, timeout: float = 5.0) -> dict:
    """Stats once ``predicate(stats)`` holds (the engine has drained its socket), bounded in time."""
    deadline = time.monotonic() + timeout
    stats = ask(lab, {"cmd": "stats"})
    while not predicate(stats) and time.monotonic() < deadline:
        time.sleep(0.1)
        stats = ask(lab, {"cmd": "stats"})
    return stats


# -- (a) -------------------------------------------------------------------------------------------
def test_malformed_frames_and_a_syn_flood_among_real_traffic(lab_factory, tmp_path):
    lab = lab_factory("nat", engine="pktlb")
    wait_engine(lab)
    frames = hostile_frames(HOSTILE_FRAMES)
    expected, filtered = predict(lab, frames)
    assert sum(expected.values()) >= 2000 and set(expected) <= set(DROP_REASONS), expected
    write_frames(tmp_path / "hostile.bin", frames)
    before = ask(lab, {"cmd": "stats"})

    sender = start_sender(lab, tmp_path / "hostile.bin")
    statuses = curl_loop(lab, REQUESTS)
    assert finish(sender).strip() == str(len(frames))
    assert statuses == ["200"] * REQUESTS, Counter(statuses)

    drops_before = before["totals"]["drops"]
    after = settled_stats(lab, lambda s: all(s["totals"]["drops"].get(r, 0) - drops_before.get(r, 0) >= n
                                             for r, n in expected.items()))
    assert totals_balanced(after), after["totals"]
    grew = {r: n - drops_before.get(r, 0) for r, n in after["totals"]["drops"].items()}
    lost = after["port"]["kernel_drops"] - before["port"]["kernel_drops"]
    for reason, n in expected.items():
        assert n - lost <= grew.get(reason, 0), (reason, n, grew, lost)
    # The real requests add no drops of their own beyond a stray few (late segments of closed flows).
    assert sum(grew.values()) - sum(expected.values()) <= 10, (grew, expected)
    print(f"\ninjected {len(frames)} frames: {filtered} dropped by the kernel filter, "
          f"{sum(expected.values())} counted by the engine {dict(expected)}; {REQUESTS} requests, none failed")

    if shutil.which("hping3") is None:
        pytest.skip("hping3 is not installed (make deps installs it): the SYN flood part did not run")
    flood = lab.popen("client", ["timeout", "30", "hping3", "-q", "-c", "2000", "-i", "u200", "-S", "-p", "80",
                                 "-a", SPOOFED_CLIENT, lab.vip], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    statuses = curl_loop(lab, REQUESTS, pause=0.005)
    try:
        flood.communicate(timeout=40)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    assert statuses == ["200"] * REQUESTS, Counter(statuses)
    final = settled_stats(lab, totals_balanced)
    assert totals_balanced(final)
    assert final["totals"]["received"] - after["totals"]["received"] >= 2000 + REQUESTS
    assert final["flows"]["entries"] <= final["flows"]["max_entries"]
    print(f"hping3 SYN flood from {SPOOFED_CLIENT}: engine received "
          f"{final['totals']['received'] - after['totals']['received']} frames, {final['flows']['entries']} flows "
          f"open; {REQUESTS} requests, none failed")


# -- (b) -------------------------------------------------------------------------------------------
MARK, CONTROL = 4445, 4444  # source port of the frames that must never arrive / of one legitimate SYN


def never_forwarded(mode: str) -> list[bytes]:
    vip, lb, client = ip_to_int(VIP), ip_to_int(LB), ip_to_int(CLIENT)
    bes = [ip_to_int(f"198.18.0.{10 + i}") for i in (1, 2, 3)]
    frames = [_syn(client, be, MARK, port) for be in bes for port in (80, 22)]  # to backends' own addresses
    frames += [_syn(client, vip, MARK, port) for port in (8080, 443, 22, 0)]  # to ports no service uses
    udp = bytearray(UDP.pack(MARK, 80, 8, 0))
    frames.append(ip_header(client, vip, 17, 8) + udp)  # a protocol no service uses on that port
    frames += [_syn(src, vip, MARK) for src in (vip, lb)]  # spoofed: the LB's own addresses as source
    if mode == "fullnat":
        frames.append(_syn(ip_to_int("198.18.0.3"), vip, MARK))
    for be in bes:  # "replies" from a backend's non-service port
        seg = bytearray(TCP.pack(22, MARK, 1, 1, 5 << 4, 0x12, 65535, 0, 0))
        seg[16:18] = l4_checksum(be, client, 6, seg).to_bytes(2, "big")
        frames.append(ip_header(be, client, 6, len(seg)) + seg)
    return [_eth(f) for f in frames]


def start_capture(lab, node: str, seconds: float) -> subprocess.Popen:
    capture = lab.popen(node, ["timeout", str(seconds), "tcpdump", "-i", "eth0", "-n", "-l", "-c", "100",
                               f"tcp port {MARK} or udp port {MARK} or tcp port {CONTROL}"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [capture.stderr.readline() for _ in range(2)]  # a notice, then "listening on eth0 ..."
    assert any("listening" in line for line in lines), lines
    return capture


def stop_capture(capture: subprocess.Popen) -> str:
    """The capture's output once its own timeout ends it (tcpdump under `timeout` exits 124: expected)."""
    try:
        out, _ = capture.communicate(timeout=15)
    finally:
        if capture.poll() is None:
            capture.kill()
            capture.wait()
    return out


@pytest.mark.parametrize("mode", ["nat", "dsr"])
def test_spoofed_and_crafted_frames_are_never_forwarded(lab_factory, tmp_path, mode):
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed (make deps installs it)")
    lab = lab_factory(mode, engine="pktlb")
    wait_engine(lab)
    captures: dict[str, subprocess.Popen] = {}
    try:
        for node in ["client"] + [b.name for b in lab.backends()]:
            captures[node] = start_capture(lab, node, 6)
        frames = never_forwarded(mode)
        spoofed = 3 if mode == "fullnat" else 2
        write_frames(tmp_path / "spoofed.bin", frames)
        before = ask(lab, {"cmd": "stats"})
        finish(start_sender(lab, tmp_path / "spoofed.bin"))
        spoof_before = before["totals"]["drops"].get("spoofed_source", 0)
        after = settled_stats(lab, lambda s: s["totals"]["drops"].get("spoofed_source", 0) >= spoof_before + spoofed)
        assert after["totals"]["forwarded"] == before["totals"]["forwarded"]
        assert after["totals"]["drops"].get("spoofed_source", 0) - spoof_before == spoofed
        assert totals_balanced(after)
        # One legitimate SYN proves the captures see what the engine does forward.
        write_frames(tmp_path / "control.bin", [_eth(_syn(ip_to_int(CLIENT), ip_to_int(VIP), CONTROL))])
        finish(start_sender(lab, tmp_path / "control.bin"))
    finally:
        seen = {node: stop_capture(capture) for node, capture in captures.items()}
    marked = {node: [ln for ln in out.splitlines() if f".{MARK} " in ln or f".{MARK}:" in ln] for node, out in seen.items()}
    assert not any(marked.values()), json.dumps(marked, indent=1)
    control = [node for node, out in seen.items() if node != "client" and f".{CONTROL} >" in out]
    assert len(control) == 1, seen
