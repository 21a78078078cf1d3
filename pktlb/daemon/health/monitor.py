"""The health subsystem as the daemon sees it: the checkers a config needs, the state book, events out.

The reactor owns the loop; a ``HealthMonitor`` only says which descriptors to watch and when it
next needs to run.  With ``pktlb.daemon.reactor.Reactor`` (the engine's one loop):

    monitor = HealthMonitor(config, now=reactor.clock(),
                            on_event=lambda e: control.set_health(e.service, e.backend, e.new, e.reason),
                            on_rtt=lambda svc, be, rtt: loads[(svc, be)].observe_rtt(rtt))
    monitor.attach(reactor)

or by hand in any loop: watch ``monitor.filenos()`` for reading and call
``monitor.on_readable(fd, now)``; call ``monitor.run_due(now)`` no later than ``monitor.due()``.
Snapshot states: ``monitor.forwarding_states()`` ((service, backend) -> "up"/"down", ``init``
counts as up); stats: ``monitor.summaries()`` (state, reason, since, last RTT, each check's
status) and ``monitor.counters()`` (per checker: sent, replies, unmatched, malformed, timeouts...).

``on_event(HealthEvent)`` is called on every state change (``event.forwarding_changed`` says
whether the backend's eligibility for new flows changed).  ``on_rtt(service, backend, seconds)``
feeds the ``lrt`` scheduler with the RTT of each backend's highest-level successful check (HTTP
over TCP over ICMP), the one closest to what a client experiences.  Checkers (and so raw sockets)
are created only for the check types the config uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pktlb.core.config import BackendConfig, Config, ServiceConfig
from pktlb.core.health import (
    CheckResult,
    HealthBook,
    HealthEvent,
    backend_health,
    check_targets,
    service_check_targets,
)
from pktlb.daemon.health.base import ScheduledChecker
from pktlb.daemon.health.registry import make_checker

RTT_PREFERENCE = ("http", "tcp", "icmp")  # the first configured one of these feeds lrt


def _rtt_check_for(checks: tuple[str, ...]) -> str:
    return next((c for c in RTT_PREFERENCE if c in checks), "")


class HealthMonitor:
    """Owns the checkers for one config and the ``HealthBook``; reports state changes as events."""

    def __init__(self, config: Config, *, now: float, on_event: Callable[[HealthEvent], None],
                 on_rtt: Callable[[str, str, float], None] | None = None,
                 checker_options: dict[str, dict[str, object]] | None = None) -> None:
        self.book = HealthBook.from_config(config, now)
        self._now = now  # the loop's time of the current on_readable/run_due call, for state changes
        self.on_event = on_event
        self.on_rtt = on_rtt
        self.checkers: dict[str, ScheduledChecker] = {}
        self._checker_options = checker_options or {}  # e.g. {"icmp": {"sock": fake}} in tests
        self._rtt_check: dict[tuple[str, str], str] = {}  # (service, backend) -> the check whose RTT feeds lrt
        self.events: list[HealthEvent] = []  # the last few changes, for stats
        self._reactor: Any = None
        self._planned: float | None = None  # the deadline a reactor timer is already set for
        targets = check_targets(config)
        try:
            for svc in config.services:
                for be in svc.backends:
                    self._rtt_check[(svc.name, be.name)] = _rtt_check_for(backend_health(svc, be).checks)
            # Spread the first attempts over one interval so the checks do not all leave at once.
            for i, target in enumerate(targets):
                offset = target.interval * i / max(1, len(targets))
                self._checker(target.check).add_target(target, now, first_at=now + offset)
        except BaseException:
            self.close()
            raise

    def _checker(self, name: str) -> ScheduledChecker:
        if name not in self.checkers:
            checker = make_checker(name, self._on_result, **self._checker_options.get(name, {}))
            self.checkers[name] = checker
            if self._reactor is not None:
                self._watch(checker.fileno())
        return self.checkers[name]

    def attach(self, reactor: Any) -> None:
        """Run inside a ``pktlb.daemon.reactor.Reactor``: a reader per descriptor, and a timer that
        follows ``due()`` (re-planned after each ``run_due``)."""
        self._reactor = reactor
        for fd in self.filenos():
            self._watch(fd)
        reactor.call_at(reactor.clock(), self._tick)

    def _watch(self, fd: int) -> None:
        reactor = self._reactor
        reactor.add_reader(fd, lambda: self.on_readable(fd, reactor.clock()))

    def _tick(self) -> None:
        if self._reactor is None:
            return
        self.run_due(self._reactor.clock())
        deadline = self.due()
        if deadline is not None and deadline != self._planned:
            self._planned = deadline
            self._reactor.call_at(deadline, self._tick)

    def _on_result(self, service: str, backend: str, result: CheckResult) -> None:
        state = self.book.states.get((service, backend))
        if state is None:
            return
        event = self.book.feed(service, backend, result, self._now)
        if result.ok and result.rtt is not None and self.on_rtt and result.check == self._rtt_check.get((service, backend)):
            self.on_rtt(service, backend, result.rtt)
        if event is not None:
            self.events = (self.events + [event])[-100:]
            self.on_event(event)

    def filenos(self) -> list[int]:
        return [c.fileno() for c in self.checkers.values()]

    def on_readable(self, fd: int, now: float) -> None:
        self._now = now
        for checker in self.checkers.values():
            if checker.fileno() == fd:
                checker.on_readable(now)

    def due(self, now: float | None = None) -> float | None:
        times = [t for t in (c.due(now) for c in self.checkers.values()) if t is not None]
        return min(times) if times else None

    def run_due(self, now: float) -> None:
        self._now = now
        for checker in self.checkers.values():
            checker.run_due(now)

    def add_backend(self, service: ServiceConfig, backend: BackendConfig, lb_address: str, now: float) -> None:
        """Start checking a backend added at run time (its state starts at ``init``)."""
        self.book.add(service.name, backend.name, backend_health(service, backend), now)
        self._rtt_check[(service.name, backend.name)] = _rtt_check_for(backend_health(service, backend).checks)
        for target in service_check_targets(service, (backend,), lb_address):
            self._checker(target.check).add_target(target, now)
        if self._reactor is not None:
            self._reactor.call_at(now, self._tick)

    def remove_backend(self, service: str, backend: str) -> None:
        for checker in self.checkers.values():
            checker.remove_target(service, backend)
        self.book.remove(service, backend)

    def forwarding_states(self) -> dict[tuple[str, str], str]:
        return self.book.forwarding_states()

    def summaries(self) -> list[dict[str, object]]:
        return self.book.summaries()

    def counters(self) -> dict[str, dict[str, int]]:
        return {name: dict(c.counters) for name, c in self.checkers.items()}

    def close(self) -> None:
        for checker in self.checkers.values():
            if self._reactor is not None:
                self._reactor.remove_reader(checker.fileno())
            checker.close()
        self._reactor = None
        self.checkers.clear()
