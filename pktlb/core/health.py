"""Backend health: check results, the rise/fall state machine per backend, and the events it emits.

Pure: no sockets and no clock.  Every method that needs the time takes ``now`` (seconds on any
monotonic clock), so tests drive it with a fake clock.  The checkers in ``pktlb.daemon`` produce
``CheckResult``s; a ``HealthState`` per (service, backend) turns them into up/down decisions and
returns a ``HealthEvent`` when the backend's state changes; the control plane turns events into a
new forwarding snapshot.

Status codes follow HAProxy's check status field (``L4CON``, ``L7STS`` ...), with ``L3*`` codes
added for the ICMP check, which HAProxy does not have.

How several checks combine.  Each configured check type keeps its own verdict and its own
counters of consecutive successes and failures, because the checks run on their own schedules
(an ICMP reply arrives in microseconds, an HTTP answer may take a second), so there is no natural
"round".  A check's verdict goes down after ``fall`` failures in a row and back up after ``rise``
successes in a row.  The backend is up only when every check's verdict is up, and down as soon as
any one is down: one failing check takes it out, and it returns only when all checks have had
``rise`` good results since their last failure.

Initial state: a new backend starts in ``init`` and is *served* (treated as up by the forwarding
table), as HAProxy does by default (``init-state up``): a load balancer started next to healthy
backends forwards at once, and a student who starts the lab sees traffic without waiting for
``rise`` checks.  Nothing is known yet, so a single failed check takes an ``init`` check down at
once (no need to wait for ``fall`` failures of a backend that never answered), and a single good
result confirms it up.  A backend with no checks configured is ``up`` for good.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pktlb.core.config import BackendConfig, Config, HealthConfig, ServiceConfig
from pktlb.core.rewrite.registry import traits_of

# Backend health states.  ``init`` forwards like ``up`` (see the module docstring).
INIT, UP, DOWN = "init", "up", "down"

# Check status codes (HAProxy style): the level that answered, then what happened.
INI = "INI"  # not checked yet
L3OK, L3TOUT, L3UNR = "L3OK", "L3TOUT", "L3UNR"
L4OK, L4TOUT, L4CON = "L4OK", "L4TOUT", "L4CON"
L7OK, L7TOUT, L7STS, L7RSP = "L7OK", "L7TOUT", "L7STS", "L7RSP"
SOCKERR = "SOCKERR"

STATUS_MEANINGS = {
    INI: "not checked yet",
    L3OK: "ICMP echo reply received",
    L3TOUT: "no ICMP echo reply within the timeout",
    L3UNR: "destination unreachable (ICMP error, no route or no ARP answer)",
    L4OK: "TCP handshake completed",
    L4TOUT: "TCP handshake not completed within the timeout",
    L4CON: "TCP connection refused (RST)",
    L7OK: "HTTP answer with the expected status (and body)",
    L7TOUT: "connected, but no complete HTTP answer within the timeout",
    L7STS: "HTTP answer with an unexpected status code",
    L7RSP: "HTTP answer malformed or without the expected body text",
    SOCKERR: "local socket error",
}
OK_STATUSES = frozenset({L3OK, L4OK, L7OK})

# The checks a service may configure, with the layer each one proves alive.
CHECK_LEVELS = {"icmp": "L3", "tcp": "L4", "http": "L7"}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One finished check attempt.  ``ok`` follows from ``status``, so the two cannot disagree."""

    check: str  # "icmp" | "tcp" | "http"
    status: str  # one of STATUS_MEANINGS
    reason: str = ""  # human detail: "connection refused", "status 503, expected 200"
    rtt: float | None = None  # seconds, for successful attempts

    def __post_init__(self) -> None:
        if self.check not in CHECK_LEVELS:
            raise ValueError(f"unknown check type {self.check!r}: expected one of {', '.join(CHECK_LEVELS)}")
        if self.status not in STATUS_MEANINGS:
            raise ValueError(f"unknown check status {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES

    def describe(self) -> str:
        return f"{self.check} {self.status}: {self.reason or STATUS_MEANINGS[self.status]}"


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """A backend's state changed; the control plane rebuilds the snapshot when ``forwarding_changed``."""

    service: str
    backend: str
    old: str
    new: str
    reason: str
    at: float
    status: str  # the status code of the result that caused the change

    @property
    def forwarding_changed(self) -> bool:
        """True when the backend's eligibility for new flows changed (init -> up does not)."""
        return forwarding_state(self.old) != forwarding_state(self.new)

    def __str__(self) -> str:
        return f"{self.service}/{self.backend}: {self.old} -> {self.new} ({self.reason})"


def forwarding_state(state: str) -> str:
    """The snapshot state (``pktlb.core.snapshot`` UP/DOWN) for a health state: ``init`` is served."""
    return DOWN if state == DOWN else UP


@dataclass(slots=True)
class CheckTrack:
    """The verdict of one check type on one backend, with its streak counters."""

    check: str
    verdict: str = INIT
    successes: int = 0  # consecutive good results
    failures: int = 0  # consecutive bad results
    last: CheckResult | None = None
    last_at: float | None = None

    @property
    def status(self) -> str:
        return self.last.status if self.last else INI

    def record(self, result: CheckResult, now: float, rise: int, fall: int) -> None:
        self.last, self.last_at = result, now
        if result.ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.verdict == INIT or (self.verdict == DOWN and self.successes >= rise):
                self.verdict = UP
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.verdict == INIT or (self.verdict == UP and self.failures >= fall):
                self.verdict = DOWN


@dataclass
class HealthState:
    """The health of one backend of one service: a rise/fall state machine over its configured checks."""

    service: str
    backend: str
    checks: tuple[str, ...]
    rise: int = 2
    fall: int = 3
    since: float = 0.0  # time of creation, then of the last state change
    state: str = field(init=False)
    reason: str = field(init=False)  # why the state is what it is, as of the last change
    changes: int = field(init=False, default=0)
    last_rtt: float | None = field(init=False, default=None)
    tracks: dict[str, CheckTrack] = field(init=False)

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1:
            raise ValueError(f"rise and fall must be at least 1 (got rise={self.rise}, fall={self.fall})")
        unknown = [c for c in self.checks if c not in CHECK_LEVELS]
        if unknown:
            raise ValueError(f"unknown check type {unknown[0]!r}: expected one of {', '.join(CHECK_LEVELS)}")
        self.tracks = {c: CheckTrack(c) for c in dict.fromkeys(self.checks)}
        self.state = INIT if self.tracks else UP
        self.reason = "not checked yet" if self.tracks else "no checks configured"

    @property
    def last_change(self) -> float:
        return self.since

    @property
    def forwarding(self) -> str:
        return forwarding_state(self.state)

    def feed(self, result: CheckResult, now: float) -> HealthEvent | None:
        """Record one check result; a ``HealthEvent`` when the backend's state changed, else None."""
        track = self.tracks.get(result.check)
        if track is None:
            raise ValueError(f"{self.service}/{self.backend}: got a {result.check} result, "
                             f"but only {', '.join(self.checks) or 'no checks'} are configured")
        track.record(result, now, self.rise, self.fall)
        if result.ok and result.rtt is not None:
            self.last_rtt = result.rtt
        new = self._derived_state()
        if new == self.state:
            return None
        old, self.state, self.since = self.state, new, now
        self.changes += 1
        self.reason = self._explain(result)
        return HealthEvent(self.service, self.backend, old, new, self.reason, now, result.status)

    def current_problem(self) -> str:
        """What the failing checks say right now (may differ from ``reason`` while the backend stays down)."""
        failing = [t.last.describe() for t in self.tracks.values() if t.verdict == DOWN and t.last]
        return "; ".join(failing)

    def _derived_state(self) -> str:
        verdicts = [t.verdict for t in self.tracks.values()]
        if DOWN in verdicts:
            return DOWN
        if all(v == UP for v in verdicts):
            return UP
        return INIT

    def _explain(self, trigger: CheckResult) -> str:
        if self.state == DOWN:
            track = self.tracks[trigger.check]
            if track.verdict == DOWN and track.failures > 1:
                return f"{trigger.describe()} ({track.failures} failures in a row)"
            return trigger.describe()
        passed = ", ".join(f"{t.check} {t.status}" for t in self.tracks.values())
        return f"all checks passed ({passed})"

    def summary(self) -> dict[str, object]:
        """A JSON-ready description for ``pktlb stats``."""
        return {
            "service": self.service, "backend": self.backend, "state": self.state,
            "forwarding": self.forwarding, "since": self.since, "reason": self.reason,
            "changes": self.changes, "last_rtt": self.last_rtt,
            "checks": [{"check": t.check, "level": CHECK_LEVELS[t.check], "verdict": t.verdict,
                        "status": t.status, "detail": t.last.reason if t.last else "",
                        "successes": t.successes, "failures": t.failures, "at": t.last_at}
                       for t in self.tracks.values()],
        }


@dataclass(frozen=True, slots=True)
class CheckTarget:
    """What one checker needs to check one backend of one service (built from the config)."""

    service: str
    backend: str
    check: str  # "icmp" | "tcp" | "http"
    address: str  # the backend's address
    port: int  # the backend's port (tcp/http)
    interval: float
    timeout: float
    source: str = ""  # the LB's address (encapsulated probes need it as outer and inner source)
    vip: str = ""  # the service VIP
    encapsulated: bool = False  # icmp through the IP-in-IP path: outer dst backend, inner dst VIP
    http_path: str = "/health"
    http_status: int = 200
    http_body: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.service, self.backend)


def check_targets(config: Config) -> list[CheckTarget]:
    """Every (service, backend, check) the configuration asks for, in config order."""
    targets: list[CheckTarget] = []
    for svc in config.services:
        targets += service_check_targets(svc, svc.backends, config.lb.address)
    return targets


def backend_health(svc: ServiceConfig, backend: BackendConfig) -> HealthConfig:
    """The health settings for one backend: its [service.backend.health] overrides, else the service's."""
    return backend.health if backend.health is not None else svc.health


def service_check_targets(svc: ServiceConfig, backends: tuple[BackendConfig, ...] | list[BackendConfig],
                          lb_address: str) -> list[CheckTarget]:
    """The check targets of some backends of one service; ValueError for a combination that cannot work."""
    targets: list[CheckTarget] = []
    for be in backends:
        hc = backend_health(svc, be)
        where = f"service {svc.name}" + (f" backend {be.name}" if be.health is not None else "")
        if hc.encapsulated_icmp and not traits_of(svc.mode).needs_decapsulator:
            raise ValueError(f"{where}: health.encapsulated_icmp needs mode tunnel (mode is {svc.mode})")
        if hc.encapsulated_icmp and "icmp" not in hc.checks:
            raise ValueError(f"{where}: health.encapsulated_icmp is set but 'icmp' is not in health.checks")
        if svc.protocol != "tcp" and {"tcp", "http"} & set(hc.checks):
            raise ValueError(f"{where}: tcp and http checks need protocol tcp (protocol is {svc.protocol})")
        targets += [CheckTarget(service=svc.name, backend=be.name, check=check, address=be.address, port=be.port,
                                interval=hc.interval, timeout=hc.timeout, source=lb_address, vip=svc.vip,
                                encapsulated=check == "icmp" and hc.encapsulated_icmp, http_path=hc.http_path,
                                http_status=hc.http_status, http_body=hc.http_body)
                    for check in dict.fromkeys(hc.checks)]
    return targets


class HealthBook:
    """The ``HealthState`` of every backend of every service, keyed by (service name, backend name)."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, str], HealthState] = {}

    @classmethod
    def from_config(cls, config: Config, now: float) -> HealthBook:
        book = cls()
        for svc in config.services:
            for be in svc.backends:
                book.add(svc.name, be.name, backend_health(svc, be), now)
        return book

    def add(self, service: str, backend: str, health: HealthConfig, now: float) -> HealthState:
        state = HealthState(service, backend, tuple(dict.fromkeys(health.checks)), health.rise, health.fall, now)
        self.states[(service, backend)] = state
        return state

    def remove(self, service: str, backend: str) -> None:
        self.states.pop((service, backend), None)

    def feed(self, service: str, backend: str, result: CheckResult, now: float) -> HealthEvent | None:
        """Route a result to its backend; results for a backend removed meanwhile are dropped (None)."""
        state = self.states.get((service, backend))
        return state.feed(result, now) if state else None

    def forwarding_states(self) -> dict[tuple[str, str], str]:
        """(service, backend) -> "up"/"down", as ``build_snapshot(states=...)`` takes them."""
        return {key: s.forwarding for key, s in self.states.items()}

    def summaries(self) -> list[dict[str, object]]:
        return [s.summary() for s in self.states.values()]
