"""``pktlb stats`` for the L7 proxy, as text: per service its routes, per backend requests, responses by
class, failures, connections opened and reused, the pool's active and idle connections; rejections by reason.

(The engine's stats are rendered by ``pktlb.reports.stats_text``; this is the proxy's counterpart.)
"""

from __future__ import annotations

from typing import Any

CLASSES = ("2xx", "3xx", "4xx", "5xx")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


def render_proxy_stats(data: dict[str, Any]) -> str:
    t = data["totals"]
    rejected = sum(t["rejects"].values())
    lines = [f"pktlb proxy: snapshot {data['generation']}, up {data['uptime']} s, pid {data['pid']}",
             f"clients: {t['open_connections']} connections open, {t['connections']} accepted, "
             f"{t['idle_closed']} closed idle; {t['requests']} requests",
             f"responses: {_counts(t['responses'])}; the proxy's own answers or cuts: {rejected} "
             f"({_counts(t['rejects'])})"]
    for svc in data["services"]:
        c = svc["counters"]
        lines += ["", f"{'HTTPS' if svc.get('tls') else 'HTTP'} {svc['vip']}:{svc['port']} l7 {svc['scheduler']} (service {svc['name']}, "
                      f"hash_key {svc['hash_key']}): {c['requests']} requests, {c['open_connections']} clients open"]
        if c.get("tls_full") or c.get("tls_resumed"):
            total = c["tls_full"] + c["tls_resumed"]
            lines.append(f"  TLS terminated here: {total} handshakes, {c['tls_full']} full, {c['tls_resumed']} "
                         f"resumed ({100 * c['tls_resumed'] / total:.0f} %)")
        cache = svc.get("cache")
        if cache:
            ratio = f"{100 * cache['hit_ratio']:.1f} %" if cache["hit_ratio"] is not None else "-"
            lines.append(f"  cache: {cache['hits']} hits, {cache['misses']} misses (hit ratio {ratio}), "
                         f"{cache['backend_requests_saved']} backend requests saved; {cache['entries']} entries, "
                         f"{cache['bytes']} of {cache['max_bytes']} bytes; {cache['evicted']} evicted, "
                         f"{cache['expired']} expired")
            if cache["bypass"]:
                lines.append(f"         not cached: {_counts(cache['bypass'])}")
        limit = svc.get("rate_limit")
        if limit:
            lines.append(f"  rate limit: {limit['rate']:g} requests/s per client, burst {limit['burst']}; "
                         f"{limit['clients']} clients tracked (at most {limit['max_clients']}); "
                         f"{c['rejects'].get('rate_limited', 0)} requests refused")
        if c.get("sticky"):
            lines.append(f"  cookie persistence: {_counts(c['sticky'])} (kept: its backend served it; moved: "
                         "that backend was down or gone)")
        for route in svc["routes"]:
            where = (f"host {route['host']} " if route["host"] else "any host ") + f"path {route['path_prefix']}"
            live = set(route["eligible"])
            pool = " ".join(b if b in live else f"({b})" for b in route["backends"])
            lines.append(f"  route {route['name']}: {where} -> {pool or 'no backend'} [{route['scheduler']}]")
        lines.append(f"  {'backend':<8} {'address':<21} {'state':<5} {'wt':>3} {'reqs':>7} "
                     + " ".join(f"{k:>6}" for k in CLASSES)
                     + f" {'fail':>5} {'opened':>6} {'reused':>7} {'conn/req':>8} {'act/idle':>8} {'rtt ms':>7}")
        for be in svc["backends"]:
            failed = sum(be["failures"].values())
            per_request = f"{be['connections_opened'] / be['requests']:.3f}" if be["requests"] else "-"
            rtt = f"{be['rtt_ms']:.2f}" if be["rtt_ms"] is not None else "-"
            state = be["state"] if be["admin"] == "up" else be["admin"]
            lines.append(f"  {be['name']:<8} {be['address'] + ':' + str(be['port']):<21} {state:<5} {be['weight']:>3} "
                         f"{be['requests']:>7} " + " ".join(f"{be['responses'].get(k, 0):>6}" for k in CLASSES)
                         + f" {failed:>5} {be['connections_opened']:>6} {be['reused']:>7} {per_request:>8} "
                           f"{be['pool']['active']:>3}/{be['pool']['idle']:<4} {rtt:>7}")
            if be["failures"]:
                lines.append(f"           failures: {_counts(be['failures'])}")
            health = be.get("health")
            if health and health.get("state") not in ("up", None):
                lines.append(f"           health {health['state']}: {health.get('reason') or ''}")
        if c["rejects"]:
            lines.append(f"  rejected: {_counts(c['rejects'])}")
    if data.get("reject_reasons"):
        lines += ["", "rejection reasons:"]
        lines += [f"  {reason:<24} {meaning}" for reason, meaning in sorted(data["reject_reasons"].items())]
    return "\n".join(lines)


def render_haproxy_stats(data: dict[str, Any]) -> str:
    """HAProxy's counters (``pktlb.adapters.haproxy_stats``) in the same columns as the proxy's."""
    t = data["totals"]
    lines = [f"HAProxy (the L7 baseline): pid {data['pid']}",
             f"clients: {t['open_connections']} connections open, {t['connections']} accepted; {t['requests']} requests"]
    for svc in data["services"]:
        c = svc["counters"]
        lines += ["", f"HTTP service {svc['name']} (HAProxy frontend): {c['requests']} requests, responses "
                      f"{_counts({k: v for k, v in c['responses'].items() if v})}",
                  "  routes: " + ", ".join(f"{r['name']} {r['requests']} ({r['algorithm']})" for r in svc["routes"]),
                  f"  {'backend':<8} {'address':<21} {'state':<8} {'reqs':>7} " + " ".join(f"{k:>6}" for k in CLASSES)
                  + f" {'fail':>5} {'opened':>6} {'reused':>7} {'conn/req':>8}"]
        for be in svc["backends"]:
            per_request = f"{be['connections_opened'] / be['requests']:.3f}" if be["requests"] else "-"
            lines.append(f"  {be['name']:<8} {be['address'] + ':' + str(be['port']):<21} {be['state']:<8} "
                         f"{be['requests']:>7} " + " ".join(f"{be['responses'].get(k, 0):>6}" for k in CLASSES)
                         + f" {sum(be['failures'].values()):>5} {be['connections_opened']:>6} {be['reused']:>7} "
                           f"{per_request:>8}")
    return "\n".join(lines)
