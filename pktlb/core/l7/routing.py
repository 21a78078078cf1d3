"""Which route a request takes: its Host and its path against the service's routes, first match wins.

A request names its site in the ``Host`` header (origin form, ``GET /a HTTP/1.1``) or in the target
itself (absolute form, ``GET http://site/a HTTP/1.1``, which then wins over ``Host``, RFC 9112 3.2.2).
Hosts compare in lower case without the port.  Paths compare after removing dot segments
(``/api/../admin`` is ``/admin``), as the backend will read them: a route cannot be sidestepped
with ``..``.  A prefix ending in ``/`` matches every path under it; one that does not (``/api``)
matches that path and the paths under it (``/api``, ``/api/x``) but not ``/apix``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pktlb.core.l7.settings import RouteConfig


@dataclass(frozen=True, slots=True)
class RequestTarget:
    """What routing reads from a request: the host (lower case, no port; "" if none) and the clean path."""

    host: str
    path: str
    origin_form: bytes  # the target to send to the backend: path and query, never the absolute form


def host_without_port(value: str) -> str:
    """``Example.COM:8080`` -> ``example.com``; ``[2001:db8::1]:80`` -> ``[2001:db8::1]``."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    return value.rsplit(":", 1)[0] if ":" in value else value


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 on a path that starts with ``/``: ``/a/./b/../c`` -> ``/a/c``."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif segment == ".":
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def parse_target(target: bytes, host_header: bytes | None) -> RequestTarget:
    """The host and path a request asks for.  ``target`` is the request line's second word."""
    text = target.decode("latin-1")
    host = host_header.decode("latin-1") if host_header is not None else ""
    if text[:8].lower().startswith(("http://", "https://")):
        rest = text.split("://", 1)[1]
        authority, slash, tail = rest.partition("/")
        host = authority.rsplit("@", 1)[-1]
        text = slash + tail if slash else "/"
    if text == "*":  # OPTIONS * HTTP/1.1
        return RequestTarget(host_without_port(host), "*", b"*")
    path = text.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    return RequestTarget(host_without_port(host), remove_dot_segments(path), text.encode("latin-1"))


def host_matches(pattern: str | None, host: str) -> bool:
    """None matches any host; ``*.example`` matches ``a.example`` and ``a.b.example`` (not ``example``)."""
    if pattern is None:
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def path_matches(prefix: str, path: str) -> bool:
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def match_route(routes: Sequence[RouteConfig], target: RequestTarget) -> int | None:
    """The index of the first route whose host and path prefix both match, or None."""
    for i, route in enumerate(routes):
        if host_matches(route.host, target.host) and path_matches(route.path_prefix, target.path):
            return i
    return None
