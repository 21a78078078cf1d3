"""Polls every source once per interval (a thread each, so a hung engine delays only its own row)
and keeps what the page and /metrics read: the latest sample, rates, a few minutes of history
and the recent state changes.

``DashboardState`` is the one shared object: pollers ``record`` into it under a lock and wake
whoever waits in ``wait_newer`` (the page's server-sent event streams); readers get copies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from pktlb.daemon.dashboard.history import changed_keys, changes, history_point, rates
from pktlb.daemon.dashboard.sources import POLL_TIMEOUT, Sample, Source, poll

log = logging.getLogger("pktlb.dashboard")
DEFAULT_INTERVAL = 1.0  # seconds between two polls of one source
HISTORY_SECONDS = 300  # the chart's window
MAX_EVENTS = 200


class SourceState:
    """What is known about one source."""

    def __init__(self, source: Source, history_points: int) -> None:
        self.source = source
        self.sample: Sample | None = None
        self.rates: dict[str, Any] = {"backends": {}, "totals": {}, "drops": {}}
        self.history: deque[dict[str, Any]] = deque(maxlen=history_points)
        self.changed_at: dict[str, float] = {}  # "service/backend" -> wall time of its last state change
        self.polls = 0
        self.failures = 0


class DashboardState:
    def __init__(self, sources: list[Source], interval: float = DEFAULT_INTERVAL) -> None:
        self.interval = interval
        points = max(2, int(HISTORY_SECONDS / interval))
        self.sources = {s.name: SourceState(s, points) for s in sources}
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.seq = 0  # bumped on every recorded poll
        self._cond = threading.Condition()

    def record(self, sample: Sample) -> None:
        with self._cond:
            state = self.sources[sample.source.name]
            previous = state.sample
            try:
                new_rates, new_events = rates(previous, sample), changes(previous, sample)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:  # a reply of a shape we do not know
                log.warning("%s: unreadable stats reply", sample.source.name, exc_info=True)
                sample = Sample(sample.source, sample.polled_at, sample.monotonic, sample.duration,
                                error=f"unreadable stats reply: {type(exc).__name__}: {exc}")
                new_rates, new_events = rates(previous, sample), changes(previous, sample)
            state.rates = new_rates
            if sample.ok and previous is not None and previous.ok:
                state.history.append(history_point(sample, new_rates))
            for key in changed_keys(new_events):
                state.changed_at[key] = sample.polled_at
            self.events.extend(new_events)
            state.sample = sample
            state.polls += 1
            state.failures += not sample.ok
            self.seq += 1
            self._cond.notify_all()
        for event in new_events:
            log.info("%s", describe_event(event))

    def wait_newer(self, seq: int, timeout: float) -> int:
        """Block until a poll newer than ``seq`` was recorded (or timeout); the current sequence number."""
        with self._cond:
            self._cond.wait_for(lambda: self.seq > seq, timeout)
            return self.seq

    def samples(self) -> list[tuple[Sample | None, SourceState]]:
        with self._cond:
            return [(s.sample, s) for s in self.sources.values()]

    def view(self, max_events: int = 30) -> dict[str, Any]:
        """Everything the page draws, as JSON-able data (the history only as each source's last point)."""
        with self._cond:
            return {"seq": self.seq, "now": time.time(), "interval": self.interval,
                    "sources": [self._source_view(s) for s in self.sources.values()],
                    "events": list(self.events)[-max_events:]}

    def history(self) -> dict[str, Any]:
        with self._cond:
            return {"seq": self.seq, "interval": self.interval, "window": HISTORY_SECONDS,
                    "sources": {name: list(s.history) for name, s in self.sources.items()}}

    @staticmethod
    def _source_view(state: SourceState) -> dict[str, Any]:
        sample = state.sample
        view: dict[str, Any] = {"name": state.source.name, "socket": state.source.socket, "polls": state.polls,
                                "failures": state.failures, "rates": state.rates, "changed_at": dict(state.changed_at),
                                "last_point": state.history[-1] if state.history else None}
        if sample is None:
            return {**view, "ok": False, "kind": None, "error": "not polled yet", "data": None}
        return {**view, "ok": sample.ok, "kind": sample.kind, "error": sample.error, "data": sample.data,
                "workers": sample.workers, "polled_at": sample.polled_at,
                "poll_ms": round(sample.duration * 1000, 3)}


def describe_event(event: dict[str, Any]) -> str:
    """One line for the log: ``lab web/be2: up -> down (admin down) (set down by operator)``."""
    change = f"{event['from']} -> {event['to']}" if event.get("from") else event["to"]
    why = f" ({event['why']})" if event.get("why") else ""
    return f"{event['source']} {event.get('backend', event['what'])}: {change}{why}"


class Poller:
    """One thread per source, each polling at the state's interval until ``stop``."""

    def __init__(self, state: DashboardState, timeout: float = POLL_TIMEOUT) -> None:
        self.state = state
        self.timeout = min(timeout, max(state.interval * 2, 0.5))
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(s.source,), name=f"poll {s.source.name}",
                                          daemon=True) for s in state.sources.values()]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 1)

    def _run(self, source: Source) -> None:
        next_poll = time.monotonic()
        while not self._stop.is_set():
            self.state.record(poll(source, self.timeout))
            next_poll = max(next_poll + self.state.interval, time.monotonic())  # no catch-up bursts after a stall
            self._stop.wait(next_poll - time.monotonic())
