"""The L7 part of a service's configuration: ``mode = "l7"``, its ``[service.l7]`` limits and its routes.

An L7 service is an ordinary ``[[service]]`` (name, vip, port, scheduler, health, backends) served by
``pktlb proxy`` instead of the packet engine: the proxy listens on ``vip:port``, reads each HTTP/1.1
request and balances it over the backends of the route it matches.  Example::

    [[service]]
    name = "web"
    vip = "198.19.0.100"
    port = 80
    mode = "l7"
    scheduler = "rr"               # per request, not per connection

      [service.l7]                 # optional; every key has a default (see L7Config)
      header_timeout = 10          # the whole request head must arrive within this (slowloris)
      max_header_bytes = 16384     # a larger head is answered 431

      [[service.route]]            # first match wins; without routes every request goes to all backends
      host = "api.example"         # exact, or "*.example" for any subdomain; leave out for any host
      path_prefix = "/api/"        # "/api" matches /api and /api/..., "/api/" matches /api/...
      backends = ["be1", "be2"]    # leave out for all the service's backends
      scheduler = "lc"             # leave out for the service's

Pure: it reads already-parsed TOML tables through ``pktlb.core.config_reader.Section``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pktlb.core.config_reader import ConfigError, Section
from pktlb.core.l7.cache_store import CacheConfig
from pktlb.core.l7.features import FilterConfig, TlsConfig, parse_cache, parse_cookie, parse_filter, parse_tls
from pktlb.core.l7.sticky import CookieConfig
from pktlb.core.sched.registry import scheduler_names

L7_MODE = "l7"
HASH_KEYS = ("connection", "client")  # what hash, sh and maglev hash at L7: the 5-tuple, or the client address
L7_KEYS = {"hash_key", "header_timeout", "idle_timeout", "body_timeout", "connect_timeout", "backend_timeout",
           "max_header_bytes", "max_body_bytes", "max_connections", "retries", "pool_max_idle",
           "pool_idle_timeout", "forwarded_headers", "tls", "cookie", "cache", "filter"}


@dataclass(frozen=True)
class RouteConfig:
    """Requests whose Host matches ``host`` (None: any) and whose path starts with ``path_prefix``."""

    name: str
    host: str | None  # lower case, without a port; "*.example" matches every name ending in ".example"
    path_prefix: str
    backends: tuple[str, ...] | None  # backend names (the route's pool); None: every backend of the service
    scheduler: str | None = None  # None: the service's scheduler


@dataclass(frozen=True)
class L7Config:
    """Limits, timeouts (seconds) and routes of one L7 service."""

    routes: tuple[RouteConfig, ...]
    hash_key: str = "connection"
    header_timeout: float = 10.0  # from the first byte of a request (or the connection's start) to its last header
    idle_timeout: float = 60.0  # keep-alive: how long a client connection may wait between requests
    body_timeout: float = 30.0  # a request body that sends nothing for this long is cut off
    connect_timeout: float = 3.0  # opening a connection to a backend
    backend_timeout: float = 30.0  # waiting for a response head, or for more of a response body
    max_header_bytes: int = 16384  # a larger request head is answered 431
    max_body_bytes: int = 100 * 1024 * 1024  # a larger request body is answered 413
    max_connections: int = 1024  # client connections open at once; more are answered 503 and closed
    retries: int = 2  # other backends tried when a backend refuses a connection (the request never reached it)
    pool_max_idle: int = 32  # idle connections kept open per backend for reuse
    pool_idle_timeout: float = 10.0  # an idle pooled connection older than this is closed
    forwarded_headers: bool = True  # add X-Forwarded-For, X-Forwarded-Proto and Forwarded (RFC 7239)
    tls: TlsConfig | None = None  # [service.l7.tls]: HTTPS to the clients (pktlb.core.l7.features)
    cookie: CookieConfig | None = None  # [service.l7.cookie]: persistence by cookie (pktlb.core.l7.sticky)
    cache: CacheConfig | None = None  # [service.l7.cache]: a response cache (pktlb.core.l7.cache_store)
    filter: FilterConfig | None = None  # [service.l7.filter]: method/path allow-lists, per-client rate limit


def parse_l7(table: Any, route_tables: Any, path: str, backend_names: Sequence[str], protocol: str) -> L7Config:
    """The ``[service.l7]`` table and ``[[service.route]]`` list of the service at ``path``."""
    if protocol != "tcp":
        raise ConfigError(f"{path}.protocol", protocol, "tcp (mode l7 serves HTTP over TCP)")
    s = Section(table, f"{path}.l7", L7_KEYS)
    if not isinstance(route_tables, list):
        raise ConfigError(f"{path}.route", route_tables, "a list of [[service.route]] tables")
    routes = tuple(_route(t, f"{path}.route[{i}]", backend_names) for i, t in enumerate(route_tables))
    names = [r.name for r in routes]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ConfigError(f"{path}.route[{i}].name", name, "a name not used by another route")
    if not routes:
        routes = (RouteConfig(name="default", host=None, path_prefix="/", backends=None),)
    return L7Config(
        routes=routes,
        hash_key=s.choice("hash_key", HASH_KEYS, "connection"),
        header_timeout=s.positive("header_timeout", 10.0), idle_timeout=s.positive("idle_timeout", 60.0),
        body_timeout=s.positive("body_timeout", 30.0), connect_timeout=s.positive("connect_timeout", 3.0),
        backend_timeout=s.positive("backend_timeout", 30.0),
        max_header_bytes=s.int_in("max_header_bytes", 1024, 1024 * 1024, 16384),
        max_body_bytes=s.int_in("max_body_bytes", 0, 2**40, 100 * 1024 * 1024),
        max_connections=s.int_in("max_connections", 1, 1_000_000, 1024),
        retries=s.int_in("retries", 0, 10, 2),
        pool_max_idle=s.int_in("pool_max_idle", 0, 10_000, 32),
        pool_idle_timeout=s.positive("pool_idle_timeout", 10.0),
        forwarded_headers=s.get("forwarded_headers", bool, True),
        tls=parse_tls(s.get("tls", dict, None), s.key("tls")),
        cookie=parse_cookie(s.get("cookie", dict, None), s.key("cookie")),
        cache=parse_cache(s.get("cache", dict, None), s.key("cache")),
        filter=parse_filter(s.get("filter", dict, None), s.key("filter")),
    )


def _route(table: Any, path: str, backend_names: Sequence[str]) -> RouteConfig:
    s = Section(table, path, {"name", "host", "path_prefix", "backends", "scheduler"})
    host = s.get("host", str, None, expected="a host name like api.example or *.example")
    if host is not None:
        host = host.strip().lower()
        bare = host[2:] if host.startswith("*.") else host
        if not bare or any(c in bare for c in " /:*@[]") or bare.startswith(".") or bare.endswith("."):
            raise ConfigError(s.key("host"), table["host"], "a host name like api.example or *.example, "
                              "without a port")
    prefix = s.get("path_prefix", str, "/", expected="a path starting with / such as /api/")
    if not prefix.startswith("/") or any(c in prefix for c in " ?#"):
        raise ConfigError(s.key("path_prefix"), prefix, "a path starting with / such as /api/ (no query)")
    backends = s.get("backends", list, None, expected="a list of backend names")
    for i, name in enumerate(backends or ()):
        if name not in backend_names:
            raise ConfigError(f"{path}.backends[{i}]", name,
                              f"the name of one of the service's backends ({', '.join(backend_names) or 'none'})")
    if backends is not None and not backends:
        raise ConfigError(s.key("backends"), backends, "at least one backend name")
    scheduler = s.choice("scheduler", tuple(scheduler_names())) if "scheduler" in s.table else None
    return RouteConfig(name=s.get("name", str, f"route{path.rsplit('[', 1)[-1].rstrip(']')}"), host=host,
                       path_prefix=prefix, backends=None if backends is None else tuple(dict.fromkeys(backends)),
                       scheduler=scheduler)
