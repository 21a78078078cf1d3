#!/usr/bin/env python3
"""Benchmark: building a Maglev table in pure Python, and looking flows up in it.

Times ``build_table`` (uncached) for N backends at table size M, and ``MaglevScheduler.pick`` per
new flow.  Exits 1 when the median build exceeds ``--budget`` seconds (the issue asks for well
under a second for 10 backends at 65537 slots), so ``make bench`` can call it as a check.

    .venv/bin/python scripts/bench_maglev.py [--backends 10] [--size 65537] [--repeat 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from types import SimpleNamespace

from pktlb.core.config import DEFAULT_SEED
from pktlb.core.flowkey import flow_hash
from pktlb.core.sched.maglev import MaglevScheduler, build_table


def bench(backends: int, size: int, repeat: int, lookups: int, weighted: bool) -> dict[str, object]:
    members = [(f"be{i}", (i % 5) + 1 if weighted else 1) for i in range(backends)]
    build_times = []
    for _ in range(repeat):
        start = time.perf_counter()
        build_table(members, DEFAULT_SEED, size)
        build_times.append(time.perf_counter() - start)
    views = [SimpleNamespace(name=name, weight=weight) for name, weight in members]
    scheduler = MaglevScheduler(views, seed=DEFAULT_SEED, table_size=size)  # type: ignore[arg-type]
    hashes = [flow_hash(6, 0xC6120000 + i, 0xC6126401, 1024 + i % 60000, 80, DEFAULT_SEED) for i in range(lookups)]
    key = (6, 0, 0, 0, 0)
    pick, loads = scheduler.pick, {}
    start = time.perf_counter()
    for h in hashes:
        pick(key, h, loads)
    pick_seconds = time.perf_counter() - start
    return {
        "backends": backends, "table_size": size, "weighted": weighted, "repeat": repeat,
        "build_seconds_median": statistics.median(build_times), "build_seconds_min": min(build_times),
        "build_seconds_max": max(build_times),
        "pick_ns": 1e9 * pick_seconds / lookups, "lookups": lookups,
        "python": sys.version.split()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", type=int, default=10)
    parser.add_argument("--size", type=int, default=65537)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--weighted", action="store_true", help="weights 1..5 instead of all 1")
    parser.add_argument("--budget", type=float, default=1.0, help="fail when the median build takes longer (s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = bench(args.backends, args.size, args.repeat, args.lookups, args.weighted)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"maglev build: {args.backends} backends, {args.size} slots: median "
              f"{1000 * result['build_seconds_median']:.1f} ms (min {1000 * result['build_seconds_min']:.1f}, "
              f"max {1000 * result['build_seconds_max']:.1f}, {args.repeat} runs, Python {result['python']})")
        print(f"maglev pick: {result['pick_ns']:.0f} ns per new flow ({args.lookups} lookups)")
    return 0 if result["build_seconds_median"] <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
