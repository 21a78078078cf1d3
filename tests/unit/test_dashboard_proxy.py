"""The dashboard with `pktlb proxy` as a source: its kind, its backends' states and request rates, its /metrics."""

from __future__ import annotations

import copy
from typing import Any

from pktlb.daemon.dashboard.history import changes, rates
from pktlb.daemon.dashboard.metrics import Families, proxy_families
from pktlb.daemon.dashboard.sources import PROXY, Sample, Source, kind_of
from pktlb.daemon.proxy.report import STATS_KIND

SOURCE = Source("l7lab", "/run/pktlb/l7lab/pktlb.sock")


def proxy_reply(requests: int = 40, state: str = "up") -> dict[str, Any]:
    def backend(name: str, address: str, n: int, be_state: str = "up") -> dict[str, Any]:
        return {"name": name, "address": address, "port": 80, "state": be_state, "admin": "up", "weight": 1,
                "in_flight": 0, "rtt_ms": 1.2, "requests": n, "responses": {"2xx": n}, "failures": {},
                "connections_opened": 1, "reused": n - 1, "pool": {"active": 0, "idle": 1},
                "health": {"state": be_state, "since_s": 3.0, "reason": "http L7OK", "last_rtt_ms": 1.0,
                           "checks": [{"type": "http", "status": "L7OK", "verdict": "up", "detail": "status 200"}]}}
    return {"kind": STATS_KIND, "generation": 1, "pid": 42, "uptime": 12.0,
            "totals": {"connections": 5, "open_connections": 1, "requests": requests, "responses": {"2xx": requests},
                       "rejects": {"header_timeout": 2}, "idle_closed": 0},
            "services": [{"name": "web", "vip": "198.19.0.100", "port": 80, "protocol": "tcp", "mode": "l7",
                          "scheduler": "rr", "hash_key": "connection",
                          "counters": {"connections": 5, "open_connections": 1, "requests": requests,
                                       "forwarded": requests, "rejects": {"header_timeout": 2},
                                       "responses": {"2xx": requests}, "idle_closed": 0},
                          "routes": [{"name": "default", "host": None, "path_prefix": "/", "scheduler": "rr",
                                      "backends": ["be1", "be2"], "eligible": ["be1", "be2"]}],
                          "backends": [backend("be1", "198.18.0.11", requests // 2),
                                       backend("be2", "198.18.0.12", requests // 2, state)]}]}


def sample(data: dict[str, Any], t: float) -> Sample:
    return Sample(SOURCE, polled_at=1_700_000_000 + t, monotonic=t, duration=0.002, data=data, kind=kind_of(data))


def test_the_proxy_is_its_own_kind_with_request_rates_and_state_changes():
    first, second = sample(proxy_reply(40), 10.0), sample(proxy_reply(60, state="down"), 12.0)
    assert first.kind == PROXY
    r = rates(first, second)
    assert r["backends"]["web/be1"]["rps"] == 5.0 and r["backends"]["web/be1"]["pps_in"] == 0.0
    events = changes(first, second)
    assert [(e["backend"], e["from"], e["to"]) for e in events] == [("web/be2", "up", "down (health down)")]


def test_proxy_metrics_have_requests_responses_connections_and_no_packet_counters():
    out = Families()
    proxy_families(out, "l7lab", copy.deepcopy(proxy_reply(40)))
    names = set(out.by_name)
    assert {"pktlb_proxy_requests", "pktlb_proxy_backend_connections_opened", "pktlb_proxy_backend_reused",
            "pktlb_proxy_rejects", "pktlb_backend_state", "pktlb_backend_health_state"} <= names
    assert "pktlb_backend_packets_in" not in names and "pktlb_backend_active_flows" not in names
    opened = {s.labels["backend"]: s.value for s in out.by_name["pktlb_proxy_backend_connections_opened"].samples}
    assert opened == {"be1": 1.0, "be2": 1.0}
    requests = {s.labels["backend"]: s.value for s in out.by_name["pktlb_proxy_backend_requests"].samples}
    assert requests == {"be1": 20.0, "be2": 20.0}


def test_proxy_feature_metrics_tls_cookie_cache_rate_limit():
    data = copy.deepcopy(proxy_reply(40))
    svc = data["services"][0]
    svc["tls"] = True
    svc["counters"].update(tls_full=3, tls_resumed=7, sticky={"kept": 30, "new": 10})
    svc["cache"] = {"hits": 35, "misses": 5, "stored": 5, "evicted": 0, "expired": 0, "entries": 5, "bytes": 9000}
    svc["rate_limit"] = {"clients": 4}
    out = Families()
    proxy_families(out, "l7lab", data)
    tls = {s.labels["kind"]: s.value for s in out.by_name["pktlb_proxy_tls_handshakes"].samples}
    assert tls == {"full": 3.0, "resumed": 7.0}
    assert {s.labels["outcome"]: s.value for s in out.by_name["pktlb_proxy_sticky"].samples} == {"kept": 30.0,
                                                                                                 "new": 10.0}
    assert out.by_name["pktlb_proxy_cache_hits"].samples[0].value == 35.0
    assert out.by_name["pktlb_proxy_rate_limit_clients"].samples[0].value == 4.0
    plain = Families()
    proxy_families(plain, "l7lab", copy.deepcopy(proxy_reply(40)))
    assert not {n for n in plain.by_name if "tls" in n or "cache" in n or "sticky" in n}
