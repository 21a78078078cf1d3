"""``pktlb bench --workers 1,2``: how fast N workers drain a backlog, against one.

The workers are stopped (SIGSTOP), frames over DRAIN_FLOWS flows queue in their sockets, then
SIGCONT.  The drain ends with the workers' last send (``last_tx_monotonic`` in their stats; a
veth delivers within the send), once the backends' counters have seen every frame.  Best of
``drain_repeats``: other work on the machine only ever makes a drain slower.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from pktlb.reports.bench.lab import GEN_CPU, BenchLab, changed, rx_packets
from pktlb.reports.bench.options import GENERATOR, BenchOptions, flood_args
from pktlb.reports.bench.variants import PktlbVariant

DRAIN_FLOWS = 8192  # many flows, so the fanout hash splits them evenly (1024 left up to 52.4 % on one worker)
DRAIN_POLL = 0.02  # the watcher's period: at 2 ms it took CPU 0 time from worker 0


def drain(lab: BenchLab, mode: str, workers: int, opts: BenchOptions,
          progress: Callable[[str], None]) -> dict[str, Any]:
    """Queue frames while the workers are stopped, release them, time until the backends have them all."""
    variant = PktlbVariant(mode, workers=workers)
    runs = []
    undo: list[tuple[Any, ...]] = []
    with changed(undo):
        # Each worker's sends are delivered on its own core (no steering to one core for all of them).
        lab.set_rps("sw", lab.lb_switch_port, 0)
        undo.append((lab.set_rps, "sw", lab.lb_switch_port, 1 << GEN_CPU))
        variant.start(lab, undo)
        try:
            probes = lab.backend_probe_pids()
            for _ in range(opts.drain_repeats):
                runs.append(_drain_once(lab, variant, probes, opts))
        finally:
            stopped = variant.stop(lab)
    # Best of the repeats: other work on the machine only ever makes a drain slower.
    fastest = min(runs, key=lambda r: r["seconds"] / max(r["delivered"], 1))
    best, delivered = fastest["seconds"], fastest["delivered"]
    per_worker = [(w.get("port") or {}).get("rx", 0) for w in stopped.get("engine", [])]
    progress(f"drain {mode}, {workers} worker(s): {delivered:,.0f} frames in {best * 1000:.0f} ms "
             f"(frames per worker {per_worker})")
    return {"workers": workers, "seconds": best, "delivered": delivered, "pps": delivered / best if best else 0.0,
            "frames_per_worker": per_worker, "repeats": runs}


def _drain_once(lab: BenchLab, variant: PktlbVariant, probes: list[int], opts: BenchOptions) -> dict[str, Any]:
    """One drain: frames queued while the workers are stopped, then timed from SIGCONT."""
    pids = variant.process_pids()
    start_rx = sum(rx_packets(p) for p in probes)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        lab.python("client", GENERATOR, flood_args(lab, opts.drain_frames, 10, DRAIN_FLOWS, rate=200_000),
                   cpu=GEN_CPU, timeout=60)
        time.sleep(0.3)  # the last frames reach the sockets
    finally:
        t0 = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    last, seen = t0, start_rx
    while time.monotonic() - last < 1.0:
        time.sleep(DRAIN_POLL)
        rx = sum(rx_packets(p) for p in probes)
        if rx != seen:
            seen, last = rx, time.monotonic()
            if rx - start_rx >= opts.drain_frames:
                break
    sends = [(w.get("port") or {}).get("last_tx_monotonic") or 0.0 for w in variant.stats()]
    end = max(sends, default=0.0)
    return {"seconds": end - t0 if end > t0 else last - t0, "backends_seen_seconds": last - t0,
            "delivered": seen - start_rx}
