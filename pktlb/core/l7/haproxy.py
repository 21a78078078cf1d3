"""The same L7 services as an HAProxy configuration: the production baseline beside ``pktlb proxy``.

``haproxy_config(config)`` renders every ``mode = "l7"`` service of a pktlb config as an HAProxy
frontend (listen address, limits, forwarding headers, routes as ACLs) and one backend per route
(balance algorithm, servers, health checks), with the same timeouts, so a comparison measures the
two proxies and not two configurations.  Where HAProxy has no exact equivalent the file says so
in a comment:

- schedulers: rr and wrr -> ``roundrobin``; lc, lrt and bw -> ``leastconn``; sh, hash -> ``source``;
  maglev -> ``source`` with ``hash-type consistent`` (HAProxy hashes the client address, pktlb the
  connection's 5-tuple unless ``hash_key = "client"``);
- health: tcp and http checks map to ``check`` and ``option httpchk``; HAProxy has no ICMP check;
- a request no route takes gets 404 from a backend that only answers that (pktlb: ``no_route``);
- ``Forwarded``: HAProxy 2.6 has no ``option forwarded`` (2.7 has), so the header is added by rule;
- TLS (``[service.l7.tls]``): ``bind ... ssl crt CERT``; HAProxy reads the key from ``CERT.key`` (or from
  CERT itself), so the key must be there (the lab's ``make_lab_pki`` names it so); no session resumption
  is ``no-tls-tickets`` and no session cache; ``backend = "tls"`` is ``ssl verify required ca-file CA``
  on each server (HAProxy checks the chain, not the name, unless told ``verifyhost``); HAProxy 2.6 has
  no separate handshake timeout (``timeout client`` bounds it);
- persistence (``[service.l7.cookie]``): ``cookie NAME insert indirect nocache httponly`` or ``cookie NAME
  prefix``, each server's cookie value its name (HAProxy's separator for prefix is ``~`` too);
- cache (``[service.l7.cache]``): a ``cache`` section and ``cache-use``/``cache-store`` in each backend;
  HAProxy too keeps no answer with ``Vary`` (2.6 default), ``Set-Cookie``, ``private`` or ``no-store``;
- filters (``[service.l7.filter]``): ``http-request deny`` with 405 (methods), 403 (paths) and 429 (a
  stick-table counting each client's requests over burst/rate seconds: a sliding window, where pktlb
  has a token bucket; HAProxy also counts the requests it refuses).

Connection reuse is ``http-reuse always``: measured here, it opened 0.001-0.002 backend connections
per request (see /work/shared/LAB-NOTES.md), the figure ``pktlb proxy``'s pool is compared with.
Pure: text in, text out (the lab writes the file and runs HAProxy).
"""

from __future__ import annotations

from pktlb.core.config import Config, ServiceConfig
from pktlb.core.health import backend_health
from pktlb.core.l7.settings import L7Config, RouteConfig

BALANCE = {"rr": "roundrobin", "wrr": "roundrobin", "lc": "leastconn", "lrt": "leastconn", "bw": "leastconn",
           "sh": "source", "hash": "source", "maglev": "source"}
EXACT = {"rr", "wrr", "lc", "sh"}  # schedulers whose HAProxy counterpart behaves the same


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def haproxy_config(config: Config, *, stats_socket: str | None = None) -> str:
    """An ``haproxy.cfg`` for the L7 services of ``config`` (ValueError if there is none)."""
    services = [s for s in config.services if s.l7 is not None]
    if not services:
        raise ValueError("no service has mode l7: nothing for HAProxy to serve")
    lines = ["# Rendered by pktlb from the same service definitions `pktlb proxy` serves.",
             "global",
             f"    maxconn {sum(s.l7.max_connections for s in services if s.l7) + 64}",
             f"    tune.bufsize {max(16384, _bufsize(services))}"]
    if stats_socket:
        lines.append(f"    stats socket {stats_socket} mode 600 level admin")
    if any(s.l7 and s.l7.tls and not s.l7.tls.session_resumption for s in services):
        lines.append("    tune.ssl.cachesize 0  # no session cache: every handshake is a full one")
    lines += ["", "defaults", "    mode http", "    option http-keep-alive", "    option redispatch",
              "    http-reuse always", ""]
    for svc in services:
        lines += _frontend(svc) + [""]
        assert svc.l7 is not None
        for route in svc.l7.routes:
            lines += _backend(svc, route) + [""]
        lines += [f"backend {svc.name}__no_route",
                  '    http-request return status 404 content-type text/plain string "no route"', ""]
        if svc.l7.cache is not None:
            lines += _cache_section(svc) + [""]
    return "\n".join(lines)


def _bufsize(services: list[ServiceConfig]) -> int:
    # HAProxy keeps a request head in one buffer, minus the room it reserves for rewrites (maxrewrite).
    return max(s.l7.max_header_bytes for s in services if s.l7) * 2


def _frontend(svc: ServiceConfig) -> list[str]:
    l7 = svc.l7
    assert l7 is not None
    lines = [f"frontend {svc.name}", f"    bind {svc.vip}:{svc.port}{_bind_tls(svc)}", f"    maxconn {l7.max_connections}",
             f"    timeout http-request {_ms(l7.header_timeout)}", f"    timeout http-keep-alive {_ms(l7.idle_timeout)}",
             f"    timeout client {_ms(l7.body_timeout)}",
             f"    http-request deny deny_status 413 if {{ req.hdr_val(content-length) gt {l7.max_body_bytes} }}"]
    lines += _filter_lines(svc)
    if l7.tls is not None:  # 2.6 has no "timeout client-hs" (2.8 has): "timeout client" bounds the handshake
        lines.append(f"    # TLS handshake_timeout {_ms(l7.tls.handshake_timeout)}: bounded by timeout client here")
    if l7.forwarded_headers:
        proto = "https" if l7.tls is not None else "http"
        lines += ["    option forwardfor", f"    http-request set-header X-Forwarded-Proto {proto}",
                  f'    http-request add-header Forwarded "for=%[src];proto={proto};by=%[dst]"']
    for i, route in enumerate(l7.routes):
        conditions = []
        if route.host is not None:
            match = f"-m end {route.host[1:]}" if route.host.startswith("*.") else f"-m str {route.host}"
            lines.append(f"    acl r{i}_host req.hdr(host),field(1,:),lower {match}")
            conditions.append(f"r{i}_host")
        if route.path_prefix != "/":
            lines += _prefix_acl(f"r{i}_path", route.path_prefix)
            conditions.append(f"r{i}_path")
        backend = _backend_name(svc, route)
        lines.append(f"    use_backend {backend} if {' '.join(conditions)}" if conditions else
                     f"    use_backend {backend}")
    lines.append(f"    default_backend {svc.name}__no_route")
    return lines


def _bind_tls(svc: ServiceConfig) -> str:
    tls = svc.l7.tls if svc.l7 else None
    if tls is None:
        return ""
    if tls.key not in (tls.cert, tls.cert + ".key"):
        raise ValueError(f"service {svc.name}: HAProxy reads the TLS key from the certificate file or from "
                         f"<cert>.key; key {tls.key!r} is neither (put it at {tls.cert}.key)")
    options = f" ssl crt {tls.cert} alpn http/1.1 ssl-min-ver TLSv{tls.min_version}"
    return options + ("" if tls.session_resumption else " no-tls-tickets")


def _server_tls(svc: ServiceConfig) -> str:
    tls = svc.l7.tls if svc.l7 else None
    if tls is None or not tls.to_backends:
        return ""
    if not tls.backend_verify:
        return " ssl verify none"
    return f" ssl verify required ca-file {tls.backend_ca or '@system-ca'}"


def _prefix_acl(name: str, prefix: str) -> list[str]:
    """ACL lines matching ``prefix`` the way pktlb's routes and filters do (whole segments)."""
    lines = [f"    acl {name} path_beg {prefix if prefix.endswith('/') else prefix + '/'}"]
    if not prefix.endswith("/"):
        lines.append(f"    acl {name} path {prefix}")
    return lines


def _filter_lines(svc: ServiceConfig) -> list[str]:
    flt = svc.l7.filter if svc.l7 else None
    if flt is None:
        return []
    lines = []
    if flt.rate_limit is not None:
        limit = flt.rate_limit
        period = max(1, round(limit.burst / limit.rate * 1000))  # burst requests per burst/rate seconds
        lines += ["    # pktlb: a token bucket per client; HAProxy: at most burst requests per burst/rate seconds",
                  f"    stick-table type ip size {limit.max_clients} expire {max(10, 2 * period // 1000)}s "
                  f"store http_req_rate({period}ms)",
                  "    http-request track-sc0 src",
                  f"    http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt {limit.burst} }}"]
    if flt.methods is not None:
        lines.append(f"    http-request deny deny_status 405 unless {{ method {' '.join(sorted(m.decode() for m in flt.methods))} }}")
    if flt.paths is not None:
        for prefix in flt.paths:
            lines += _prefix_acl("allowed_path", prefix)
        lines.append("    http-request deny deny_status 403 unless allowed_path")
    return lines


def _cache_section(svc: ServiceConfig) -> list[str]:
    cache = svc.l7.cache if svc.l7 else None
    assert cache is not None
    megabytes = max(1, -(-cache.max_bytes // (1024 * 1024)))
    return [f"cache {svc.name}_cache", f"    total-max-size {megabytes}  # MB (pktlb: {cache.max_bytes} bytes)",
            f"    max-object-size {cache.max_object_bytes}",
            "    max-age 86400  # the upper bound: each response's own max-age or Expires rules",
            f"    # pktlb also bounds the entries ({cache.max_entries}); HAProxy 2.6 bounds only the size"]


def _backend_name(svc: ServiceConfig, route: RouteConfig) -> str:
    return f"{svc.name}__{route.name}"


def _backend(svc: ServiceConfig, route: RouteConfig) -> list[str]:
    l7: L7Config | None = svc.l7
    assert l7 is not None
    scheduler = route.scheduler or svc.scheduler
    lines = [f"backend {_backend_name(svc, route)}", f"    balance {BALANCE[scheduler]}"]
    if scheduler == "maglev":
        lines.append("    hash-type consistent")
    if scheduler not in EXACT:
        lines.append(f"    # pktlb's {scheduler} has no exact HAProxy counterpart: {BALANCE[scheduler]} is the nearest")
    lines += [f"    timeout connect {_ms(l7.connect_timeout)}", f"    timeout server {_ms(l7.backend_timeout)}",
              f"    retries {l7.retries}"]
    if l7.cache is not None:
        lines += [f"    http-request cache-use {svc.name}_cache", f"    http-response cache-store {svc.name}_cache"]
    if l7.cookie is not None:
        lines.append(f"    cookie {l7.cookie.name} insert indirect nocache httponly" if l7.cookie.mode == "insert"
                     else f"    cookie {l7.cookie.name} prefix")
    names = route.backends if route.backends is not None else tuple(b.name for b in svc.backends)
    backends = [b for b in svc.backends if b.name in names]
    health = [backend_health(svc, b) for b in backends]
    http = next((h for h in health if "http" in h.checks), None)
    if http is not None:
        lines += [f"    option httpchk GET {http.http_path}", f"    http-check expect status {http.http_status}"]
    if any("icmp" in h.checks for h in health):
        lines.append("    # HAProxy has no ICMP check: only the TCP/HTTP checks are rendered")
    checked = [h for h in health if {"tcp", "http"} & set(h.checks)]
    if checked:
        lines.append(f"    timeout check {_ms(checked[0].timeout)}")
    for be, hc in zip(backends, health, strict=True):
        check = f" check inter {_ms(hc.interval)} fall {hc.fall} rise {hc.rise}" if hc in checked else ""
        cookie = f" cookie {be.name}" if l7.cookie is not None else ""
        lines.append(f"    server {be.name} {be.address}:{be.port} weight {be.weight}{_server_tls(svc)}{cookie}{check}")
    return lines
