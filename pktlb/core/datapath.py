"""A data path instance: the current snapshot, the flow table and the counters, around ``engine.process``.

Replay, explain and the daemon each hold one.  ``swap`` installs a new snapshot whole (the
control plane builds it off the packet path); the flow table and counters carry over.
"""

from __future__ import annotations

from collections.abc import Mapping

from pktlb.core.config import Config
from pktlb.core.decision import Decision
from pktlb.core.engine import process
from pktlb.core.flowtable import FlowTable
from pktlb.core.snapshot import Snapshot, build_snapshot
from pktlb.core.stats import Stats


class DataPath:
    def __init__(self, config: Config, snapshot: Snapshot | None = None, worker: int = 0, workers: int = 1, *,
                 macs: Mapping[str, str] | None = None) -> None:
        """``macs``: address -> MAC for the snapshot built here (``build_snapshot``); none is guessed."""
        self.config = config
        self.snapshot = snapshot or build_snapshot(config, macs=macs)
        self.flows = FlowTable(config.flows, worker, workers)
        self.stats = Stats()

    def swap(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def handle(self, frame: bytearray, now: float, partial: bool = False,
               gso: int = 0) -> tuple[list[bytearray], Decision]:
        nbytes = len(frame)
        frames, decision = process(frame, self.snapshot, self.flows, now, partial, gso)
        self.stats.count(decision, nbytes)
        return frames, decision
