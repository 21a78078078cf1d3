"""The optional features of an L7 service, each its own sub-table of ``[service.l7]``.

``[service.l7.tls]``  TLS termination: the proxy holds the certificate, decrypts, and talks plain HTTP
                      (or TLS again) to the backends::

    [service.l7.tls]
    cert = "/run/pktlb/lab/tls/vip.pem"      # PEM: the server certificate (then any intermediates)
    key = "/run/pktlb/lab/tls/vip.pem.key"   # PEM private key (HAProxy reads it from <cert>.key)
    handshake_timeout = 5                    # a handshake not finished by then is cut (counted)
    session_resumption = true                # session tickets and the session cache: a returning client
                                             # skips the certificate and key exchange work
    backend = "plain"                        # "plain": HTTP to the backends; "tls": encrypted again
    backend_ca = "/run/pktlb/lab/tls/ca.pem" # with backend = "tls": the CA the backends' certificates must
                                             # chain to (leave out to trust the system's CAs)
    backend_verify = true                    # false: encrypt to the backends without checking who they are

``[service.l7.cookie]``  persistence by cookie (``pktlb.core.l7.sticky``)::

    [service.l7.cookie]
    mode = "insert"      # the proxy's own cookie; "prefix": the application's cookie, prefixed "be1~"
    name = "SRVID"       # the cookie's name (with prefix: the application's session cookie, e.g. JSESSIONID)

``[service.l7.cache]``  a response cache in the proxy (``pktlb.core.l7.cache_policy``, ``cache_store``)::

    [service.l7.cache]
    max_bytes = 16777216         # the whole store, headers and bodies
    max_entries = 1000
    max_object_bytes = 1048576   # a larger answer is relayed, never kept

``[service.l7.filter]``  requests refused at the balancer, before any backend sees them::

    [service.l7.filter]
    methods = ["GET", "HEAD", "POST"]   # any other method: 405 method_not_allowed
    paths = ["/api/", "/static/"]       # path prefixes allowed (as routes match them): else 403 path_not_allowed
    rate = 20                           # requests per second per client address (token bucket): else 429
    burst = 40                          # requests a client may send at once
    max_clients = 10000                 # buckets kept (least recently seen dropped first)

  (Sizes are ``[service.l7]``'s ``max_header_bytes`` (431) and ``max_body_bytes`` (413).)

Pure: it reads already-parsed TOML tables; whether the files exist and hold a usable certificate is
checked when the proxy starts (``pktlb.daemon.proxy.tls``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pktlb.core.config_reader import ConfigError, Section
from pktlb.core.l7.cache_store import CacheConfig
from pktlb.core.l7.ratelimit import RateLimit
from pktlb.core.l7.sticky import CookieConfig

BACKEND_TLS = ("plain", "tls")
TLS_VERSIONS = ("1.2", "1.3")
COOKIE_MODES = ("insert", "prefix")
METHOD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ-_")
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class FilterConfig:
    methods: frozenset[bytes] | None = None  # allowed methods (None: any the proxy relays)
    paths: tuple[str, ...] | None = None  # allowed path prefixes (None: any)
    rate_limit: RateLimit | None = None  # per client address (None: no limit)


@dataclass(frozen=True)
class TlsConfig:
    cert: str  # path of the PEM certificate chain the proxy presents
    key: str  # path of its PEM private key
    handshake_timeout: float = 5.0
    session_resumption: bool = True
    min_version: str = "1.2"
    backend: str = "plain"  # what the proxy speaks to the backends: "plain" HTTP or "tls"
    backend_ca: str | None = None  # CA file for the backends' certificates (None: the system's)
    backend_verify: bool = True

    @property
    def to_backends(self) -> bool:
        """True when the proxy encrypts again toward the backends."""
        return self.backend == "tls"


def parse_tls(table: Any, path: str) -> TlsConfig | None:
    """``[service.l7.tls]`` at ``path`` (None when the service has none: plain HTTP)."""
    if table is None:
        return None
    s = Section(table, path, {"cert", "key", "handshake_timeout", "session_resumption", "min_version", "backend",
                              "backend_ca", "backend_verify"})
    cert = s.get("cert", str, expected="the path of a PEM certificate file")
    key = s.get("key", str, expected="the path of a PEM private key file")
    for name, value in (("cert", cert), ("key", key)):
        if not value.strip():
            raise ConfigError(s.key(name), value, "a file path")
    backend = s.choice("backend", BACKEND_TLS, "plain")
    backend_ca = s.get("backend_ca", str, None, expected="the path of a PEM CA file")
    if backend_ca is not None and backend != "tls":
        raise ConfigError(s.key("backend_ca"), backend_ca, 'nothing unless backend = "tls"')
    return TlsConfig(cert=cert, key=key, handshake_timeout=s.positive("handshake_timeout", 5.0),
                     session_resumption=s.get("session_resumption", bool, True),
                     min_version=s.choice("min_version", TLS_VERSIONS, "1.2"), backend=backend,
                     backend_ca=backend_ca, backend_verify=s.get("backend_verify", bool, True))


def parse_cookie(table: Any, path: str) -> CookieConfig | None:
    """``[service.l7.cookie]`` at ``path`` (None: no cookie persistence)."""
    if table is None:
        return None
    s = Section(table, path, {"name", "mode"})
    name = s.get("name", str, "SRVID", expected="a cookie name such as SRVID")
    if not name or not set(name) <= _TOKEN:
        raise ConfigError(s.key("name"), name, "a cookie name such as SRVID (letters, digits, - _ . and the like)")
    return CookieConfig(name=name, mode=s.choice("mode", COOKIE_MODES, "insert"))


def parse_cache(table: Any, path: str) -> CacheConfig | None:
    """``[service.l7.cache]`` at ``path`` (None: no cache)."""
    if table is None:
        return None
    s = Section(table, path, {"max_bytes", "max_entries", "max_object_bytes"})
    max_bytes = s.int_in("max_bytes", 4096, 1 << 34, 16 * 1024 * 1024)
    max_object = s.int_in("max_object_bytes", 1, 1 << 34, min(1024 * 1024, max_bytes // 2))
    if max_object > max_bytes // 2:
        raise ConfigError(s.key("max_object_bytes"), max_object, f"at most half of max_bytes ({max_bytes // 2})")
    return CacheConfig(max_bytes=max_bytes, max_entries=s.int_in("max_entries", 1, 10_000_000, 1000),
                       max_object_bytes=max_object)


def parse_filter(table: Any, path: str) -> FilterConfig | None:
    """``[service.l7.filter]`` at ``path`` (None: no filter beyond the size limits)."""
    if table is None:
        return None
    s = Section(table, path, {"methods", "paths", "rate", "burst", "max_clients"})
    methods = s.get("methods", list, None, expected="a list of methods such as [\"GET\", \"HEAD\"]")
    for i, method in enumerate(methods or ()):
        if not isinstance(method, str) or not method or not set(method) <= METHOD_CHARS:
            raise ConfigError(f"{s.key('methods')}[{i}]", method, "an HTTP method in capitals such as GET")
    if methods is not None and not methods:
        raise ConfigError(s.key("methods"), methods, "at least one method (leave the key out to allow any)")
    paths = s.get("paths", list, None, expected="a list of path prefixes such as [\"/api/\"]")
    for i, prefix in enumerate(paths or ()):
        if not isinstance(prefix, str) or not prefix.startswith("/") or any(c in prefix for c in " ?#"):
            raise ConfigError(f"{s.key('paths')}[{i}]", prefix, "a path prefix starting with / such as /api/")
    if paths is not None and not paths:
        raise ConfigError(s.key("paths"), paths, "at least one prefix (leave the key out to allow any)")
    rate_limit = None
    if "rate" in table:
        rate = s.get("rate", (int, float), expected="requests per second, a positive number")
        if rate <= 0:
            raise ConfigError(s.key("rate"), rate, "requests per second, a positive number")
        burst = s.int_in("burst", 1, 1_000_000, max(1, int(rate)))
        rate_limit = RateLimit(rate=float(rate), burst=burst, max_clients=s.int_in("max_clients", 1, 10_000_000, 10_000))
    else:
        for key in ("burst", "max_clients"):
            if key in table:
                raise ConfigError(s.key(key), table[key], "nothing without rate (the requests per second)")
    return FilterConfig(methods=None if methods is None else frozenset(m.encode() for m in methods),
                        paths=None if paths is None else tuple(paths), rate_limit=rate_limit)
