"""Persistence, caching and filtering, each measured in the lab (``pktlb l7-report``).

persistence  sessions of two requests whose client address changes in between (the first from
             198.18.1.1xx, the second from the next address of the client namespace): how many land
             on another backend with L4 source hashing (``sh``), with L7 source hashing, and with the
             L7 cookie; then the backend holding most sessions is taken down (by the operator, then by
             its link going down until the health checks notice) and every session asked again: how
             many moved, how many failed.
cache        a repeated-URL workload (``--urls`` distinct cacheable URLs, ``--cache-requests`` requests)
             through the proxy with and without its cache: hit ratio, requests the backends served,
             latency of hits and misses; HAProxy's cache beside it.
filter       one client address floods (as fast as it can, kept alive) while another sends a paced
             stream; with a per-client rate limit the flood is held back, the paced client gets every
             answer, and the backends serve only the admitted requests (counted by the proxy, per backend).
"""

from __future__ import annotations

import time
from typing import Any

from pktlb.lab.netns import Namespace
from pktlb.reports.l7features.labs import MOVING_CLIENT, Lab, l7_service, proxy_data
from pktlb.reports.l7features.servers import Proxy, ReportError, client_json, finished_json, start_client


def _pairs(sessions: int) -> str:
    return ",".join(MOVING_CLIENT[: 2 * sessions])


def moving_sessions(lab: Lab, sessions: int, *, cookie: bool, port: int | None = None) -> dict[str, Any]:
    args = ["sessions", "--url", f"http://{lab.vip}:{port or lab.port}/", "--addresses", _pairs(sessions)]
    return client_json(lab.ns("client"), args + (["--cookie"] if cookie else []))


def _row(layer: str, engine: str, how: str, result: dict[str, Any]) -> dict[str, Any]:
    return {"layer": layer, "engine": engine, "persistence": how, "sessions": result["sessions"],
            "moved": result["moved"], "kept": result["kept"],
            "moved_share": round(result["moved"] / result["sessions"], 3) if result["sessions"] else None}


def persistence_l4(lab: Lab, sessions: int) -> dict[str, Any]:
    """The L4 lab (scheduler sh): the session follows the client's address."""
    return _row("L4 dsr", "pktlb", "source hash (sh)", moving_sessions(lab, sessions, cookie=False))


def persistence_l7(lab: Lab, engine: str, sessions: int) -> list[dict[str, Any]]:
    rows = []
    data = proxy_data(l7_service(lab, "web", lab.port, scheduler="sh", l7={"hash_key": "client"}),
                      l7_service(lab, "web-cookie", 8080, l7={"cookie": {"mode": "insert"}}))
    with Proxy(engine, lab.ns("lb"), lab.workdir, f"persist-{engine}", data) as proxy:
        rows.append(_row("L7", engine, "source hash (sh, hash_key client)",
                         moving_sessions(lab, sessions, cookie=False)))
        result = moving_sessions(lab, sessions, cookie=True, port=8080)
        row = _row("L7", engine, "cookie (insert)", result)
        if engine == "pktlb":
            row["backend_down"] = _down_and_ask_again(lab, proxy, result, "admin")
            row["backend_failed"] = _down_and_ask_again(lab, proxy, result, "link")
        rows.append(row)
    return rows


def _state(proxy: Proxy, service: str, backend: str) -> str | None:
    stats = proxy.stats() or {}
    svc: dict[str, Any] = next((s for s in stats.get("services", []) if s.get("name") == service), {})
    return next((b["state"] for b in svc.get("backends", []) if b["name"] == backend), None)


def _await_state(proxy: Proxy, service: str, backend: str, state: str, timeout: float = 20.0) -> float:
    """Seconds until the proxy's health checks count ``backend`` as ``state`` (ReportError after ``timeout``)."""
    started = time.monotonic()
    while _state(proxy, service, backend) != state:
        if time.monotonic() - started > timeout:
            raise ReportError(f"{backend} not {state} after {timeout:.0f} s")
        time.sleep(0.05)  # the health checks run on their own interval in the proxy: polled from here
    return round(time.monotonic() - started, 2)


def _down_and_ask_again(lab: Lab, proxy: Proxy, result: dict[str, Any], how: str) -> dict[str, Any]:
    """Take the backend holding the most sticky sessions out (``admin``: ``pktlb backend down``; ``link``: its
    interface goes down and the health checks notice), then ask every session again with its cookie."""
    cookies = [r["cookie"] for r in result["rows"] if r["cookie"]]
    owners = [c.split("=", 1)[1] for c in cookies]
    victim = max(set(owners), key=owners.count)
    detected = None
    if how == "admin":
        proxy.backend("down", "web-cookie", victim)
    else:
        Namespace(lab.ns(victim)).run(["ip", "link", "set", "eth0", "down"])
        detected = _await_state(proxy, "web-cookie", victim, "down")
    try:
        again = client_json(lab.ns("client"), ["cookies", "--url", f"http://{lab.vip}:8080/", "--cookies",
                                               ",".join(cookies)])
    finally:
        if how == "admin":
            proxy.backend("up", "web-cookie", victim)
        else:
            Namespace(lab.ns(victim)).run(["ip", "link", "set", "eth0", "up"])
            _await_state(proxy, "web-cookie", victim, "up")
    rows = again["rows"]
    on_victim = [r for r, owner in zip(rows, owners, strict=True) if owner == victim]
    failed = [r for r in rows if not str(r["backend"]).startswith("be")]
    return {"how": how, "detected_after_s": detected, "backend": victim, "sessions_on_it": len(on_victim),
            "moved": sum(1 for r in on_victim if r["backend"] != victim and r["set_cookie"]),
            "others_kept": sum(1 for r, owner in zip(rows, owners, strict=True)
                               if owner != victim and r["backend"] == owner),
            "failed": len(failed)}


def cache_rows(lab: Lab, engine: str, requests: int, urls: int) -> list[dict[str, Any]]:
    data = proxy_data(l7_service(lab, "web", lab.port),
                      l7_service(lab, "web-cached", 8080, l7={"cache": {"max_bytes": 4 * 1024 * 1024}}))
    rows = []
    with Proxy(engine, lab.ns("lb"), lab.workdir, f"cache-{engine}", data) as proxy:
        for name, port, cached in (("web", lab.port, False), ("web-cached", 8080, True)):
            before = _backend_requests(proxy.stats(), name)
            result = client_json(lab.ns("client"), ["repeat", "--url", f"http://{lab.vip}:{port}/cacheable/",
                                                    "--urls", str(urls), "--requests", str(requests)])
            served = _backend_requests(proxy.stats(), name) - before
            rows.append({"engine": engine, "cache": cached, "requests": requests, "urls": urls,
                         "errors": result["errors"], "backend_requests": served,
                         "backend_requests_saved": requests - served,
                         "hit_ratio": round((requests - served) / requests, 3) if requests else None,
                         "hit_latency_ms": result["hit_latency_ms"], "miss_latency_ms": result["miss_latency_ms"]})
    return rows


def _backend_requests(stats: dict[str, Any] | None, service: str) -> int:
    row = next((s for s in (stats or {}).get("services", []) if s.get("name") == service), None)
    return sum(be.get("requests", 0) for be in (row or {}).get("backends", []))


def filter_rows(lab: Lab, engine: str, flood: int, paced: int, rate: float) -> dict[str, Any]:
    data = proxy_data(l7_service(lab, "web", lab.port, l7={"filter": {"rate": rate, "burst": int(rate),
                                                                      "methods": ["GET", "HEAD"]}}))
    url = f"http://{lab.vip}:{lab.port}/"
    with Proxy(engine, lab.ns("lb"), lab.workdir, f"filter-{engine}", data) as proxy:
        before = _backend_requests(proxy.stats(), "web")
        flooder = start_client(lab.ns("client"), ["load", "--url", url, "--source", MOVING_CLIENT[0], "--requests",
                                                  str(flood), "--concurrency", "4", "--keepalive"],
                               lab.workdir / f"filter-{engine}-flood.json")
        calm = client_json(lab.ns("client"), ["load", "--url", url, "--source", MOVING_CLIENT[1], "--requests",
                                              str(paced), "--interval", str(round(2.0 / rate, 4))])  # half the rate
        flooded = finished_json(flooder)
        served = _backend_requests(proxy.stats(), "web") - before
        stats = proxy.stats() or {}
    admitted = flooded["statuses"].get("200", 0) + calm["statuses"].get("200", 0)
    rejects = stats.get("totals", {}).get("rejects", {})
    return {"engine": engine, "rate": rate, "burst": int(rate), "flood": flooded, "paced": calm,
            "backend_requests": served, "admitted": admitted, "proxy_rejects": rejects,
            "backends_saw_only_admitted": served == admitted}
