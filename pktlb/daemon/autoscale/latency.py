"""Request latency for the auto-scaler's samples, from a load generator's per-second JSON lines.

The engine sees packets and flows, not requests: the latency a user feels comes from whoever sends
the requests.  ``pktlb.lab.loadgen`` writes one line per second with ``p99_ms`` (over the requests
answered in that second); ``LatencyFeed`` reads the file as it grows (whole lines only) and
``WithLatency`` puts the latest value into each ``Reading`` of another metric source.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from pktlb.daemon.autoscale.interfaces import MetricSource, Reading


class LatencyFeed:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self.p99_ms: float | None = None
        self.end: dict[str, Any] | None = None  # the generator's last line (totals), once written

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        complete = data[:data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("type") == "end":
                self.end = record
            elif "p99_ms" in record:
                self.p99_ms = record["p99_ms"]  # None for a second in which nothing was answered


class WithLatency:
    """A ``MetricSource``: another source's readings with the feed's latest p99 latency."""

    def __init__(self, source: MetricSource, feed: LatencyFeed) -> None:
        self.source, self.feed = source, feed

    def read(self, now: float) -> Reading:
        reading = self.source.read(now)
        self.feed.poll()
        return replace(reading, p99_ms=self.feed.p99_ms)


__all__ = ["LatencyFeed", "WithLatency"]
