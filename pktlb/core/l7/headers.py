"""Header rules of a forwarding proxy: what it drops, what it adds, what it leaves alone.

A proxy ends one connection and opens another, so the headers that describe a connection
(hop-by-hop: ``Connection``, ``Keep-Alive``, ``TE``, ``Upgrade``... and every header that
``Connection`` names) stay behind (RFC 9110 section 7.6.1).  ``Content-Length`` and
``Transfer-Encoding`` go on: they describe the body, which the HTTP layer re-frames on the other
side (a chunked body may leave as fixed-length to an HTTP/1.0 client, for example).

The backend no longer sees the client's address as its peer: the proxy tells it in headers.

- ``X-Forwarded-For: client`` (de facto): the address is appended to any list the request already
  carries (``a, b, client``).  A client can write anything in front; only the last entries, added by
  proxies the backend trusts, are worth believing.
- ``X-Forwarded-Proto: http`` (de facto): the scheme the client used; replaces any value the client sent.
- ``Forwarded: for=client;host=site;proto=http;by=proxy`` (RFC 7239, the standard): one element appended
  per proxy, IPv6 addresses as ``"[2001:db8::1]"``, values quoted where they are not tokens.
- ``Via: 1.1 pktlb`` (RFC 9110 section 7.6.3), on requests and responses.

Names are bytes as the HTTP layer (h11) gives them; matching ignores case, and headers the proxy
does not touch keep the client's spelling.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Header = tuple[bytes, bytes]

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
                        b"proxy-authenticate", b"proxy-authorization"})
VIA = b"1.1 pktlb"
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, slots=True)
class Hop:
    """The client connection a request arrived on, as the forwarding headers describe it."""

    client: str  # the client's address
    proto: str = "http"  # the scheme the client used ("https" once the proxy terminates TLS)
    by: str | None = None  # the proxy's own address on that connection (Forwarded by=)


def connection_options(headers: Iterable[Header]) -> set[bytes]:
    """The header names listed in ``Connection`` (lower case): hop-by-hop for this message."""
    names: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            names.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return names


def without_hop_by_hop(headers: Iterable[Header], also: frozenset[bytes] = frozenset()) -> list[Header]:
    """The end-to-end headers: hop-by-hop ones, those ``Connection`` names and those in ``also`` removed."""
    headers = list(headers)
    drop = HOP_BY_HOP | connection_options(headers) | also
    return [(name, value) for name, value in headers if name.lower() not in drop]


def forwarded_value(value: str) -> str:
    """A value as RFC 7239 needs it: a token as it is, anything else as a quoted string."""
    if value and all(c in _TCHAR for c in value.encode("latin-1", "replace")):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def forwarded_node(address: str) -> str:
    """An address as a Forwarded ``for``/``by`` node: IPv6 in brackets (and so quoted)."""
    return forwarded_value(f"[{address}]" if ":" in address else address)


def forwarded_element(hop: Hop, host: bytes | None) -> bytes:
    """This proxy's element of the Forwarded header: ``for=...;host=...;proto=...;by=...``."""
    pairs = [f"for={forwarded_node(hop.client)}"]
    if host:
        pairs.append(f"host={forwarded_value(host.decode('latin-1'))}")
    pairs.append(f"proto={hop.proto}")
    if hop.by:
        pairs.append(f"by={forwarded_node(hop.by)}")
    return ";".join(pairs).encode("latin-1")


def _joined(headers: Iterable[Header], name: bytes) -> bytes:
    return b", ".join(value for n, value in headers if n.lower() == name and value.strip())


def request_headers(headers: Iterable[Header], hop: Hop, *, forwarded: bool = True,
                    also_drop: frozenset[bytes] = frozenset()) -> list[Header]:
    """The headers to send a backend for a request that came in with ``headers`` over ``hop``."""
    headers = list(headers)
    out = without_hop_by_hop(headers, also_drop)
    if forwarded:
        xff, fwd = _joined(headers, b"x-forwarded-for"), _joined(headers, b"forwarded")
        host = next((value for name, value in headers if name.lower() == b"host"), None)
        replaced = {b"x-forwarded-for", b"x-forwarded-proto", b"forwarded"}
        out = [(name, value) for name, value in out if name.lower() not in replaced]
        client = hop.client.encode("latin-1")
        out.append((b"X-Forwarded-For", xff + b", " + client if xff else client))
        out.append((b"X-Forwarded-Proto", hop.proto.encode("latin-1")))
        element = forwarded_element(hop, host)
        out.append((b"Forwarded", fwd + b", " + element if fwd else element))
    return _with_via(out)


def response_headers(headers: Iterable[Header]) -> list[Header]:
    """The headers to send the client for a response that came from a backend with ``headers``."""
    return _with_via(without_hop_by_hop(headers))


def _with_via(headers: list[Header]) -> list[Header]:
    via = _joined(headers, b"via")
    out = [(name, value) for name, value in headers if name.lower() != b"via"]
    out.append((b"Via", via + b", " + VIA if via else VIA))
    return out


def header(headers: Iterable[Header], name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), or None."""
    for n, value in headers:
        if n.lower() == name:
            return value
    return None
