"""The proxy's counters: per service (the client side) and per backend (the server side), rejections by reason.

Per service: client connections, valid request heads read, responses sent to clients by status
class (the proxy's own answers included), and the proxy's own answers or cut connections by reason
(``pktlb.core.l7.rejects``).  Per backend: requests sent (retries included), response heads received
by class, failures by reason, connections opened and requests that reused a pooled connection.
``connections_opened / requests`` is the figure an L4 balancer cannot bring under 1.
"""

from __future__ import annotations

from collections import Counter


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class BackendCounters:
    __slots__ = ("requests", "responses", "failures", "connections_opened", "reused")

    def __init__(self) -> None:
        self.requests = 0  # requests sent to this backend (retries included)
        self.responses: Counter[str] = Counter()  # response heads received, by status class
        self.failures: Counter[str] = Counter()  # backend_refused, backend_reset, backend_timeout, ...
        self.connections_opened = 0  # TCP connections the proxy opened to it
        self.reused = 0  # requests sent over a pooled connection that an earlier request had used

    def as_dict(self) -> dict[str, object]:
        return {"requests": self.requests, "responses": dict(sorted(self.responses.items())),
                "failures": dict(sorted(self.failures.items())), "connections_opened": self.connections_opened,
                "reused": self.reused}


class ServiceCounters:
    __slots__ = ("connections", "open_connections", "requests", "forwarded", "rejects", "responses",
                 "idle_closed", "tls_full", "tls_resumed", "sticky")

    def __init__(self) -> None:
        self.connections = 0  # client connections accepted
        self.open_connections = 0  # client connections open now
        self.requests = 0  # valid request heads read from clients (a refused head is only a reject)
        self.forwarded = 0  # requests that reached a backend's pool (answered by a backend or failed there)
        self.rejects: Counter[str] = Counter()  # answers (or cut connections) of the proxy's own, by reason
        self.responses: Counter[str] = Counter()  # responses sent to clients, by status class (the proxy's too)
        self.idle_closed = 0  # keep-alive connections closed after idle_timeout without a request
        self.tls_full = 0  # TLS handshakes with the certificate and a key exchange signature
        self.tls_resumed = 0  # TLS handshakes that resumed an earlier session (ticket or session id)
        self.sticky: Counter[str] = Counter()  # cookie persistence: kept, moved, new (pktlb.core.l7.sticky)

    def as_dict(self) -> dict[str, object]:
        return {"connections": self.connections, "open_connections": self.open_connections,
                "requests": self.requests, "forwarded": self.forwarded, "rejects": dict(sorted(self.rejects.items())),
                "responses": dict(sorted(self.responses.items())), "idle_closed": self.idle_closed,
                "tls_full": self.tls_full, "tls_resumed": self.tls_resumed, "sticky": dict(sorted(self.sticky.items()))}


class ProxyStats:
    def __init__(self) -> None:
        self.services: dict[str, ServiceCounters] = {}
        self.backends: dict[tuple[str, str], BackendCounters] = {}

    def service(self, name: str) -> ServiceCounters:
        counters = self.services.get(name)
        if counters is None:
            counters = self.services[name] = ServiceCounters()
        return counters

    def backend(self, service: str, backend: str) -> BackendCounters:
        counters = self.backends.get((service, backend))
        if counters is None:
            counters = self.backends[(service, backend)] = BackendCounters()
        return counters

    def rejects_total(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counters in self.services.values():
            total.update(counters.rejects)
        return total
