"""Every answer the proxy gives itself instead of a backend's, by named reason (like the engine's drop reasons).

Each reason has the status the client gets (None where nothing can be answered any more: the
connection is closed) and a one-line meaning for ``pktlb stats``.  The answer is small, plain text,
and names its reason in a ``Pktlb-Reason`` header so a student (or a test) sees at once why.
The 5xx split follows the usual proxy convention:

- 502 Bad Gateway: a backend was reached but failed (refused, reset, answered nonsense);
- 503 Service Unavailable: no backend could be tried at all (none live), or the proxy is full;
- 504 Gateway Timeout: a backend was tried but did not answer in time.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

from pktlb.core.l7.headers import Header


@dataclass(frozen=True, slots=True)
class Reject:
    status: int | None  # None: no answer is possible, the connection is closed
    meaning: str


REJECTS: dict[str, Reject] = {
    # The client's fault: the request is refused before any backend sees it.
    "bad_request": Reject(400, "the request is not valid HTTP/1.1"),
    "header_timeout": Reject(408, "the request head did not arrive within header_timeout (slowloris)"),
    "body_timeout": Reject(408, "the request body sent nothing for body_timeout"),
    "body_too_large": Reject(413, "the request body is larger than max_body_bytes"),
    "headers_too_large": Reject(431, "the request head is larger than max_header_bytes"),
    "not_implemented": Reject(501, "CONNECT, protocol upgrades and unknown transfer codings are not relayed"),
    "method_not_allowed": Reject(405, "the method is not in the service's filter.methods"),
    "path_not_allowed": Reject(403, "the path is under none of the service's filter.paths"),
    "rate_limited": Reject(429, "the client sent more than filter.rate requests per second (beyond filter.burst)"),
    "no_route": Reject(404, "no route matches the request's Host and path"),
    "too_many_connections": Reject(503, "the service already has max_connections client connections"),
    "plain_http_on_tls": Reject(400, "the client spoke plain HTTP to the TLS port"),
    "tls_handshake_timeout": Reject(None, "the TLS handshake was not over within handshake_timeout (truncated or "
                                          "stalled)"),
    "tls_truncated": Reject(None, "the client closed or reset the connection in the middle of the TLS handshake"),
    "tls_cert_refused": Reject(None, "the client refused the proxy's certificate (unknown CA, wrong name, expired)"),
    "tls_handshake_failed": Reject(None, "the TLS handshake failed (no common version or cipher, not TLS)"),
    "client_gone": Reject(None, "the client closed its connection before its response was complete"),
    "client_stalled": Reject(None, "the client read nothing of its response for body_timeout"),
    # The backends' side.
    "no_backend": Reject(503, "no live backend in the route's pool"),
    "backend_refused": Reject(502, "every backend tried refused the connection or could not be reached"),
    "backend_reset": Reject(502, "the backend closed or reset the connection before a complete response head"),
    "backend_tls_failed": Reject(502, "the TLS handshake with the backend failed (its certificate was refused, "
                                      "or it does not speak TLS)"),
    "backend_bad_response": Reject(502, "the backend's answer is not valid HTTP/1.1"),
    "backend_connect_timeout": Reject(504, "no backend tried accepted the connection within connect_timeout"),
    "backend_timeout": Reject(504, "the backend sent no response head within backend_timeout"),
    "backend_cut": Reject(None, "the backend failed in the middle of a response body: the client connection "
                                "is closed so that it sees the response is incomplete"),
    "internal_error": Reject(None, "a bug in pktlb: the client's connection was cut, please report it"),
}


def reject_answer(reason: str) -> tuple[int, list[Header], bytes]:
    """The status, headers and body the proxy answers for ``reason`` (which must have a status)."""
    reject = REJECTS[reason]
    if reject.status is None:
        raise ValueError(f"reason {reason!r} has no answer: the connection is closed")
    status = reject.status
    body = f"{status} {HTTPStatus(status).phrase}: {reject.meaning}\n".encode()
    headers = [(b"Content-Type", b"text/plain; charset=utf-8"), (b"Content-Length", str(len(body)).encode()),
               (b"Pktlb-Reason", reason.encode()), (b"Cache-Control", b"no-store")]
    return status, headers, body


def raw_answer(reason: str) -> bytes:
    """The whole answer for ``reason`` as bytes, with ``Connection: close``: for a connection the proxy
    closes without reading a request (too many connections) or whose HTTP state is beyond repair."""
    status, headers, body = reject_answer(reason)
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()]
    head += [name + b": " + value for name, value in headers + [(b"Connection", b"close")]]
    return b"\r\n".join(head) + b"\r\n\r\n" + body
