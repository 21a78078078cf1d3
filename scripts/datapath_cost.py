#!/usr/bin/env python3
"""What one frame costs the pure data path, per mode and direction: ns per frame, and instructions per
frame under valgrind (deterministic, so a refactoring's cost shows even on a busy shared machine).

    .venv/bin/python scripts/datapath_cost.py                  # ns/frame, best of --repeats
    .venv/bin/python scripts/datapath_cost.py --instructions   # + instructions/frame (needs valgrind)

Each case runs a fixed frame set through ``engine.process`` on established flows (a fresh copy of
each frame per call): client -> VIP in every mode, and the backend's reply in nat and fullnat.
Instructions are counted by callgrind for two loop lengths; the difference over the extra frames
is the per-frame figure (interpreter start-up and set-up cancel out).  No root, no network.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time

from pktlb.core.checksum import checksum, pseudo_header_sum
from pktlb.core.config import Config, parse_config
from pktlb.core.datapath import DataPath
from pktlb.core.engine import process
from pktlb.core.packet.addr import ip_to_int, mac_to_bytes
from pktlb.core.packet.frame import ETHERTYPE_IPV4, MIN_IPV4_FRAME, dst_addr, src_addr
from pktlb.core.packet.l4 import PORTS

CASES = ("nat", "nat-reply", "fullnat", "fullnat-reply", "tunnel", "dsr")
FLOWS = 64
# The addresses of `pktlb bench --profile` (reports/bench/profile.py), without importing the reports
# (their imports would dominate the instruction count under valgrind).
LB, VIP, CLIENT, PORT = "198.18.0.2", "198.19.0.100", "198.18.1.100", 5000
BACKENDS = ["198.18.0.11", "198.18.0.12", "198.18.0.13"]


def mac_for_ip(address: str) -> str:
    """The lab's MAC convention (02:00 + the address), written out here: the engine guesses no MAC."""
    return "02:00:" + ":".join(f"{b:02x}" for b in ip_to_int(address).to_bytes(4, "big"))


def profile_config(mode: str) -> Config:
    lines = ["[lb]", f'address = "{LB}"', f'mac = "{mac_for_ip(LB)}"', 'gateway_mac = "02:00:c6:12:00:01"',
             "[[service]]", 'name = "bench"', f'vip = "{VIP}"', f"port = {PORT}", 'protocol = "udp"',
             f'mode = "{mode}"', 'scheduler = "maglev"']
    if mode == "fullnat":  # the bench's own config: names the mode it writes
        lines += ['snat_address = "198.18.0.3"']
    for i, address in enumerate(BACKENDS, 1):
        lines += ["[[service.backend]]", f'name = "be{i}"', f'address = "{address}"', f"port = {PORT}",
                  f'mac = "{mac_for_ip(address)}"']
    return parse_config("\n".join(lines) + "\n")


def udp_frame(src_mac: bytes, dst_mac: bytes, src: int, dst: int, sport: int, dport: int, size: int = 64) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, size - 34, 0) + bytes(size - 42)
    udp = udp[:6] + (checksum(udp, pseudo_header_sum(src, dst, 17, len(udp))) or 0xFFFF).to_bytes(2, "big") + udp[8:]
    header = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, src, dst)
    header = header[:10] + checksum(header).to_bytes(2, "big") + header[12:]
    return dst_mac + src_mac + ETHERTYPE_IPV4 + header + udp


def frames_for(case: str) -> tuple[DataPath, list[bytes]]:
    """The data path with FLOWS established flows, and the frames of ``case`` over those flows."""
    mode, _, reply = case.partition("-")
    dp = DataPath(profile_config(mode))
    lb_mac, client_mac = mac_to_bytes(mac_for_ip(LB)), mac_to_bytes(mac_for_ip(CLIENT))
    inbound = [udp_frame(client_mac, lb_mac, ip_to_int(CLIENT), ip_to_int(VIP), 10000 + i, PORT) for i in range(FLOWS)]
    outs = [dp.handle(bytearray(f), 1000.0)[0][0] for f in inbound]
    if not reply:
        return dp, inbound
    replies = []
    for out in outs:  # the backend answers the frame the LB sent it: addresses and ports swapped
        src, dst = src_addr(out), dst_addr(out)
        sport, dport = PORTS.unpack_from(out, MIN_IPV4_FRAME)
        be_mac = mac_to_bytes(mac_for_ip(BACKENDS[0]))
        replies.append(udp_frame(be_mac, lb_mac, dst, src, dport, sport))
    return dp, replies


def run(case: str, count: int) -> float:
    """Process ``count`` frames of ``case``; thread CPU ns per frame."""
    dp, frames = frames_for(case)
    snap, flows, n = dp.snapshot, dp.flows, len(frames)
    copies = [bytearray(frames[i % n]) for i in range(count)]
    t0 = time.thread_time_ns()
    for frame in copies:
        process(frame, snap, flows, 1000.0)
    return (time.thread_time_ns() - t0) / max(count, 1)


def instructions(case: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        proc = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                               __file__, "--one", case, "--count", str(count)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"}, check=True)
        match = re.search(r"Collected : (\d+)", proc.stderr)
        if match is None:
            raise SystemExit(f"valgrind gave no instruction count:\n{proc.stderr[-2000:]}")
        return int(match.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--count", type=int, default=20000, help="frames per timed run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--instructions", action="store_true", help="also count instructions/frame with valgrind")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.one:
        run(a.one, a.count)
        return
    rows = []
    for case in a.cases.split(","):
        row: dict[str, object] = {"case": case, "ns_per_frame": round(min(run(case, a.count) for _ in range(a.repeats)), 1)}
        if a.instructions:
            small, large = 200, 1200
            row["instructions_per_frame"] = round((instructions(case, large) - instructions(case, small)) / (large - small))
        rows.append(row)
        if not a.json:
            print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if a.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
