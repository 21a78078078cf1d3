"""Where the microseconds go: the data path's cost per stage, and profiles of the hot loop.

``stage_costs`` times each stage separately, in a loop over prepared frames (one fresh copy per
call, so in-place rewrites never see their own output), and subtracts the cost of the bare loop:

    frame copy          bytearray(...) of a received slot, what RawPort.recv_batch does per frame
    parse + classify    the header checks of engine.parse up to the service lookup (a mirror
                        of those lines: the real code is one function and is not slowed down here)
    flow lookup         FlowTable.lookup on a hit, plus the per-flow counters the engine keeps
    schedule (miss)     flow hash + scheduler pick, per scheduler (Maglev: one table index)
    flow insert (miss)  FlowTable.insert + the rewriter's per-flow set-up
    rewrite             the mode's Rewriter.inbound (precomputed per-backend deltas)
    decision + stats    the Decision record and Stats.count

``whole packet`` is DataPath.handle itself on the same frames, hit and miss; the difference to the
sum of the stages is call overhead and glue.  The I/O costs (recvmmsg / sendmmsg per frame) are
measured in the lab by ``python -m pktlb.reports.bench.profile io`` while the generator floods.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from pktlb.core.config import Config, parse_config
from pktlb.core.datapath import DataPath
from pktlb.core.decision import FORWARD, INBOUND, Decision, Drop
from pktlb.core.engine.steps import l4_checksum_offset, pick_backend
from pktlb.core.flowkey import FlowKey
from pktlb.core.packet.addr import ip_to_int, mac_to_bytes
from pktlb.core.packet.ethernet import ETH_P_IP
from pktlb.core.packet.frame import (
    DST_MAC,
    ETHERTYPE,
    FRAG_BITS,
    IP,
    IP_FRAG,
    IP_PROTO,
    IP_SRC,
    IP_TOTLEN,
    MIN_IPV4_FRAME,
)
from pktlb.core.packet.ipv4 import IPV4_MIN_LEN
from pktlb.core.rewrite.registry import traits_of
from pktlb.core.sched.registry import scheduler_names
from pktlb.core.stats import Stats
from pktlb.lab.addressing import mac_for_ip
from pktlb.reports.bench.benchgen import udp_frame

MAGLEV_NS_PER_PACKET = 350  # Maglev (NSDI 2016): about 350 ns per packet per core
BUDGETS = {"Maglev (NSDI 2016), whole packet per core": MAGLEV_NS_PER_PACKET}
LB, VIP, CLIENT, PORT = "198.18.0.2", "198.19.0.100", "198.18.1.100", 5000
BACKENDS = ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
_ADDRS = struct.Struct("!II").unpack_from
_PORTS = struct.Struct("!HH").unpack_from


def profile_config(mode: str, scheduler: str = "maglev") -> Config:
    """A UDP service in ``mode`` with the lab's addresses (what the bench floods)."""
    lines = ["[lb]", f'address = "{LB}"', f'mac = "{mac_for_ip(LB)}"', 'gateway_mac = "02:00:c6:12:00:01"',
             "[[service]]", 'name = "bench"', f'vip = "{VIP}"', f"port = {PORT}", 'protocol = "udp"',
             f'mode = "{mode}"', f'scheduler = "{scheduler}"']
    if traits_of(mode).needs_snat:
        lines += ['snat_address = "198.18.0.3"']
    for i, address in enumerate(BACKENDS, 1):
        lines += ["[[service.backend]]", f'name = "be{i}"', f'address = "{address}"', f"port = {PORT}"]
    return parse_config("\n".join(lines) + "\n")


def client_frames(count: int, distinct: int) -> list[bytearray]:
    """``count`` fresh frames client -> VIP:PORT over ``distinct`` flows (source ports)."""
    lb_mac, client_mac = mac_to_bytes(mac_for_ip(LB)), mac_to_bytes(mac_for_ip(CLIENT))
    templates = [udp_frame(client_mac, lb_mac, ip_to_int(CLIENT), ip_to_int(VIP), 10000 + i, PORT)
                 for i in range(distinct)]
    return [bytearray(templates[i % distinct]) for i in range(count)]


def parse_classify(frame: bytearray, snap: Any) -> tuple[Any, FlowKey, int, int] | None:
    """Mirrors engine.parse and engine.inbound up to the service lookup, for a frame to a VIP."""
    n = len(frame)
    if (n < MIN_IPV4_FRAME or ((frame[ETHERTYPE] << 8) | frame[ETHERTYPE + 1]) != ETH_P_IP
            or frame[DST_MAC] != snap.lb_mac):
        return None
    vihl = frame[IP]
    ihl = (vihl & 15) << 2
    if vihl >> 4 != 4 or ihl < IPV4_MIN_LEN or IP + ihl > n:
        return None
    total = (frame[IP_TOTLEN] << 8) | frame[IP_TOTLEN + 1]
    if total < ihl or IP + total > n or int.from_bytes(frame[IP:IP + ihl], "big") % 0xFFFF:
        return None
    proto = frame[IP_PROTO]
    src, dst = _ADDRS(frame, IP_SRC)
    if dst not in snap.vips or src in snap.vips or src in snap.snat_addrs or src == snap.lb_addr:
        return None
    if frame[IP_FRAG] & FRAG_BITS or frame[IP_FRAG + 1]:
        return None
    l4 = IP + ihl
    csum_off = l4_checksum_offset(frame, proto, l4, total - ihl, False)
    if type(csum_off) is Drop:
        return None
    sport, dport = _PORTS(frame, l4)
    svc = snap.services.get((proto, dst, dport))
    key: FlowKey = (proto, src, dst, sport, dport)
    return svc, key, l4, csum_off


def _per_call_ns(fn: Callable[[Any], Any], items: Sequence[Any]) -> float:
    """CPU nanoseconds per ``fn(item)``, minus the bare loop over the same items.

    Thread CPU time, not wall time: on a busy machine the wall clock also counts the time other
    processes had the core."""
    clock = time.thread_time_ns
    t0 = clock()
    for item in items:
        fn(item)
    spent = clock() - t0
    t0 = clock()
    for _item in items:
        pass
    bare = clock() - t0
    return max(0.0, (spent - bare) / len(items))


def _best(measure: Callable[[], float], repeats: int) -> float:
    return min(measure() for _ in range(repeats))


def stage_costs(mode: str, iterations: int = 20_000, repeats: int = 3) -> dict[str, Any]:
    """ns per packet for each stage of the data path in ``mode`` (best of ``repeats``)."""
    dp = DataPath(profile_config(mode))
    snap, now = dp.snapshot, 1000.0
    for frame in client_frames(64, 64):  # 64 established flows, like the flood
        dp.handle(frame, now)
    parsed = parse_classify(client_frames(1, 1)[0], snap)
    if parsed is None:
        raise ValueError(f"the profile's client frame does not reach a service in mode {mode}")
    svc, key, l4, csum_off = parsed
    entry = dp.flows.lookup(key, now)
    if entry is None:
        raise ValueError(f"the profile's flow is not in the flow table in mode {mode}")
    be = svc.by_name[entry.backend]
    rw, flows = svc.rewriter, dp.flows
    stats = Stats()
    slot = bytes(client_frames(1, 1)[0])

    def lookup(_: object) -> None:
        e = flows.lookup(key, now)
        if e is None:  # the engine's miss test (never taken: the flow was inserted above)
            return
        e.packets_in += 1
        e.bytes_in += 46
        e.load.add_bytes(46, now)

    def decide(_: object) -> None:
        dec = Decision(FORWARD, INBOUND, svc.name, be.name, svc.mode, True)
        dec.new_flow, dec.flow_key, dec.partial_out = False, key, False
        stats.count(dec, 60)

    def rewrite(frame: bytearray) -> None:
        rw.inbound(frame, IP, l4, csum_off, svc, be, entry, snap, False)

    misses = [(17, ip_to_int(CLIENT), svc.vip, 20000 + i % 40000, PORT) for i in range(iterations)]

    def insert(k: tuple[int, int, int, int, int]) -> None:
        e = flows.insert(k, svc.name, be.name, "udp", now)
        rw.on_new_flow(e, svc, be, flows)
        flows.remove(e)

    stages = {
        "frame copy": _best(lambda: _per_call_ns(bytearray, [slot] * iterations), repeats),
        "parse + classify": _best(lambda: _per_call_ns(lambda f: parse_classify(f, snap), client_frames(iterations, 64)),
                                  repeats),
        "flow lookup (hit)": _best(lambda: _per_call_ns(lookup, range(iterations)), repeats),
        "schedule (miss)": _best(lambda: _per_call_ns(lambda k: pick_backend(svc, flows, k, snap.seed), misses),
                                 repeats),
        "flow insert (miss)": _best(lambda: _per_call_ns(insert, misses), repeats),
        "rewrite": _best(lambda: _per_call_ns(rewrite, client_frames(iterations, 1)), repeats),
        "decision + stats": _best(lambda: _per_call_ns(decide, range(iterations)), repeats),
    }
    hit = _best(lambda: _per_call_ns(lambda f: dp.handle(f, now), client_frames(iterations, 64)), repeats)

    def miss_run() -> float:
        fresh = DataPath(profile_config(mode))
        return _per_call_ns(lambda f: fresh.handle(f, now), client_frames(iterations, iterations))

    miss = _best(miss_run, repeats)
    hit_stages = sum(v for k, v in stages.items() if "miss" not in k and k != "frame copy")
    return {"mode": mode, "iterations": iterations, "stages_ns": stages,
            "schedulers_ns": scheduler_costs(mode, iterations, repeats),
            "whole_packet_ns": {"hit": hit, "miss": miss}, "glue_ns": hit - hit_stages, "budgets_ns": BUDGETS}


def scheduler_costs(mode: str, iterations: int, repeats: int) -> dict[str, float]:
    """Flow hash + pick, per registered scheduler."""
    out = {}
    for name in scheduler_names():
        dp = DataPath(profile_config(mode, name))
        svc = next(iter(dp.snapshot.services.values()))
        keys = [(17, ip_to_int(CLIENT) + i % 64, svc.vip, 20000 + i, PORT) for i in range(iterations)]

        def pick(key: Any, svc: Any = svc, flows: Any = dp.flows, seed: int = dp.snapshot.seed) -> Any:
            return pick_backend(svc, flows, key, seed)

        out[name] = _best(partial(_per_call_ns, pick, keys), repeats)
    return out


def top_entries(session: Any, count: int = 12) -> list[dict[str, Any]]:
    """The functions with the most self time in a pyinstrument session (share of the whole)."""
    root = session.root_frame()
    selfs: dict[str, float] = {}

    def walk(frame: Any) -> None:
        own = frame.time - sum(c.time for c in frame.children if not c.is_synthetic_leaf)  # "[self]" leaves are own
        name = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
        selfs[name] = selfs.get(name, 0.0) + max(0.0, own)
        for child in frame.children:
            if not child.is_synthetic_leaf:
                walk(child)

    if root is not None:
        walk(root)
    total = sum(selfs.values()) or 1.0
    ranked = sorted(selfs.items(), key=lambda kv: -kv[1])[:count]
    return [{"function": name, "self_seconds": round(t, 4), "share": round(t / total, 4)} for name, t in ranked]


def hot_loop_profile(mode: str, seconds: float, out_dir: str | None) -> dict[str, Any]:
    """pyinstrument over DataPath.handle on hit frames for ``seconds`` (the pure part of the hot loop)."""
    from pyinstrument import Profiler

    dp = DataPath(profile_config(mode))
    frames = client_frames(50_000, 64)
    profiler = Profiler(interval=0.0002)
    handled, deadline = 0, time.monotonic() + seconds
    profiler.start()
    while time.monotonic() < deadline:
        for frame in client_frames(2_000, 64) if handled else frames:
            dp.handle(frame, 1000.0)
        handled += 1
    profiler.stop()
    result: dict[str, Any] = {"mode": mode, "top": top_entries(profiler.last_session)}
    if out_dir:
        path = Path(out_dir) / f"profile-datapath-{mode}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(profiler.output_text(unicode=False, color=False, show_all=True))
        result["file"] = str(path)
    return result


def io_costs(ifname: str, seconds: float, backend_mac: str, batch: int = 64) -> dict[str, Any]:
    """recv_batch / send_batch ns per frame on a live interface (run in the LB namespace during a flood)."""
    from pktlb.adapters.bpf import build_filter, pack_filters
    from pktlb.adapters.rawio import RawPort

    mac = mac_to_bytes(backend_mac)
    port = RawPort(ifname, bpf=pack_filters(build_filter(dst_services=[("udp", VIP, PORT)])), batch=batch)
    recv_ns = send_ns = received = calls = 0
    deadline = time.monotonic() + seconds
    clock = time.thread_time_ns  # CPU time of this thread, system calls included (see _per_call_ns)
    try:
        while time.monotonic() < deadline:
            if not port.wait(0.1):
                continue
            t0 = clock()
            frames = port.recv_batch()
            t1 = clock()
            out = [rx.data for rx in frames]
            for frame in out:
                frame[DST_MAC] = mac
            t2 = clock()
            port.send_batch(out)
            t3 = clock()
            if frames:
                recv_ns, send_ns = recv_ns + t1 - t0, send_ns + t3 - t2
                received, calls = received + len(frames), calls + 1
    finally:
        port.close()
    per = max(received, 1)
    return {"frames": received, "mean_batch": received / max(calls, 1), "recv_batch_ns": recv_ns / per,
            "send_batch_ns": send_ns / per}


def render_profile(profile: dict[str, Any]) -> str:
    out = ["per-stage cost of the data path (ns per packet, pure Python, one core):"]
    for row in profile.get("stages", []):
        stages = "  ".join(f"{k} {v:,.0f}" for k, v in row["stages_ns"].items())
        whole = row["whole_packet_ns"]
        out.append(f"  {row['mode']}: {stages}  | whole packet: hit {whole['hit']:,.0f}, miss {whole['miss']:,.0f}"
                   f" (glue {row['glue_ns']:,.0f})")
    if profile.get("stages"):
        sched = profile["stages"][0]["schedulers_ns"]
        out.append("  schedule (hash + pick) per scheduler: " + ", ".join(f"{k} {v:,.0f}" for k, v in sched.items()))
    io = profile.get("io")
    if io:
        out.append(f"  I/O in the lab: recv_batch {io['recv_batch_ns']:,.0f} ns/frame, send_batch "
                   f"{io['send_batch_ns']:,.0f} ns/frame (mean batch {io['mean_batch']:.1f})")
    for name, ns in BUDGETS.items():
        out.append(f"  published budget: {name}: about {ns} ns")
    for key in ("engine", "datapath"):
        prof = profile.get(key)
        if prof and prof.get("top"):
            out.append(f"  top self time, {key} profile ({prof.get('file', 'not saved')}):")
            out += [f"    {100 * e['share']:5.1f}%  {e['function']}" for e in prof["top"][:8]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pktlb.reports.bench.profile")
    sub = parser.add_subparsers(dest="command", required=True)
    io = sub.add_parser("io", help="time recv_batch/send_batch on an interface (root, in the LB namespace)")
    io.add_argument("--ifname", default="eth0")
    io.add_argument("--seconds", type=float, default=2.0)
    io.add_argument("--backend-mac", required=True)
    stages = sub.add_parser("stages", help="per-stage costs of the pure data path")
    stages.add_argument("--mode", default="nat")
    stages.add_argument("--iterations", type=int, default=20_000)
    args = parser.parse_args(argv)
    if args.command == "io":
        result = io_costs(args.ifname, args.seconds, args.backend_mac)
    else:
        result = stage_costs(args.mode, args.iterations)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
