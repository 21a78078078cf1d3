"""Memory: what a flow costs, the resident size at a million flows, and RSS over a long flood.

* ``entry_bytes``: tracemalloc over inserting flows into a FlowTable the way a miss does
  (``insert`` + the rewriter's per-flow set-up: full-NAT also takes a port and an index entry).
* ``rss_at``: a fresh interpreter (``python -m pktlb.reports.bench.memory rss``) reads its VmRSS
  before and after filling a table with that many flows.
* ``flood_rss`` (``lab_memory``, in the lab): the engine, ``flows.max_entries`` bounded, under a paced
  flood whose flows change every second; its VmRSS sampled once a second (``summarise_rss`` here).
  Flat after warm-up = bounded, no leak.

This module needs no lab: ``python -m pktlb.reports.bench.memory rss`` loads only what it measures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tracemalloc
from typing import Any

from pktlb.core.datapath import DataPath
from pktlb.core.packet.addr import ip_to_int
from pktlb.reports.bench.profile import CLIENT, PORT, profile_config

FLOOD_MAX_ENTRIES = 8_192  # full after 8 s of the flood below: from then on every new flow evicts one
FLOOD_FLOWS_PER_SECOND = 1024
FLOOD_RATE = 30_000.0


def _fill(mode: str, count: int) -> DataPath:
    dp = DataPath(profile_config(mode))
    dp.flows.max_entries = count + 1
    return dp


def _insert(dp: DataPath, count: int) -> None:
    svc = next(iter(dp.snapshot.services.values()))
    flows, base = dp.flows, ip_to_int(CLIENT)
    backends = svc.backends
    for i in range(count):
        key = (svc.proto, base + (i >> 14), svc.vip, 1024 + (i & 0x3FFF), PORT)
        be = backends[i % len(backends)]
        entry = flows.insert(key, svc.name, be.name, "udp", 1000.0)
        svc.rewriter.on_new_flow(entry, svc, be, flows)


def entry_bytes(mode: str, count: int = 100_000) -> dict[str, Any]:
    """Bytes Python allocates per flow-table entry (tracemalloc, ``count`` entries)."""
    dp = _fill(mode, count)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _insert(dp, count)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return {"mode": mode, "entries": len(dp.flows), "bytes_per_entry": (after - before) / count}


def _rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rss_in_process(mode: str, count: int) -> dict[str, Any]:
    dp = _fill(mode, count)
    before = _rss_kib()
    t0 = time.monotonic()
    _insert(dp, count)
    return {"mode": mode, "flows": len(dp.flows), "rss_kib_before": before, "rss_kib_after": _rss_kib(),
            "insert_seconds": time.monotonic() - t0}


def rss_at(mode: str, count: int = 1_000_000) -> dict[str, Any]:
    """VmRSS of a fresh interpreter before and after holding ``count`` flows."""
    done = subprocess.run([sys.executable, "-m", "pktlb.reports.bench.memory", "rss", "--mode", mode,
                           "--flows", str(count)], capture_output=True, text=True, timeout=600, check=True)
    return json.loads(done.stdout)


def summarise_rss(samples: list[tuple[float, int]], flows: Any = None, warmup: float = 15.0) -> dict[str, Any]:
    """First/last/max RSS and the growth after ``warmup`` seconds (KiB and KiB per minute)."""
    settled = [s for s in samples if s[0] >= warmup] or samples
    growth = settled[-1][1] - settled[0][1] if settled else 0
    span = settled[-1][0] - settled[0][0] if len(settled) > 1 else 0.0
    return {"samples": samples, "rss_kib_first": samples[0][1] if samples else None,
            "rss_kib_last": samples[-1][1] if samples else None, "rss_kib_max": max((s[1] for s in samples), default=None),
            "growth_after_warmup_kib": growth, "growth_kib_per_minute": 60 * growth / span if span else 0.0,
            "flow_table": flows, "max_entries": FLOOD_MAX_ENTRIES, "warmup_seconds": warmup}


def render_memory(memory: dict[str, Any]) -> str:
    out = ["memory:"]
    for row in memory.get("per_entry", []):
        out.append(f"  flow entry ({row['mode']}): {row['bytes_per_entry']:,.0f} bytes (tracemalloc, "
                   f"{row['entries']:,} entries)")
    rss = memory.get("rss_1m")
    if rss:
        grown = rss["rss_kib_after"] - rss["rss_kib_before"]
        out.append(f"  RSS with {rss['flows']:,} flows: {rss['rss_kib_after'] / 1024:,.0f} MiB "
                   f"({grown / 1024:,.0f} MiB for the flows, {1024 * grown / rss['flows']:,.0f} bytes each)")
    flood = memory.get("flood")
    if flood and flood.get("samples"):
        out.append(f"  engine RSS over a {flood['samples'][-1][0]:.0f} s flood with changing flows "
                   f"(max_entries {flood['max_entries']:,}): first {flood['rss_kib_first'] / 1024:.1f} MiB, "
                   f"max {flood['rss_kib_max'] / 1024:.1f} MiB, last {flood['rss_kib_last'] / 1024:.1f} MiB, "
                   f"growth after warm-up {flood['growth_after_warmup_kib']:,} KiB")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pktlb.reports.bench.memory")
    sub = parser.add_subparsers(dest="command", required=True)
    rss = sub.add_parser("rss", help="VmRSS before and after filling a flow table")
    rss.add_argument("--mode", default="nat")
    rss.add_argument("--flows", type=int, default=1_000_000)
    entry = sub.add_parser("entry", help="bytes per flow entry (tracemalloc)")
    entry.add_argument("--mode", default="nat")
    entry.add_argument("--flows", type=int, default=100_000)
    args = parser.parse_args(argv)
    result = rss_in_process(args.mode, args.flows) if args.command == "rss" else entry_bytes(args.mode, args.flows)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
