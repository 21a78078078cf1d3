"""The scheduler interface, the figures load-aware schedulers read, and ring deltas (the registry is ``registry``).

A scheduler instance is built by the control plane for one service from the backends that may
take new flows (up, not draining, weight > 0), off the packet path, and is part of an immutable
forwarding snapshot.  Schedulers that need live figures (least connections, response time,
bandwidth) read them from ``BackendLoad`` objects that the engine and health checker update.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from pktlb.core.flowkey import FlowKey
    from pktlb.core.snapshot import BackendView


class BackendLoad:
    """Mutable live figures for one backend of one service (shared by engine, prober and scheduler)."""

    __slots__ = ("active_flows", "rtt", "bytes_rate", "_bytes_window", "_window_start")

    def __init__(self) -> None:
        self.active_flows = 0
        self.rtt: float | None = None  # EWMA of response time in seconds (health checks, TCP handshakes)
        self.bytes_rate = 0.0  # EWMA of bytes per second
        self._bytes_window = 0
        self._window_start: float | None = None

    def observe_rtt(self, seconds: float, alpha: float = 0.3) -> None:
        self.rtt = seconds if self.rtt is None else (1 - alpha) * self.rtt + alpha * seconds

    def add_bytes(self, n: int, now: float, window: float = 1.0, alpha: float = 0.5) -> None:
        """Count bytes; once per ``window`` seconds fold the window's rate into the EWMA."""
        if self._window_start is None:
            self._window_start = now
        self._bytes_window += n
        elapsed = now - self._window_start
        if elapsed >= window:
            rate = self._bytes_window / elapsed
            self.bytes_rate = (1 - alpha) * self.bytes_rate + alpha * rate
            self._bytes_window = 0
            self._window_start = now


class Scheduler(ABC):
    """Chooses a backend for a flow the flow table does not know yet."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""  # one line for ``pktlb simulate`` and --help texts
    consistent: ClassVar[bool] = False  # True when removing a backend only moves that backend's flows
    weighted: ClassVar[bool] = True  # False when shares ignore the weights (rr)
    uses_byte_rate: ClassVar[bool] = False  # True: the engine feeds each packet's bytes to BackendLoad (bw)
    # What ``lookup_table`` is indexed by when the choice is a pure function of the packet ("flow": the
    # 5-tuple hash, "source": the source-address hash), None when it needs state (the kernel fast path
    # then punts new flows to Python).
    hash_input: ClassVar[str | None] = None

    def __init__(self, backends: Sequence[BackendView], *, seed: int, table_size: int = 65537) -> None:
        # A backend of weight 0 never takes a new flow (the snapshot builder already filters them out).
        self.backends = tuple(b for b in backends if b.weight > 0)
        self.seed = seed

    @abstractmethod
    def pick(self, key: FlowKey, flow_hash: int, loads: Mapping[str, BackendLoad]) -> BackendView | None:
        """The backend for a new flow, or None when there is none to pick."""

    def lookup_table(self) -> tuple[BackendView, ...]:
        """For a ``hash_input`` scheduler: ``pick`` is ``table[h % len(table)]`` (empty: no backend)."""
        return ()

    def explain(self, key: FlowKey, flow_hash: int, loads: Mapping[str, BackendLoad]) -> str:
        """One line saying why ``pick`` chose what it chose (for ``pktlb explain``)."""
        chosen = self.pick(key, flow_hash, loads)
        return f"{self.name}: picked {chosen.name if chosen else 'nothing'}"


_NO_LOAD = BackendLoad()  # read-only stand-in for a backend that has no figures yet


def load_of(loads: Mapping[str, BackendLoad], name: str) -> BackendLoad:
    """The live figures of a backend; a backend missing from ``loads`` counts as idle (zero load)."""
    return loads.get(name, _NO_LOAD)


def ring_delta(old: Sequence[str] | None, new: Sequence[str] | None) -> int:
    """How many lookup-table slots point to a different backend in ``new`` than in ``old``.

    Tables are sequences of backend names, one per slot (``MaglevScheduler.table``).  Tables of
    different sizes (or a missing one) share no slots, so every slot of the new table counts.
    """
    if not new:
        return len(old or ())
    if old is None or len(old) != len(new):
        return len(new)
    return sum(1 for a, b in zip(old, new, strict=True) if a != b)
