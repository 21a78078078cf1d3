"""Rules a request head must pass before the proxy routes it: each one small, each refusal a named reason.

The proxy asks every rule of the service's plan, in order, about each request head; the first
that names a reason ends the request with the proxy's own answer for it (``pktlb.core.l7.rejects``)
and no backend ever sees it.  Today's rules refuse what the proxy does not relay and bodies over
the limit; filtering at the balancer (method and path allow-lists, per-client rate limits, issue
20) adds rules here without touching the session.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from pktlb.core.l7.routing import RequestTarget, path_matches
from pktlb.core.l7.settings import L7Config


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What the rules may look at: the request line, the framing of its body and who sent it."""

    method: bytes
    target: RequestTarget
    content_length: int | None  # None: no Content-Length (no body, or a chunked one)
    chunked: bool
    client: str


class RequestRule(ABC):
    @abstractmethod
    def check(self, head: RequestHead, now: float) -> str | None:
        """None to let the request on, or the reason it is refused."""


class RefuseMethods(RequestRule):
    """CONNECT asks for a tunnel, not a response: a reverse proxy does not open one (501)."""

    def __init__(self, methods: frozenset[bytes] = frozenset({b"CONNECT"})) -> None:
        self.methods = methods

    def check(self, head: RequestHead, now: float) -> str | None:
        return "not_implemented" if head.method in self.methods else None


class BodyLimit(RequestRule):
    """A declared body over ``max_body_bytes`` is refused before it is read (413); a chunked body is
    counted as it is relayed (``pktlb.daemon.proxy.forward``)."""

    def __init__(self, max_body_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes

    def check(self, head: RequestHead, now: float) -> str | None:
        too_big = head.content_length is not None and head.content_length > self.max_body_bytes
        return "body_too_large" if too_big else None


class AllowMethods(RequestRule):
    """``[service.l7.filter] methods``: any other method is refused (405) at the balancer."""

    def __init__(self, methods: frozenset[bytes]) -> None:
        self.methods = methods

    def check(self, head: RequestHead, now: float) -> str | None:
        return None if head.method in self.methods else "method_not_allowed"


class AllowPaths(RequestRule):
    """``[service.l7.filter] paths``: a path under none of the prefixes (matched as routes match,
    after removing dot segments) is refused (403)."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        self.prefixes = prefixes

    def check(self, head: RequestHead, now: float) -> str | None:
        if any(path_matches(prefix, head.target.path) for prefix in self.prefixes):
            return None
        return "path_not_allowed"


def request_rules(l7: L7Config) -> tuple[RequestRule, ...]:
    """The rules of a service, in the order they are asked (the per-client rate limit, which has state
    that outlives a plan, is asked by the session itself: ``pktlb.core.l7.ratelimit``)."""
    rules: list[RequestRule] = [RefuseMethods(), BodyLimit(l7.max_body_bytes)]
    if l7.filter is not None and l7.filter.methods is not None:
        rules.append(AllowMethods(l7.filter.methods))
    if l7.filter is not None and l7.filter.paths is not None:
        rules.append(AllowPaths(l7.filter.paths))
    return tuple(rules)


def first_refusal(rules: tuple[RequestRule, ...], head: RequestHead, now: float) -> str | None:
    for rule in rules:
        reason = rule.check(head, now)
        if reason is not None:
            return reason
    return None
