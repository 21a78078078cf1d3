"""Cookie persistence: a client's requests keep going to one backend because the client carries its name.

L4 persistence hashes the client's address (``sh``): when that address changes (a phone moving from
Wi-Fi to mobile data, a NAT pool handing out another address) the hash changes and the session lands
on another backend.  At L7 the proxy can write the backend's name into a cookie instead, and the
client brings it back with every request, whatever its address.  Two ways, as HAProxy's ``cookie``:

``insert``  the proxy adds its own cookie (``Set-Cookie: SRVID=be1; Path=/; HttpOnly``) to a response
            whenever the request did not already carry the right one, and removes it from the
            requests it forwards (the backend never sees it; HAProxy's ``insert indirect``).  A
            response with an inserted cookie is marked ``Cache-Control: private`` so that no shared
            cache hands one client's cookie to another (HAProxy's ``nocache``).
``prefix``  the application already has a session cookie (``JSESSIONID=abc``): the proxy prefixes its
            value in the responses (``JSESSIONID=be1~abc``) and strips the prefix from the requests,
            so the application sees its own value and no extra cookie exists.

A cookie that names a backend that is down, drained or not in the route's pool is ignored: the
request is scheduled as usual and the response carries the new backend's name (the client moves
once, then sticks again).  Pure: header lists in, header lists out.
"""

from __future__ import annotations

from dataclasses import dataclass

from pktlb.core.l7.headers import Header

SEPARATOR = "~"  # between the backend's name and the application's value (prefix mode), as HAProxy


@dataclass(frozen=True)
class CookieConfig:
    name: str = "SRVID"
    mode: str = "insert"  # "insert" or "prefix"


@dataclass(frozen=True, slots=True)
class StickyRequest:
    """What the request's cookie says: the backend it names (None: no cookie of ours) and the headers to forward."""

    backend: str | None
    headers: list[Header]


def _pairs(value: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for part in value.split(b";"):
        name, eq, val = part.strip().partition(b"=")
        if name:
            pairs.append((name, val if eq else b""))
    return pairs


def read_request(headers: list[Header], cookie: CookieConfig) -> StickyRequest:
    """The backend the request's cookie names, and its headers with the proxy's part of the cookie removed."""
    wanted = cookie.name.encode("latin-1")
    backend: str | None = None
    out: list[Header] = []
    for name, value in headers:
        if name.lower() != b"cookie":
            out.append((name, value))
            continue
        kept = []
        for cname, cvalue in _pairs(value):
            if cname != wanted:
                kept.append(cname + b"=" + cvalue)
            elif cookie.mode == "insert":
                backend = backend or cvalue.decode("latin-1")  # ours: it stays here (insert indirect)
            else:
                server, sep, rest = cvalue.partition(SEPARATOR.encode())
                if sep:
                    backend = backend or server.decode("latin-1")
                    kept.append(cname + b"=" + rest)
                else:
                    kept.append(cname + b"=" + cvalue)  # an application value we never prefixed
        if kept:
            out.append((name, b"; ".join(kept)))
    return StickyRequest(backend=backend, headers=out)


def write_response(headers: list[Header], cookie: CookieConfig, backend: str, asked: str | None) -> list[Header]:
    """The response's headers with the persistence cookie for ``backend`` (the request named ``asked``)."""
    wanted = cookie.name.encode("latin-1")
    if cookie.mode == "insert":
        if asked == backend:
            return headers
        value = wanted + b"=" + backend.encode("latin-1") + b"; Path=/; HttpOnly"
        out = [(n, v) for n, v in headers if n.lower() != b"cache-control"]
        return out + [(b"Set-Cookie", value), (b"Cache-Control", b"private")]
    out = []
    for name, value in headers:
        if name.lower() == b"set-cookie":
            first, sep, attributes = value.partition(b";")
            cname, eq, cvalue = first.strip().partition(b"=")
            if cname == wanted and eq:
                value = cname + b"=" + backend.encode("latin-1") + SEPARATOR.encode() + cvalue + sep + attributes
        out.append((name, value))
    return out


def sticky_outcome(asked: str | None, backend: str) -> str:
    """How a request went, for the counters: ``kept`` (its cookie's backend served it), ``moved`` (the cookie
    named another backend, down or gone), ``new`` (no cookie yet)."""
    if asked is None:
        return "new"
    return "kept" if asked == backend else "moved"
