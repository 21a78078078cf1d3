"""Which responses a shared cache may keep, and for how long (RFC 9111, the simple and safe subset).

A cache in the balancer answers repeated requests without a backend: each hit is a request the
backends never see.  It must never hand one client what was meant for another, so this subset is
strict:

- requests: only GET (and HEAD, answered from a stored GET) without a body, without
  ``Authorization``, without ``Cache-Control: no-store``; a request with ``no-cache`` or ``max-age=0``
  (a browser's reload) goes to a backend, and its answer replaces the stored one;
- responses: status 200, 203, 204, 300, 301, 308, 404, 410 only; never with ``no-store``, ``private``,
  ``no-cache`` (this cache does not revalidate), ``Set-Cookie`` or any ``Vary`` (one stored answer per
  URL, so an answer that varies by a request header is not kept at all);
- freshness only when the response states it: ``s-maxage``, else ``max-age``, else ``Expires`` minus
  ``Date``; an ``Age`` it already has counts against it.  No heuristic freshness.

Pure: header lists and seconds in, decisions out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from pktlb.core.l7.headers import Header

CACHEABLE_METHODS = frozenset({b"GET", b"HEAD"})
CACHEABLE_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 410})
NOT_STORED = frozenset({"no-store", "private", "no-cache"})


def cache_control(headers: Iterable[Header]) -> dict[str, str | None]:
    """The ``Cache-Control`` directives (lower-case names; a value or None): ``max-age=60, public`` ->
    {"max-age": "60", "public": None}."""
    directives: dict[str, str | None] = {}
    for name, value in headers:
        if name.lower() != b"cache-control":
            continue
        for part in value.decode("latin-1").split(","):
            key, eq, val = part.strip().partition("=")
            if key:
                directives.setdefault(key.lower(), val.strip().strip('"') if eq else None)
    return directives


def _seconds(value: str | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    return int(value)


def _date(value: bytes | None) -> float | None:
    if value is None:
        return None
    try:
        return parsedate_to_datetime(value.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _first(headers: Iterable[Header], name: bytes) -> bytes | None:
    return next((value for n, value in headers if n.lower() == name), None)


@dataclass(frozen=True, slots=True)
class RequestVerdict:
    lookup: bool  # may be answered from the cache
    store: bool  # its answer may be stored
    reason: str  # why not, for the counters ("" when both are true)


def request_verdict(method: bytes, headers: list[Header], has_body: bool) -> RequestVerdict:
    """What the cache may do for a request."""
    if method not in CACHEABLE_METHODS or has_body:
        return RequestVerdict(False, False, "method")
    if _first(headers, b"authorization") is not None:
        return RequestVerdict(False, False, "authorization")
    directives = cache_control(headers)
    if "no-store" in directives:
        return RequestVerdict(False, False, "request_no_store")
    if "no-cache" in directives or directives.get("max-age") == "0" or _first(headers, b"pragma") == b"no-cache":
        return RequestVerdict(False, method == b"GET", "request_no_cache")  # a reload: refetch, keep the new answer
    return RequestVerdict(True, method == b"GET", "")


def freshness(status: int, headers: list[Header], now: float) -> tuple[float, str]:
    """How many seconds a response may be served from the cache (0: not stored), and why not if 0."""
    if status not in CACHEABLE_STATUSES:
        return 0.0, "status"
    directives = cache_control(headers)
    refused = next((d for d in ("no-store", "private", "no-cache") if d in directives), None)
    if refused is not None:
        return 0.0, refused.replace("-", "_")
    if _first(headers, b"set-cookie") is not None:
        return 0.0, "set_cookie"
    if _first(headers, b"vary") is not None:
        return 0.0, "vary"
    lifetime = _seconds(directives.get("s-maxage"))
    if lifetime is None:
        lifetime = _seconds(directives.get("max-age"))
    if lifetime is None:
        expires = _date(_first(headers, b"expires"))
        if expires is None:
            return 0.0, "no_freshness"
        date = _date(_first(headers, b"date"))
        lifetime = int(expires - (date if date is not None else now))
    age = _seconds((_first(headers, b"age") or b"").decode("latin-1")) or 0
    remaining = float(lifetime - age)
    return (remaining, "") if remaining > 0 else (0.0, "stale")
