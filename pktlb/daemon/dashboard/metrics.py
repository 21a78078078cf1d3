"""/metrics: a prometheus-client custom collector over the latest poll of every source.

Names follow Prometheus' conventions: a ``pktlb_`` prefix, counters end in ``_total``, base units
(bytes, seconds), the source as the ``lb`` label, enumerations (state) as one 0/1 series per value.
A source that did not answer its last poll shows only ``pktlb_source_up 0`` (as an exporter's ``up``).
The collector reads the poller's last samples: a scrape never reaches the engine itself, so scrapers
add no load to its packet loop.  ``engine_families`` is a pure function, tested on JSON replies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pktlb.daemon.dashboard.poller import DashboardState, SourceState
from pktlb.daemon.dashboard.sources import ENGINE, PROXY, Sample

log = logging.getLogger("pktlb.dashboard")
BACKEND_STATES = ("up", "drain", "down")
HEALTH_STATES = ("init", "up", "down")
LB, SVC, BE = ["lb"], ["lb", "service"], ["lb", "service", "backend"]
# backend JSON field -> (counter name without _total, help)
BACKEND_COUNTERS = {
    "new_flows": ("pktlb_backend_new_flows", "Flows scheduled to the backend (first packet of a new flow)."),
    "packets_in": ("pktlb_backend_packets_in", "Packets forwarded to the backend (client to backend)."),
    "bytes_in": ("pktlb_backend_bytes_in", "Bytes forwarded to the backend (client to backend)."),
    "packets_out": ("pktlb_backend_packets_out", "Reply packets from the backend through the LB (nat, fullnat)."),
    "bytes_out": ("pktlb_backend_bytes_out", "Reply bytes from the backend through the LB (nat, fullnat)."),
}
FRAME_COUNTERS = {key: (f"pktlb_frames_{key}", f"Frames the engine {key} (received = forwarded + replied + dropped).")
                  for key in ("received", "forwarded", "replied", "dropped")}
FLOW_TABLE_COUNTERS = {key: (f"pktlb_flow_table_{key}", f"Flow-table entries {key}.")
                       for key in ("inserted", "evicted", "expired")}


class Families:
    """Metric families built up source by source (one family per name, whatever the number of sources)."""

    def __init__(self) -> None:
        self.by_name: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}

    def gauge(self, name: str, doc: str, labels: list[str], values: list[str], value: float) -> None:
        family = self.by_name.get(name)
        if family is None:
            family = self.by_name[name] = GaugeMetricFamily(name, doc, labels=labels)
        family.add_metric(values, float(value))

    def counter(self, name: str, doc: str, labels: list[str], values: list[str], value: float) -> None:
        family = self.by_name.get(name)
        if family is None:
            family = self.by_name[name] = CounterMetricFamily(name, doc, labels=labels)
        family.add_metric(values, float(value))

    def __iter__(self) -> Iterator[Metric]:
        return iter(self.by_name.values())


def engine_families(out: Families, lb: str, data: dict[str, Any]) -> None:
    """An engine's stats reply (merged over its workers) as metric samples labelled ``lb``."""
    out.gauge("pktlb_engine_uptime_seconds", "Seconds since the engine started.", LB, [lb], data.get("uptime", 0))
    out.gauge("pktlb_engine_workers", "Forwarding processes of the engine.", LB, [lb], data.get("workers", 1))
    out.gauge("pktlb_snapshot_generation", "Generation of the engine's current snapshot (one per change).",
              LB, [lb], data.get("generation", 0))
    totals = data.get("totals") or {}
    for key, (name, doc) in FRAME_COUNTERS.items():
        out.counter(name, doc, LB, [lb], totals.get(key, 0))
    for reason, n in sorted((totals.get("drops") or {}).items()):
        out.counter("pktlb_drops", "Frames dropped by the engine, by reason (see pktlb's drop reasons).",
                    ["lb", "reason"], [lb, reason], n)
    flows = data.get("flows") or {}
    out.gauge("pktlb_flow_table_entries", "Flows in the flow table.", LB, [lb], flows.get("entries", 0))
    out.gauge("pktlb_flow_table_capacity", "Flow-table size limit (entries).", LB, [lb], flows.get("max_entries", 0))
    for key, (name, doc) in FLOW_TABLE_COUNTERS.items():
        out.counter(name, doc, LB, [lb], flows.get(key, 0))
    port = data.get("port") or {}
    out.counter("pktlb_kernel_drops", "Frames the kernel dropped before the engine read them (socket queue full).",
                LB, [lb], port.get("kernel_drops", 0))
    out.counter("pktlb_port_received_frames", "Frames read from the raw socket.", LB, [lb], port.get("rx", 0))
    out.counter("pktlb_port_sent_frames", "Frames written to the raw socket.", LB, [lb], port.get("tx", 0))
    for errno, n in sorted((port.get("tx_errors") or {}).items()):
        out.counter("pktlb_port_send_errors", "Frames the kernel refused to send, by errno.",
                    ["lb", "error"], [lb, errno], n)
    for svc in data.get("services") or []:
        _service(out, lb, svc)


def _service(out: Families, lb: str, svc: dict[str, Any]) -> None:
    name = str(svc.get("name"))
    out.gauge("pktlb_service_info", "A service (VIP, port, protocol, forwarding mode, scheduler); value 1.",
              SVC + ["vip", "port", "protocol", "mode", "scheduler"],
              [lb, name, str(svc.get("vip")), str(svc.get("port")), str(svc.get("protocol")), str(svc.get("mode")),
               str(svc.get("scheduler"))], 1)
    for reason, n in sorted((svc.get("drops") or {}).items()):
        out.counter("pktlb_service_drops", "Frames for the service dropped, by reason.", SVC + ["reason"],
                    [lb, name, reason], n)
    slots = svc.get("maglev_slots") or {}
    for be in svc.get("backends") or []:
        _backend(out, [lb, name, str(be.get("name"))], be, slots.get(be.get("name")))


def _backend(out: Families, labels: list[str], be: dict[str, Any], slots: int | None) -> None:
    out.gauge("pktlb_backend_info", "A backend's address and port; value 1.", BE + ["address", "port"],
              labels + [str(be.get("address")), str(be.get("port"))], 1)
    for state in BACKEND_STATES:
        out.gauge("pktlb_backend_state", "Forwarding state (1 for the current one): up, drain (no new flows) or down.",
                  BE + ["state"], labels + [state], be.get("state") == state)
        out.gauge("pktlb_backend_admin_state", "Administrative state set by `pktlb backend` (1 for the current one).",
                  BE + ["state"], labels + [state], be.get("admin", "up") == state)
    out.gauge("pktlb_backend_weight", "Scheduler weight.", BE, labels, be.get("weight", 0))
    if "active_flows" in be or "in_flight" not in be:
        out.gauge("pktlb_backend_active_flows", "Flows to the backend in the flow table.", BE, labels,
                  be.get("active_flows", 0))
    for key, (name, doc) in BACKEND_COUNTERS.items():
        if key in be or "requests" not in be:  # the proxy has no packet counters (proxy_families has its own)
            out.counter(name, doc, BE, labels, be.get(key, 0))
    if slots is not None:
        out.gauge("pktlb_backend_maglev_slots", "Maglev lookup-table slots owned by the backend.", BE, labels, slots)
    if be.get("rtt_ms") is not None:
        out.gauge("pktlb_backend_rtt_seconds", "Smoothed connection round-trip time the engine measured.", BE,
                  labels, be["rtt_ms"] / 1000)
    health = be.get("health")
    if not health:
        return
    for state in HEALTH_STATES:
        out.gauge("pktlb_backend_health_state", "Health-check verdict (1 for the current one): init, up or down.",
                  BE + ["state"], labels + [state], health.get("state") == state)
    if health.get("since_s") is not None:
        out.gauge("pktlb_backend_health_state_seconds", "Seconds since the health state last changed.", BE, labels,
                  health["since_s"])
    if health.get("last_rtt_ms") is not None:
        out.gauge("pktlb_backend_health_check_rtt_seconds", "Round-trip time of the last passed health check.", BE,
                  labels, health["last_rtt_ms"] / 1000)
    for check in health.get("checks") or []:
        check_labels = labels + [str(check.get("type"))]
        out.gauge("pktlb_backend_health_check_up", "1 if the check's last result says up.", BE + ["check"],
                  check_labels, check.get("verdict") == "up")
        out.gauge("pktlb_backend_health_check_status", "The check's last status (L3OK, L4CON, L7STS, ...); value 1.",
                  BE + ["check", "status"], check_labels + [str(check.get("status"))], 1)


def proxy_families(out: Families, lb: str, data: dict[str, Any]) -> None:
    """`pktlb proxy`'s stats reply: per service requests, responses by class and rejections by reason;
    per backend the engine's state and health series plus requests, responses, failures and connections."""
    out.gauge("pktlb_proxy_uptime_seconds", "Seconds since the proxy started.", LB, [lb], data.get("uptime", 0))
    out.gauge("pktlb_snapshot_generation", "Generation of the current snapshot (one per change).",
              LB, [lb], data.get("generation", 0))
    for svc in data.get("services") or []:
        name, c = str(svc.get("name")), svc.get("counters") or {}
        out.gauge("pktlb_service_info", "A service (VIP, port, protocol, forwarding mode, scheduler); value 1.",
                  SVC + ["vip", "port", "protocol", "mode", "scheduler"],
                  [lb, name, str(svc.get("vip")), str(svc.get("port")), str(svc.get("protocol")),
                   str(svc.get("mode")), str(svc.get("scheduler"))], 1)
        out.counter("pktlb_proxy_client_connections", "Client connections the proxy accepted.", SVC, [lb, name],
                    c.get("connections", 0))
        out.gauge("pktlb_proxy_client_connections_open", "Client connections open now.", SVC, [lb, name],
                  c.get("open_connections", 0))
        out.counter("pktlb_proxy_requests", "Request heads read from clients.", SVC, [lb, name], c.get("requests", 0))
        for cls, n in sorted((c.get("responses") or {}).items()):
            out.counter("pktlb_proxy_responses", "Responses sent to clients, by status class.", SVC + ["class"],
                        [lb, name, cls], n)
        for reason, n in sorted((c.get("rejects") or {}).items()):
            out.counter("pktlb_proxy_rejects", "The proxy's own answers or cut connections, by reason.",
                        SVC + ["reason"], [lb, name, reason], n)
        _feature_families(out, [lb, name], svc)
        for be in svc.get("backends") or []:
            labels = [lb, name, str(be.get("name"))]
            _backend(out, labels, be, None)
            out.counter("pktlb_proxy_backend_requests", "Requests sent to the backend (retries included).", BE,
                        labels, be.get("requests", 0))
            out.counter("pktlb_proxy_backend_connections_opened", "TCP connections the proxy opened to the backend.",
                        BE, labels, be.get("connections_opened", 0))
            out.counter("pktlb_proxy_backend_reused", "Requests sent over a reused pooled connection.", BE, labels,
                        be.get("reused", 0))
            out.gauge("pktlb_proxy_backend_in_flight", "Requests waiting for the backend's answer now.", BE, labels,
                      be.get("in_flight", 0))
            for cls, n in sorted((be.get("responses") or {}).items()):
                out.counter("pktlb_proxy_backend_responses", "Response heads from the backend, by status class.",
                            BE + ["class"], labels + [cls], n)
            for reason, n in sorted((be.get("failures") or {}).items()):
                out.counter("pktlb_proxy_backend_failures", "Requests the backend failed, by reason.",
                            BE + ["reason"], labels + [reason], n)


def _feature_families(out: Families, labels: list[str], svc: dict[str, Any]) -> None:
    """The proxy's optional features (issue 20): TLS handshakes, cookie persistence, cache, rate limit."""
    c = svc.get("counters") or {}
    if svc.get("tls"):
        for kind in ("full", "resumed"):
            out.counter("pktlb_proxy_tls_handshakes", "TLS handshakes the proxy ended, full or resumed.",
                        SVC + ["kind"], labels + [kind], c.get(f"tls_{kind}", 0))
    for outcome, n in sorted((c.get("sticky") or {}).items()):
        out.counter("pktlb_proxy_sticky", "Requests by cookie persistence outcome (kept, moved, new).",
                    SVC + ["outcome"], labels + [outcome], n)
    cache = svc.get("cache")
    if cache:
        for key in ("hits", "misses", "stored", "evicted", "expired"):
            out.counter(f"pktlb_proxy_cache_{key}", f"Response cache: {key}.", SVC, labels, cache.get(key, 0))
        out.gauge("pktlb_proxy_cache_entries", "Answers in the response cache now.", SVC, labels, cache.get("entries", 0))
        out.gauge("pktlb_proxy_cache_bytes", "Bytes the response cache holds now.", SVC, labels, cache.get("bytes", 0))
    limit = svc.get("rate_limit")
    if limit:
        out.gauge("pktlb_proxy_rate_limit_clients", "Client addresses with a token bucket now.", SVC, labels,
                  limit.get("clients", 0))


# What each kind of source contributes.
FAMILIES_BY_KIND: dict[str, Callable[[Families, str, dict[str, Any]], None]] = {ENGINE: engine_families,
                                                                                PROXY: proxy_families}


def source_families(out: Families, sample: Sample | None, state: SourceState) -> None:
    lb = state.source.name
    ok = sample is not None and sample.ok
    out.gauge("pktlb_source_up", "1 if the source answered the dashboard's last poll.", LB, [lb], ok)
    out.counter("pktlb_source_polls", "Polls of the source.", LB, [lb], state.polls)
    out.counter("pktlb_source_poll_failures", "Polls the source did not answer.", LB, [lb], state.failures)
    if sample is None:
        return
    out.gauge("pktlb_source_poll_duration_seconds", "Seconds the last poll took.", LB, [lb], sample.duration)
    if not ok:
        return
    out.gauge("pktlb_source_info", "What the source is (its kind) and its control socket; value 1.",
              ["lb", "kind", "socket"], [lb, sample.kind, state.source.socket], 1)
    render = FAMILIES_BY_KIND.get(sample.kind)
    if render is not None and sample.data is not None:
        try:
            render(out, lb, sample.data)
        except (AttributeError, KeyError, TypeError, ValueError):  # a reply of an unexpected shape: what fit stays
            log.warning("%s: stats reply of an unexpected shape; /metrics shows part of it", lb, exc_info=True)


class StatsCollector:
    """The custom collector: registered in its own registry, read on every scrape."""

    def __init__(self, state: DashboardState) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        out = Families()
        for sample, source_state in self.state.samples():
            source_families(out, sample, source_state)
        return list(out)


def make_registry(state: DashboardState) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(state))
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
