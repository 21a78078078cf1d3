"""Counters for the data path: per service, per backend and drops by reason.

``count`` is called once per frame with the engine's decision, so the totals always add up:
received = forwarded + replied + dropped (each drop under its reason).
"""

from __future__ import annotations

from collections import Counter

from pktlb.core.decision import DROP, FORWARD, OUTBOUND, REPLY, Decision


class BackendCounters:
    __slots__ = ("packets_in", "bytes_in", "packets_out", "bytes_out", "new_flows")

    def __init__(self) -> None:
        self.packets_in = self.bytes_in = self.packets_out = self.bytes_out = self.new_flows = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class Stats:
    def __init__(self) -> None:
        self.received = 0
        self.forwarded = 0
        self.replied = 0
        self.dropped = 0
        self.drops: Counter[str] = Counter()
        self.service_drops: dict[str, Counter[str]] = {}
        self.backends: dict[tuple[str, str], BackendCounters] = {}
        self.kernel_forwarded = 0  # of the forwarded frames, those the kernel fast path forwarded

    def backend(self, service: str, backend: str) -> BackendCounters:
        counters = self.backends.get((service, backend))
        if counters is None:
            counters = self.backends[(service, backend)] = BackendCounters()
        return counters

    def count(self, decision: Decision, nbytes: int) -> None:
        self.received += 1
        verdict = decision.verdict
        if verdict == FORWARD:
            self.forwarded += 1
            backend, service = decision.backend, decision.service
            if backend is not None and service is not None:
                counters = self.backends.get((service, backend)) or self.backend(service, backend)
                if decision.reason == OUTBOUND:
                    counters.packets_out += 1
                    counters.bytes_out += nbytes
                else:
                    counters.packets_in += 1
                    counters.bytes_in += nbytes
                    counters.new_flows += decision.new_flow
        elif verdict == REPLY:
            self.replied += 1
        else:
            self.dropped += 1
            self.drops[decision.reason] += 1
            if decision.service is not None:
                self.service_drops.setdefault(decision.service, Counter())[decision.reason] += 1

    def count_kernel(self, service: str, backend: str, packets_in: int, bytes_in: int, packets_out: int,
                     bytes_out: int) -> None:
        """Frames the kernel fast path forwarded for a flow (read back from its maps): counted as
        received and forwarded, so the totals still add up."""
        counters = self.backend(service, backend)
        counters.packets_in += packets_in
        counters.bytes_in += bytes_in
        counters.packets_out += packets_out
        counters.bytes_out += bytes_out
        self.received += packets_in + packets_out
        self.forwarded += packets_in + packets_out
        self.kernel_forwarded += packets_in + packets_out

    def totals(self) -> dict[str, object]:
        return {"received": self.received, "forwarded": self.forwarded, "replied": self.replied,
                "dropped": self.dropped, "drops": dict(self.drops), "kernel_forwarded": self.kernel_forwarded}

    def balanced(self) -> bool:
        return self.received == self.forwarded + self.replied + sum(self.drops.values()) and \
            self.dropped == sum(self.drops.values())


__all__ = ["Stats", "BackendCounters", "DROP"]
