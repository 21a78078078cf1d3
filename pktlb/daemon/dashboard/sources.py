"""What the dashboard polls: one control socket per load balancer, and one reply per poll.

A source answers ``{"cmd": "stats"}``; its reply says what it is in ``"kind"`` (``"engine"`` for
``pktlb run``; an engine too old to say is an engine; the L7 proxy answers ``"l7-proxy"``), and the
collector and the page render each kind their own way.  An engine run with ``--workers N`` has a
socket per worker; they are asked together and their counters added up (``worker_stats``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from pktlb.daemon.ctlsock import ControlClientError, request, worker_sockets
from pktlb.daemon.worker_stats import merge_worker_stats

ENGINE = "engine"
PROXY = "l7-proxy"  # `pktlb proxy` (pktlb.daemon.proxy.report.STATS_KIND)
POLL_TIMEOUT = 2.0  # seconds one source may take to answer before the poll counts as failed


@dataclass(frozen=True)
class Source:
    name: str  # the `lb` label in /metrics and the heading on the page
    socket: str


@dataclass
class Sample:
    """One poll of one source: its reply (``data``) or the reason there is none (``error``)."""
    source: Source
    polled_at: float  # wall clock (seconds since the epoch), for the page and the event log
    monotonic: float  # for rates
    duration: float  # seconds the poll took (every worker's request)
    data: dict[str, Any] | None = None
    error: str | None = None
    workers: int = 1
    kind: str = field(default=ENGINE)

    @property
    def ok(self) -> bool:
        return self.data is not None


def kind_of(reply: dict[str, Any]) -> str:
    kind = reply.get("kind", ENGINE)
    return kind if isinstance(kind, str) and kind else ENGINE


def poll(source: Source, timeout: float = POLL_TIMEOUT) -> Sample:
    """Ask the source (every worker of an engine) for its stats; never raises for a dead source."""
    wall, started = time.time(), time.monotonic()
    try:
        sockets = worker_sockets(source.socket)
        first = request(sockets[0], {"cmd": "stats"}, timeout)
        if not isinstance(first, dict):
            raise ControlClientError(f"{source.socket}: stats reply is not an object")
        kind = kind_of(first)
        if kind == ENGINE:
            parts = [first] + [request(path, {"cmd": "stats"}, timeout) for path in sockets[1:]]
            data, workers = merge_worker_stats(parts), len(parts)
        else:
            data, workers = first, 1
    except (ControlClientError, KeyError, TypeError, ValueError, AttributeError) as exc:  # dead, refused, malformed
        return Sample(source, wall, started, time.monotonic() - started, error=str(exc) or type(exc).__name__)
    return Sample(source, wall, started, time.monotonic() - started, data=data, workers=workers, kind=kind)


def name_for(socket_path: str) -> str:
    """A short name for a socket given without one: the lab's directory for ``.../<prefix>/pktlb.sock``,
    else the file name."""
    base = os.path.basename(socket_path.rstrip("/"))
    parent = os.path.basename(os.path.dirname(socket_path.rstrip("/")))
    return parent if base == "pktlb.sock" and parent else base


def make_sources(specs: list[str]) -> list[Source]:
    """``-s [NAME=]PATH`` values -> sources with unique names (a repeated name gets ``#2``, ``#3``)."""
    sources: list[Source] = []
    seen: dict[str, int] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or "/" in name:  # "/run/x=y/pktlb.sock" is a path, not NAME=PATH
            name, path = name_for(spec), spec
        if not path:
            raise ValueError(f"-s {spec!r}: expected PATH or NAME=PATH")
        seen[name] = seen.get(name, 0) + 1
        sources.append(Source(name if seen[name] == 1 else f"{name}#{seen[name]}", path))
    return sources
