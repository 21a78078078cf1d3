"""``pktlb bench --memory`` in the lab: the engine's resident size under a long flood, with the
bytes per flow and the resident size at a million flows that ``memory`` measures outside the lab.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from pktlb.reports.bench.lab import GEN_CPU, changed, rss_kib
from pktlb.reports.bench.memory import (
    FLOOD_FLOWS_PER_SECOND,
    FLOOD_MAX_ENTRIES,
    FLOOD_RATE,
    entry_bytes,
    rss_at,
    summarise_rss,
)
from pktlb.reports.bench.options import GENERATOR, flood_args
from pktlb.reports.bench.variants import PktlbVariant


def flood_rss(lab: Any, seconds: float, progress: Any) -> dict[str, Any]:
    """The engine's VmRSS, once a second, under a flood whose flows change every second."""
    variant = PktlbVariant("nat", max_entries=FLOOD_MAX_ENTRIES)
    samples: list[tuple[float, int]] = []
    undo: list[tuple[Any, ...]] = []
    with changed(undo):
        variant.start(lab, undo)
        try:
            pid = variant.process_pids()[0]
            packets = int(FLOOD_RATE * seconds) + 1
            args = flood_args(lab, packets, seconds, FLOOD_FLOWS_PER_SECOND, rate=FLOOD_RATE) + ["--rotate", "1"]
            progress(f"memory: {seconds:.0f} s flood, {FLOOD_FLOWS_PER_SECOND} new flows a second, "
                     f"max_entries {FLOOD_MAX_ENTRIES}")
            gen = lab.popen("client", [sys.executable, "-m", GENERATOR, *args], cpu=GEN_CPU, stdout=subprocess.PIPE)
            t0 = time.monotonic()
            while gen.poll() is None and time.monotonic() - t0 < seconds + 30:
                samples.append((round(time.monotonic() - t0, 1), rss_kib(pid)))
                time.sleep(1.0)
            gen.communicate(timeout=10)
            flows = (variant.stats() or [{}])[0].get("flows")
        finally:
            variant.stop(lab)
    return summarise_rss(samples, flows)


def memory_report(lab: Any, opts: Any, progress: Any) -> dict[str, Any]:
    progress("memory: bytes per flow entry (tracemalloc)")
    per_entry = [entry_bytes("nat"), entry_bytes("fullnat", 30_000)]  # one SNAT address has 40,000 ports here
    progress("memory: RSS at 1M flows")
    at_million = rss_at("nat", 1_000_000)
    return {"per_entry": per_entry, "rss_1m": at_million, "flood": flood_rss(lab, opts.memory_seconds, progress)}
