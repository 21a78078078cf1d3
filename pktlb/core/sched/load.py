"""Load-aware schedulers: ``lc`` (least connections), ``lrt`` (least response time), ``bw`` (least bandwidth).

Each gives every backend a score from its live ``BackendLoad`` figures divided by its weight and
picks the lowest.  Ties (common at start, when every backend is idle) are broken by scanning
from position ``flow_hash % N``, so idle backends share new flows instead of the first one
taking them all.  A backend missing from ``loads`` counts as idle.

- ``lc``: active flows / weight (IPVS's wlc).
- ``lrt``: response time x (active flows + 1) / weight: the expected wait for one more flow
  (IPVS's sed, scaled by the measured response time).  The response time is the per-backend EWMA
  in ``BackendLoad.rtt``, fed by the health checker and by TCP handshakes the LB sees both ways
  of (NAT, full-NAT).  A backend without an estimate yet is scored with the mean of the known
  estimates (1 s when none is known), so a new backend is tried rather than avoided or flooded.
- ``bw``: bytes per second / weight (the EWMA in ``BackendLoad.bytes_rate``); equal rates are
  decided by active flows / weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pktlb.core.sched.base import BackendLoad, Scheduler, load_of

if TYPE_CHECKING:
    from pktlb.core.flowkey import FlowKey
    from pktlb.core.snapshot import BackendView

_IDLE = BackendLoad()


class _LeastScoreScheduler(Scheduler):
    """Pick the backend of lowest ``_score``; scan from ``flow_hash % N`` so ties rotate."""

    unit: ClassVar[str] = ""  # what the score measures, for explain()

    def __init__(self, backends: Sequence[BackendView], *, seed: int, table_size: int = 65537) -> None:
        super().__init__(backends, seed=seed, table_size=table_size)
        self._ring = self.backends + self.backends  # so a scan from any start is one contiguous range

    def _context(self, loads: Mapping[str, BackendLoad]) -> Any:
        return None

    def _score(self, backend: BackendView, load: BackendLoad, context: Any) -> Any:
        raise NotImplementedError

    def pick(self, key: FlowKey, flow_hash: int, loads: Mapping[str, BackendLoad]) -> BackendView | None:
        n = len(self.backends)
        if not n:
            return None
        ring, score, get = self._ring, self._score, loads.get
        context = self._context(loads)
        start = flow_hash % n
        best = ring[start]
        best_score = score(best, get(best.name, _IDLE), context)
        for j in range(start + 1, start + n):
            b = ring[j]
            s = score(b, get(b.name, _IDLE), context)
            if s < best_score:
                best, best_score = b, s
        return best

    def explain(self, key: FlowKey, flow_hash: int, loads: Mapping[str, BackendLoad]) -> str:
        chosen = self.pick(key, flow_hash, loads)
        if chosen is None:
            return f"{self.name}: no eligible backend"
        context = self._context(loads)
        scores = ", ".join(f"{b.name} {_fmt(self._score(b, load_of(loads, b.name), context))}"
                           for b in self.backends)
        return f"{self.name}: lowest {self.unit} -> {chosen.name} (scores: {scores})"


def _fmt(score: Any) -> str:
    if isinstance(score, tuple):
        return "/".join(f"{s:.4g}" for s in score)
    return f"{score:.4g}"


class LeastConnectionsScheduler(_LeastScoreScheduler):
    """``lc``: fewest active flows per unit of weight."""

    name = "lc"
    summary = "least connections (weighted)"
    unit = "active flows / weight"

    def _score(self, backend: BackendView, load: BackendLoad, context: Any) -> float:
        return load.active_flows / backend.weight


class LeastResponseTimeScheduler(_LeastScoreScheduler):
    """``lrt``: lowest expected wait, response time x (active flows + 1) / weight."""

    name = "lrt"
    summary = "least response time (rtt x (flows+1) / weight)"
    unit = "rtt x (active flows + 1) / weight"

    def _context(self, loads: Mapping[str, BackendLoad]) -> float:
        known = [load.rtt for b in self.backends if (load := loads.get(b.name)) is not None and load.rtt is not None]
        return sum(known) / len(known) if known else 1.0

    def _score(self, backend: BackendView, load: BackendLoad, context: float) -> float:
        rtt = load.rtt if load.rtt is not None else context
        return rtt * (load.active_flows + 1) / backend.weight


class LeastBandwidthScheduler(_LeastScoreScheduler):
    """``bw``: fewest bytes per second (EWMA) per unit of weight; then fewest flows."""

    name = "bw"
    uses_byte_rate = True
    summary = "least bandwidth (bytes/s EWMA per weight)"
    unit = "bytes/s / weight, then active flows / weight"

    def _score(self, backend: BackendView, load: BackendLoad, context: Any) -> tuple[float, float]:
        return (load.bytes_rate / backend.weight, load.active_flows / backend.weight)
