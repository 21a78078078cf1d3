"""`pktlb announce run`: one LB's announcement supervisor, between its engine and its BGP speaker.

Every ``interval`` seconds it asks the engine for its stats (the engine's control socket), turns
them into a verdict (``policy.decide``) and the verdict into the announced state (rise/fall), and
makes the LB's BIRD agree: the static protocol ``announce`` enabled (VIPs announced) or disabled
(withdrawn).  It checks BIRD's actual state on every poll, so a BIRD that was restarted (and so
starts with the protocol disabled) is brought back in line within one poll.

Operator commands come on its own control socket (``status``, ``drain``, ``resume``); SIGTERM and
SIGINT only set a flag: the loop then withdraws and exits.  Each change is one JSON line in the
journal (wall and monotonic time, announced or not, reason), which the tier report reads.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pktlb.adapters import birdctl
from pktlb.daemon.announce.birdconf import ANNOUNCE_PROTOCOL
from pktlb.daemon.announce.policy import Hysteresis, Verdict, decide
from pktlb.daemon.ctlsock import ControlClientError, ControlServer, request
from pktlb.daemon.reactor import Reactor

log = logging.getLogger("pktlb.announce")


@dataclass(frozen=True)
class AnnounceSettings:
    engine_socket: str
    bird_socket: str
    control_socket: str
    vips: tuple[str, ...]
    interval: float = 0.2
    rise: int = 2
    fall: int = 1
    stats_timeout: float = 1.0
    journal: str | None = None
    ready_file: str | None = None
    protocol: str = ANNOUNCE_PROTOCOL


class Announcer:
    def __init__(self, settings: AnnounceSettings, reactor: Reactor | None = None) -> None:
        if settings.interval <= 0:
            raise ValueError(f"--interval {settings.interval}: must be above 0")
        self.s = settings
        self.reactor = reactor or Reactor()
        self.state = Hysteresis(settings.rise, settings.fall)
        self.drained = False
        self.stopping = False
        self.last_verdict = Verdict(False, "not polled yet")
        self.bird_state: bool | None = None  # what BIRD said last time (None: not reachable)
        self.bird_error: str | None = None
        self.polls = 0
        self.changes = 0
        self.server: ControlServer | None = None

    # -- one poll -----------------------------------------------------------------------------
    def poll(self) -> None:
        stats, error = None, None
        try:
            stats = request(self.s.engine_socket, {"cmd": "stats"}, timeout=self.s.stats_timeout)
        except ControlClientError as exc:
            error = str(exc)
        self.polls += 1
        self.apply(decide(stats, error, self.s.vips, drained=self.drained, stopping=self.stopping))

    def apply(self, verdict: Verdict) -> None:
        self.last_verdict = verdict
        if self.state.feed(verdict):
            self.changes += 1
            log.info("%s: %s", "announce" if self.state.announced else "withdraw", verdict.reason)
            self._journal("announce" if self.state.announced else "withdraw", verdict.reason)
        self.reconcile()

    def reconcile(self) -> None:
        """Make BIRD's protocol state match the announced state (checked every time)."""
        want = self.state.announced
        try:
            rows = birdctl.protocols(self.s.bird_socket)
            row = rows.get(self.s.protocol)
            if row is None:
                raise birdctl.BirdError(f"BIRD has no protocol {self.s.protocol!r}")
            actual = row.state == "up"
            if actual != want:
                birdctl.set_protocol(self.s.bird_socket, self.s.protocol, want)
                self._journal("bird", f"{'enabled' if want else 'disabled'} {self.s.protocol}")
                actual = want
            self.bird_state, self.bird_error = actual, None
        except birdctl.BirdError as exc:
            if self.bird_error != str(exc):
                log.warning("BIRD: %s", exc)
            self.bird_state, self.bird_error = None, str(exc)

    def _journal(self, event: str, detail: str) -> None:
        if not self.s.journal:
            return
        line = {"t": round(time.time(), 4), "mono": round(time.monotonic(), 4), "event": event,
                "announced": self.state.announced, "detail": detail}
        with open(self.s.journal, "a") as fh:
            fh.write(json.dumps(line) + "\n")

    # -- the control socket -------------------------------------------------------------------
    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req["cmd"]
        if cmd == "drain":
            self.drained = True
            self.apply(decide(None, None, self.s.vips, drained=True))
        elif cmd == "resume":
            self.drained = False
        elif cmd != "status":
            raise ValueError(f"unknown command {cmd!r}: expected status, drain or resume")
        return self.status()

    def status(self) -> dict[str, Any]:
        return {"announced": self.state.announced, "reason": self.state.reason, "drained": self.drained,
                "verdict": {"announce": self.last_verdict.announce, "reason": self.last_verdict.reason},
                "bird": {"protocol_up": self.bird_state, "error": self.bird_error}, "vips": list(self.s.vips),
                "polls": self.polls, "changes": self.changes, "pid": os.getpid()}

    # -- the loop -----------------------------------------------------------------------------
    def _on_flags(self) -> None:
        if self.reactor.take_flag("stop"):
            self.stopping = True
            self.reactor.stop()

    def run(self) -> int:
        self.reactor.flag_on_signal(signal.SIGTERM, "stop")
        self.reactor.flag_on_signal(signal.SIGINT, "stop")
        self.server = ControlServer(self.s.control_socket, self.handle, self.reactor)
        try:
            self._journal("start", f"vips {', '.join(self.s.vips)}")
            self.reconcile()  # a BIRD left announcing by an earlier run is brought in line at once
            self.reactor.every(self.s.interval, self.poll)
            if self.s.ready_file:
                Path(self.s.ready_file).parent.mkdir(parents=True, exist_ok=True)
                Path(self.s.ready_file).write_text(f"{os.getpid()}\n")
            self.reactor.run(self._on_flags)
        finally:
            self.stopping = True
            self.apply(decide(None, None, self.s.vips, stopping=True))  # withdraw, then exit
            self._journal("stop", "withdrawn" if self.bird_state is False else f"BIRD: {self.bird_error}")
            self.server.close()
            self.reactor.close()
        return 0
