"""The ICMP prober: echo requests to every backend through one raw socket, matched replies, RTTs.

Each backend (target) gets its own ICMP identifier; sequence numbers count up per target, and
each probe carries a random nonce in its payload.  A reply counts only when its identifier and
sequence name a probe still in flight, its source is the address that probe should answer from
(the backend, or the VIP for an encapsulated probe) and its nonce matches; anything else
(another program's ping, a reply that came after its timeout) is counted as ``unmatched`` and
ignored, and a packet that does not parse is counted as ``malformed``.  An ICMP error quoting one
of our probes (host or protocol unreachable) fails that probe at once with ``L3UNR``.

Counters (``self.counters``): started, sent, replies, unmatched, malformed, timeouts,
unreachable, send_errors, plus one per result status.

``probe_once`` runs the same prober on its own ``Reactor`` for ``pktlb probe``.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pktlb.adapters.icmp_socket import (
    UNREACHABLE_ERRNOS,
    EchoReply,
    IcmpErrorReport,
    IcmpSocket,
    Malformed,
    local_address_for,
    make_payload,
    parse_icmp_packet,
)
from pktlb.core.health import L3OK, L3TOUT, L3UNR, SOCKERR, CheckResult, CheckTarget
from pktlb.daemon.health.base import Attempt, ResultCallback, ScheduledChecker
from pktlb.daemon.reactor import Reactor


@dataclass(slots=True)
class Probe(Attempt):
    ident: int
    seq: int
    nonce: int
    reply_from: str  # the address a genuine reply comes from


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """One probe's fate, with what ``pktlb probe`` prints."""

    target: str
    ident: int
    seq: int
    status: str
    rtt: float | None  # seconds
    ttl: int | None
    reply_from: str | None
    reason: str


class IcmpProber(ScheduledChecker[Probe]):
    """L3 check: ICMP echo, plain or (tunnel mode) through the backend's IP-in-IP decapsulator."""

    name = "icmp"

    def __init__(self, on_result: ResultCallback, *, sock: Any = None, ident_base: int | None = None,
                 on_probe: Callable[[CheckTarget, ProbeOutcome], None] | None = None,
                 nonce: Callable[[], int] | None = None) -> None:
        super().__init__(on_result)
        self.sock = sock if sock is not None else IcmpSocket()
        self.on_probe = on_probe
        self._ident_base = random.getrandbits(16) if ident_base is None else ident_base & 0xFFFF
        self._nonce = nonce or (lambda: random.getrandbits(64))
        self.idents: dict[tuple[str, str], int] = {}
        self._next_seq: dict[tuple[str, str], int] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def add_target(self, target: CheckTarget, now: float, *, first_at: float | None = None,
                   count: int | None = None) -> None:
        super().add_target(target, now, first_at=first_at, count=count)
        if target.key not in self.idents:
            used = set(self.idents.values())
            ident = self._ident_base
            while ident in used:
                ident = (ident + 1) & 0xFFFF
            self.idents[target.key] = ident
            self._next_seq[target.key] = 1

    def remove_target(self, service: str, backend: str) -> None:
        super().remove_target(service, backend)
        self.idents.pop((service, backend), None)
        self._next_seq.pop((service, backend), None)

    def _launch(self, target: CheckTarget, now: float) -> None:
        ident = self.idents[target.key]
        seq = self._next_seq[target.key]
        self._next_seq[target.key] = seq % 0xFFFF + 1
        nonce = self._nonce()
        reply_from = target.vip if target.encapsulated else target.address
        probe = Probe(target, now, now + target.timeout, ident, seq, nonce, reply_from)
        self.inflight[(ident, seq)] = probe
        try:
            if target.encapsulated:
                self.sock.send_encapsulated_echo(target.source, target.address, target.source, target.vip,
                                                 ident, seq, make_payload(nonce))
            else:
                self.sock.send_echo(target.address, ident, seq, make_payload(nonce))
        except OSError as exc:
            self.counters["send_errors"] += 1
            status = L3UNR if exc.errno in UNREACHABLE_ERRNOS else SOCKERR
            self._settle((ident, seq), status, f"send failed: {exc.strerror or exc}", now)
            return
        self.counters["sent"] += 1

    def on_readable(self, now: float) -> None:
        for raw in self.sock.receive():
            parsed = parse_icmp_packet(raw)
            if isinstance(parsed, Malformed):
                self.counters["malformed"] += 1
            elif isinstance(parsed, EchoReply):
                self._on_reply(parsed, now)
            elif isinstance(parsed, IcmpErrorReport):
                self._on_error(parsed, now)
            else:
                self.counters["unmatched"] += 1

    def _on_reply(self, reply: EchoReply, now: float) -> None:
        probe = self.inflight.get((reply.ident, reply.seq))
        if not isinstance(probe, Probe) or reply.src != probe.reply_from or reply.nonce != probe.nonce:
            self.counters["unmatched"] += 1
            return
        self.counters["replies"] += 1
        rtt = now - probe.started
        self._settle((reply.ident, reply.seq), L3OK, f"echo reply in {rtt * 1e3:.3f} ms", now, rtt=rtt,
                     ttl=reply.ttl, reply_from=reply.src)

    def _on_error(self, report: IcmpErrorReport, now: float) -> None:
        probe = self.inflight.get((report.ident, report.seq))
        if not isinstance(probe, Probe) or report.orig_dst != probe.target.address:
            self.counters["unmatched"] += 1
            return
        self.counters["unreachable"] += 1
        self._settle((report.ident, report.seq), L3UNR, report.describe(), now, reply_from=report.reporter)

    def _settle(self, key: tuple[int, int], status: str, reason: str, now: float, *, rtt: float | None = None,
                ttl: int | None = None, reply_from: str | None = None) -> None:
        probe = self.inflight.get(key)
        if not isinstance(probe, Probe):
            return
        self._report(probe, status, reason, rtt, ttl, reply_from)
        self._finish(key, CheckResult(self.name, status, reason, rtt=rtt))

    def _report(self, probe: Probe, status: str, reason: str, rtt: float | None, ttl: int | None,
                reply_from: str | None) -> None:
        if self.on_probe is not None:
            self.on_probe(probe.target, ProbeOutcome(probe.target.address, probe.ident, probe.seq, status, rtt,
                                                     ttl, reply_from, reason))

    def _timeout_result(self, attempt: Probe, now: float) -> CheckResult:
        reason = f"no echo reply within {attempt.target.timeout:g} s"
        self._report(attempt, L3TOUT, reason, None, None, None)
        return CheckResult(self.name, L3TOUT, reason)

    def close(self) -> None:
        super().close()
        self.sock.close()


def probe_once(target: str, count: int = 4, interval: float = 1.0, timeout: float = 1.0, *,
               tunnel_vip: str | None = None, source: str | None = None, counters: dict[str, int] | None = None,
               sock: Any = None, clock: Callable[[], float] = time.monotonic) -> Iterator[ProbeOutcome]:
    """Send ``count`` echo requests to ``target`` ``interval`` seconds apart and yield each outcome as it
    is known (reply, unreachable or timeout).  Blocking; takes at most about count*interval + timeout.

    With ``tunnel_vip`` the requests go IP-in-IP through the target's decapsulator to the VIP.
    ``counters``, when given, is filled with the prober's counters at the end.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1 (got {count})")
    outcomes: deque[ProbeOutcome] = deque()
    prober = IcmpProber(lambda *_: None, sock=sock, on_probe=lambda _t, outcome: outcomes.append(outcome))
    if tunnel_vip and not source:
        source = local_address_for(target)
    check = CheckTarget(service="probe", backend=target, check="icmp", address=target, port=0,
                        interval=interval, timeout=timeout, source=source or "", vip=tunnel_vip or "",
                        encapsulated=bool(tunnel_vip))
    reactor = Reactor(clock)
    try:
        prober.add_target(check, reactor.clock(), count=count)
        prober.attach(reactor)
        while not prober.idle or outcomes:
            while outcomes:
                yield outcomes.popleft()
            if not prober.idle:
                reactor.run_once()
    finally:
        if counters is not None:
            counters.update(prober.counters)
        prober.detach(reactor)
        reactor.close()
        prober.close()
