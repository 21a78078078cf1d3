"""``pktlb autoscale --replay FILE.jsonl``: the policy run again on a recorded run's samples, no engine.

The recorded samples' raw metric totals (any of the metrics the run recorded, so a replay can try
another ``--metric``) are smoothed again with the replay's EWMA and fed to the policy through the
fleet simulator (``pktlb.core.policy.autoscale_sim``): new backends are named ``r1``, ``r2`` ...,
drained backends leave at once, and the recorded values do not react to the replayed backend count
(exact for demand metrics such as new flows per second, an approximation for active flows or CPU).
Recorded latency is not carried over: it belongs to the recorded fleet, not the replayed one.
The result is a journal in the same format as a live run's, with ``replay_of`` in its start record.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from pktlb.core.policy.autoscale import SCALE_IN, SCALE_OUT, BackendView, Sample, ScalingConfig
from pktlb.core.policy.autoscale_sim import simulate
from pktlb.core.policy.ewma import Ewma


class ReplayError(ValueError):
    """A recording the replay cannot use; the message says why."""


def recorded_start(records: list[dict[str, Any]]) -> dict[str, Any]:
    start = next((r for r in records if r["type"] == "start"), None)
    if start is None:
        raise ReplayError("no start record: not an autoscale.jsonl written by `pktlb autoscale`")
    return start


def replay(records: list[dict[str, Any]], policy: ScalingConfig, metric: str, smoothing: float,
           source: str = "") -> list[dict[str, Any]]:
    start = recorded_start(records)
    ewma, samples = Ewma(smoothing), []
    for r in records:
        if r["type"] != "sample":
            continue
        raw = (r.get("metrics") or {}).get(metric)
        if raw is None and r.get("metric") == metric:
            raw = r.get("raw")
        if raw is None:
            continue
        ewma = ewma.update(float(raw), float(r["time"]))
        samples.append((Sample(float(r["time"]), float(ewma.value or 0.0)), float(raw)))
    if not samples:
        recorded = sorted({k for r in records if r["type"] == "sample" for k, v in (r.get("metrics") or {}).items()
                           if v is not None})
        raise ReplayError(f"no sample of {metric!r} in the recording (it has {', '.join(recorded) or 'none'})")
    protected = set(start.get("protected", []))
    initial = [BackendView(name, -math.inf, protected=name in protected) for name in start.get("backends", [])]
    steps = simulate(policy, [s for s, _ in samples], initial, prefix="r")
    out: list[dict[str, Any]] = [{
        "type": "start", "time": 0.0, "wall": start.get("wall", ""), "metric": metric, "target": policy.target,
        "service": start.get("service"), "policy": asdict(policy), "period": start.get("period"),
        "smoothing": smoothing, "drain_timeout": 0.0, "backends": [b.name for b in initial],
        "protected": sorted(protected), "replay_of": source}]
    for step, (_, raw) in zip(steps, samples, strict=True):
        d = step.decision
        serving = [b for b in step.backends if not b.draining]
        out.append({"type": "sample", "time": d.time, "metric": metric, "raw": raw, "value": step.sample.value,
                    "metrics": {metric: raw}, "per_backend": {}, "backends": d.current, "ready": d.ready,
                    "draining": 0, "p99_ms": None,
                    "decision": {k: v for k, v in d.as_dict().items() if k not in ("time", "current")}})
        if d.action == SCALE_OUT:
            names = [b.name for b in serving[len(serving) - d.add:]]
            out.append({"type": "scale_out", "time": d.time, "backends": names, "reason": d.reason})
        elif d.action == SCALE_IN:
            out.append({"type": "scale_in", "time": d.time, "backends": list(d.remove), "reason": d.reason})
    out.append({"type": "end", "time": steps[-1].decision.time, "samples": len(steps),
                "backends": [b.name for b in steps[-1].backends if not b.draining]})
    return out


__all__ = ["replay", "recorded_start", "ReplayError"]
