"""``autoscale.jsonl``: one JSON object per line, every sample and every action of a run.

Every record has ``type`` and ``time`` (seconds since the run started).  Types:

* ``start``: ``metric``, ``target``, ``service``, ``policy`` (every ``ScalingConfig`` field),
  ``period``, ``smoothing`` (the EWMA's time constant, s), ``drain_timeout``, ``backends`` (the
  names at the start), ``protected``, ``wall`` (ISO 8601 start time), ``replay_of`` (a replay's input).
* ``sample``: one per period.  ``raw`` (the metric's total as read; null before a rate exists),
  ``value`` (after the EWMA; what the policy saw), ``metrics`` (every metric's raw total, for a
  replay with another ``--metric``), ``per_backend`` (the smoothed metric per backend), ``backends``
  (serving: ready + warming), ``ready``, ``draining``, ``p99_ms`` (request latency, when measured,
  else null) and ``decision``: the policy's ``action``, ``reason``, ``desired``, ``per_backend``,
  ``ratio``, ``recommendation``, ``stabilized``, ``add``, ``remove``.
* ``scale_out``: ``backends`` (names added), ``reason``, ``took_s`` (how long creating and adding
  them took: the loop waits for it, so a slow provider delays the next sample).  ``scale_in``: ``backends`` (names whose
  drain started), ``reason``.
* ``removed``: ``backend``, ``why`` (``drained``: no flows left; ``drain_timeout``), ``after_s``
  (drain duration), ``flows_left``.
* ``adopted`` / ``vanished``: a backend that appeared in / disappeared from the engine without the
  auto-scaler (an operator's ``pktlb backend add|remove``).
* ``error``: ``what`` (read, scale_out, drain, flows, remove) and ``error`` (the message).
* ``end``: ``backends`` (the names at the end), ``samples``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, Any


def _clean(value: Any) -> Any:
    """JSON has no infinities or NaN: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class Journal:
    """Appends records to a file (flushed per record, so a killed run keeps what it did) and keeps them."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out
        self.records: list[dict[str, Any]] = []

    def __call__(self, record: dict[str, Any]) -> None:
        record = _clean(record)
        self.records.append(record)
        if self.out is not None:
            self.out.write(json.dumps(record, sort_keys=False) + "\n")
            self.out.flush()


def read_journal(path: str | Path) -> list[dict[str, Any]]:
    """The records of an ``autoscale.jsonl``; ValueError naming the line that is not a JSON object."""
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
            if not isinstance(record, dict) or not isinstance(record.get("type"), str):
                raise ValueError(f"{path}:{number}: expected an object with a \"type\"")
            records.append(record)
    return records


__all__ = ["Journal", "read_journal"]
