"""What every health checker shares: a schedule per target, attempts in flight, timeouts, results.

Every checker has the same shape, so the event loop treats them alike:

    fileno()          a descriptor to watch for reading (the ICMP socket, or an epoll set of sockets)
    on_readable(now)  read what is ready, deliver finished results
    due(now)          the absolute time of the next probe to send or attempt to time out (None: idle)
    run_due(now)      send what is due, time out what is overdue

Results go to ``on_result(service, backend, CheckResult)``.  Nothing blocks: every attempt has a
deadline of ``timeout`` seconds, after which it counts as a timeout.  Attempts start every
``interval`` seconds whether or not the previous one has finished, so a dead backend is noticed
within ``interval * fall + timeout`` (the last of ``fall`` failing attempts starts at most
``interval * fall`` after the failure and times out ``timeout`` later).  When an attempt finishes,
older attempts of the same target still in flight are dropped (``superseded``), so results reach
the state machine in the order the attempts started.

``attach(reactor)`` runs a checker on its own inside a ``pktlb.daemon.reactor.Reactor`` (``pktlb
probe``); the ``HealthMonitor`` attaches the checkers of a whole config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from pktlb.core.health import CheckResult, CheckTarget
from pktlb.daemon.reactor import Reactor

ResultCallback = Callable[[str, str, CheckResult], None]


@dataclass(slots=True)
class Schedule:
    target: CheckTarget
    next_at: float
    remaining: int | None = None  # probes left to send; None: for ever


@dataclass(slots=True)
class Attempt:
    target: CheckTarget
    started: float
    deadline: float


AttemptT = TypeVar("AttemptT", bound=Attempt)


class ScheduledChecker(ABC, Generic[AttemptT]):
    """Starts an attempt per target every ``interval`` and times attempts out after ``timeout``;
    ``AttemptT`` is the kind of attempt the checker keeps in flight."""

    name: ClassVar[str]

    def __init__(self, on_result: ResultCallback) -> None:
        self.on_result = on_result
        self.schedules: dict[tuple[str, str], Schedule] = {}
        self.inflight: dict[Hashable, AttemptT] = {}
        self.counters: Counter[str] = Counter()

    def add_target(self, target: CheckTarget, now: float, *, first_at: float | None = None,
                   count: int | None = None) -> None:
        """Check ``target`` from ``first_at`` (default: now) every ``target.interval``; ``count`` bounds it."""
        if target.check != self.name:
            raise ValueError(f"a {self.name} checker cannot run a {target.check} check")
        self.schedules[target.key] = Schedule(target, now if first_at is None else first_at, count)

    def remove_target(self, service: str, backend: str) -> None:
        """Stop checking; attempts in flight are abandoned without a result."""
        self.schedules.pop((service, backend), None)
        for key, attempt in list(self.inflight.items()):
            if attempt.target.key == (service, backend):
                self._abandon(self.inflight.pop(key))

    @property
    def idle(self) -> bool:
        return not self.schedules and not self.inflight

    def due(self, now: float | None = None) -> float | None:
        times = [s.next_at for s in self.schedules.values()] + [a.deadline for a in self.inflight.values()]
        return min(times) if times else None

    def run_due(self, now: float) -> None:
        for schedule in list(self.schedules.values()):
            if schedule.next_at > now:
                continue
            self.counters["started"] += 1
            self._launch(schedule.target, now)
            schedule.next_at += schedule.target.interval
            if schedule.next_at <= now:  # the loop fell behind: do not send a burst to catch up
                schedule.next_at = now + schedule.target.interval
            if schedule.remaining is not None:
                schedule.remaining -= 1
                if schedule.remaining <= 0:
                    del self.schedules[schedule.target.key]
        overdue = sorted((a.deadline, i, k) for i, (k, a) in enumerate(self.inflight.items()) if a.deadline <= now)
        for _, _, key in overdue:
            attempt = self.inflight.get(key)
            if attempt is not None:
                del self.inflight[key]
                self._abandon(attempt)
                self.counters["timeouts"] += 1
                self._deliver(attempt.target, self._timeout_result(attempt, now))

    def _deliver(self, target: CheckTarget, result: CheckResult) -> None:
        self.counters[result.status] += 1
        self.on_result(target.service, target.backend, result)

    def _finish(self, key: Hashable, result: CheckResult) -> None:
        attempt = self.inflight.pop(key, None)
        if attempt is None:
            return
        self._abandon(attempt)
        # The newest news wins: older attempts of this target still in flight are dropped, so the
        # state machine sees results in the order the attempts started (a probe lost while the link
        # was down must not time out after a newer one proved the backend back).
        for other_key, other in list(self.inflight.items()):
            if other.target.key == attempt.target.key and other.started < attempt.started:
                del self.inflight[other_key]
                self._abandon(other)
                self.counters["superseded"] += 1
        self._deliver(attempt.target, result)

    @abstractmethod
    def fileno(self) -> int: ...

    @abstractmethod
    def on_readable(self, now: float) -> None: ...

    @abstractmethod
    def _launch(self, target: CheckTarget, now: float) -> None:
        """Start one attempt: put it in ``inflight``, or deliver a result at once if it failed to start."""

    @abstractmethod
    def _timeout_result(self, attempt: AttemptT, now: float) -> CheckResult: ...

    def _abandon(self, attempt: AttemptT) -> None:
        """Release what an attempt holds (its socket)."""
        return None

    def close(self) -> None:
        for attempt in self.inflight.values():
            self._abandon(attempt)
        self.inflight.clear()
        self.schedules.clear()

    def attach(self, reactor: Reactor) -> None:
        """Run inside ``reactor``: read when the descriptor is readable, and a timer that follows ``due()``."""
        reactor.add_reader(self.fileno(), lambda: self.on_readable(reactor.clock()))

        def tick() -> None:
            self.run_due(reactor.clock())
            deadline = self.due()
            if deadline is not None:
                reactor.call_at(deadline, tick)

        reactor.call_at(reactor.clock(), tick)

    def detach(self, reactor: Reactor) -> None:
        reactor.remove_reader(self.fileno())
