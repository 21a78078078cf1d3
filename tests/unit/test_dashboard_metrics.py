"""The dashboard's collector (engine JSON -> Prometheus metric families), rates, change events and
the merging of a multi-worker engine's replies."""

from __future__ import annotations

import copy

from prometheus_client.parser import text_string_to_metric_families

from pktlb.daemon.dashboard.history import changes, history_point, rates
from pktlb.daemon.dashboard.metrics import make_registry, render_metrics
from pktlb.daemon.dashboard.poller import DashboardState
from pktlb.daemon.dashboard.sources import Sample, Source, kind_of, make_sources, name_for
from pktlb.daemon.worker_stats import merge_worker_stats
from tests.unit.dashboard_fixtures import backend, engine_reply

SOURCE = Source("lab1", "/run/pktlb/lab1/pktlb.sock")


def sample(data: dict | None, t: float = 100.0, error: str | None = None, source: Source = SOURCE) -> Sample:
    return Sample(source, polled_at=1_700_000_000 + t, monotonic=t, duration=0.002, data=data,
                  error=error, kind=kind_of(data) if data else "engine")


def scrape(*samples: Sample) -> dict[str, list]:
    """Record the samples, render /metrics, parse it back with prometheus-client's own parser."""
    state = DashboardState(sorted({s.source for s in samples}, key=lambda s: s.name))
    for one in samples:
        state.record(one)
    text = render_metrics(make_registry(state)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return {name: [(s.name, s.labels, s.value) for s in f.samples] for name, f in families.items()} | \
        {"_types": {name: f.type for name, f in families.items()}}


def value(metrics: dict, family: str, **labels: str) -> float:
    found = [v for _, lab, v in metrics[family] if all(lab.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (family, labels, metrics.get(family))
    return found[0]


def test_engine_reply_becomes_metric_families_with_prometheus_names() -> None:
    reply = engine_reply([backend("be1", "198.18.0.11", new_flows=40, packets_in=300, bytes_in=24000, packets_out=200,
                                  bytes_out=90000, active_flows=5, rtt_ms=0.5),
                          backend("be2", "198.18.0.12", state="down", admin="down", health="down",
                                  check_status="L3TOUT", rtt_ms=None)],
                         drops={"lb_local": 7, "not_vip": 2})
    m = scrape(sample(reply))
    types = m["_types"]
    assert all(name.startswith("pktlb_") for name in types)
    for name, kind in types.items():  # the parser drops _total from a counter family's name; samples keep it
        if kind == "counter":
            assert all(s.endswith("_total") for s, _, _ in m[name]), name
    be1 = {"lb": "lab1", "service": "web", "backend": "be1"}
    assert types["pktlb_backend_new_flows"] == "counter"
    assert value(m, "pktlb_backend_new_flows", **be1) == 40
    assert value(m, "pktlb_backend_packets_in", **be1) == 300
    assert value(m, "pktlb_backend_bytes_in", **be1) == 24000
    assert value(m, "pktlb_backend_packets_out", **be1) == 200
    assert value(m, "pktlb_backend_bytes_out", **be1) == 90000
    assert value(m, "pktlb_backend_active_flows", **be1) == 5
    assert value(m, "pktlb_backend_weight", **be1) == 1
    assert value(m, "pktlb_backend_rtt_seconds", **be1) == 0.0005  # base unit: seconds
    assert value(m, "pktlb_backend_maglev_slots", **be1) == 32768
    assert value(m, "pktlb_backend_state", **be1, state="up") == 1
    assert value(m, "pktlb_backend_state", **be1, state="down") == 0
    be2 = {**be1, "backend": "be2"}
    assert value(m, "pktlb_backend_state", **be2, state="down") == 1
    assert value(m, "pktlb_backend_state", **be2, state="up") == 0
    assert value(m, "pktlb_backend_admin_state", **be2, state="down") == 1
    assert not [s for s in m["pktlb_backend_rtt_seconds"] if s[1]["backend"] == "be2"]  # no RTT measured: no series
    # health: the state, each check's verdict and status, the last RTT in seconds
    assert value(m, "pktlb_backend_health_state", **be1, state="up") == 1
    assert value(m, "pktlb_backend_health_state", **be2, state="down") == 1
    assert value(m, "pktlb_backend_health_check_up", **be1, check="icmp") == 1
    assert value(m, "pktlb_backend_health_check_up", **be2, check="icmp") == 0
    assert value(m, "pktlb_backend_health_check_status", **be2, check="icmp", status="L3TOUT") == 1
    assert value(m, "pktlb_backend_health_check_rtt_seconds", **be1) == 0.000272
    assert value(m, "pktlb_backend_health_state_seconds", **be1) == 12.5
    # the engine as a whole: frames, drops by reason, flow table, kernel drops
    assert value(m, "pktlb_frames_received", lb="lab1") == 109
    assert value(m, "pktlb_drops", lb="lab1", reason="not_vip") == 2
    assert value(m, "pktlb_service_drops", lb="lab1", service="web", reason="no_backend") == 1
    assert value(m, "pktlb_flow_table_entries", lb="lab1") == 5
    assert value(m, "pktlb_flow_table_capacity", lb="lab1") == 1_000_000
    assert value(m, "pktlb_kernel_drops", lb="lab1") == 3
    assert value(m, "pktlb_port_send_errors", lb="lab1", error="ENOBUFS") == 2
    assert value(m, "pktlb_service_info", lb="lab1", service="web", vip="198.19.0.100", mode="nat") == 1
    assert value(m, "pktlb_source_up", lb="lab1") == 1
    assert value(m, "pktlb_source_info", lb="lab1", kind="engine") == 1


def test_a_source_that_does_not_answer_shows_only_up_0() -> None:
    m = scrape(sample(engine_reply()), sample(None, t=101, error="no engine control socket"))
    assert value(m, "pktlb_source_up", lb="lab1") == 0
    assert value(m, "pktlb_source_poll_failures", lb="lab1") == 1
    assert value(m, "pktlb_source_polls", lb="lab1") == 2
    assert "pktlb_backend_new_flows" not in m and "pktlb_source_info" not in m


def test_several_sources_share_one_family_per_name() -> None:
    other = Source("lab2", "/run/pktlb/lab2/pktlb.sock")
    m = scrape(sample(engine_reply()), sample(engine_reply(), source=other))
    assert {lab["lb"] for _, lab, _ in m["pktlb_backend_new_flows"]} == {"lab1", "lab2"}


def test_a_kind_without_a_renderer_is_up_with_its_kind_only() -> None:
    m = scrape(sample({"kind": "proxy", "listeners": []}))
    assert value(m, "pktlb_source_info", lb="lab1", kind="proxy") == 1
    assert "pktlb_frames_received" not in m


def test_an_engine_too_old_to_say_its_kind_is_an_engine() -> None:
    assert kind_of(engine_reply(kind=None)) == "engine"
    assert kind_of({"kind": "proxy"}) == "proxy"


def test_rates_come_from_counter_differences_and_never_go_negative() -> None:
    before = engine_reply([backend("be1", "a", new_flows=10, packets_in=100, bytes_in=1000),
                           backend("be2", "b", new_flows=50)])
    after = engine_reply([backend("be1", "a", new_flows=30, packets_in=300, bytes_in=3000),
                          backend("be2", "b", new_flows=0)])  # be2's counter went back: a restarted engine
    r = rates(sample(before, t=10.0), sample(after, t=12.0))
    assert r["backends"]["web/be1"] == {"pps_in": 100.0, "pps_out": 0.0, "bps_in": 8000.0, "bps_out": 0.0, "cps": 10.0}
    assert r["backends"]["web/be2"]["cps"] == 0.0
    point = history_point(sample(after, t=12.0), r)
    assert point["b"]["web/be1"] == [100.0, 0.0, 8000.0, 0.0, 10.0]
    assert rates(None, sample(after)) == {"backends": {}, "totals": {}, "drops": {}}


def test_changes_name_what_happened_and_why() -> None:
    up = engine_reply(generation=3)
    admin_down = engine_reply([backend("be1", "a"), backend("be2", "b", state="down", admin="down")], generation=4,
                              changes=[{"generation": 3, "why": "old", "ring_moved": {}},
                                       {"generation": 4, "why": "web/be2 set down by operator",
                                        "ring_moved": {"web": 21848}}])
    events = changes(sample(up, t=1), sample(admin_down, t=2))
    assert [(e["what"], e.get("backend"), e.get("from"), e["to"]) for e in events] == [
        ("snapshot", None, None, "snapshot 4"), ("backend", "web/be2", "up", "down (admin down)")]
    assert events[0]["why"] == "web/be2 set down by operator (web: 21848 slots moved)"
    assert events[1]["why"] == "set down by operator"
    sick = engine_reply([backend("be1", "a"), backend("be2", "b", state="down", health="down", check_status="L3TOUT")])
    health_event = changes(sample(up, t=1), sample(sick, t=2))[-1]
    assert health_event["to"] == "down (health down)" and health_event["why"] == "health down: icmp L3TOUT"
    assert changes(sample(up, t=1), sample(up, t=2)) == []
    gone = changes(sample(up, t=1), sample(None, t=2, error="refused"))
    assert [(e["what"], e["to"], e["why"]) for e in gone] == [("source", "unreachable", "refused")]
    back = changes(sample(None, t=2, error="refused"), sample(up, t=3))
    assert [(e["from"], e["to"]) for e in back] == [("unreachable", "answering")]
    grown = engine_reply([backend("be1", "a"), backend("be2", "b"), backend("be3", "c")])
    assert [(e.get("backend"), e["why"]) for e in changes(sample(up, t=1), sample(grown, t=2))] == [("web/be3", "added")]
    assert [(e.get("backend"), e["to"]) for e in changes(sample(grown, t=1), sample(up, t=2))] == [("web/be3", "removed")]


def test_the_state_marks_changed_rows_and_keeps_history() -> None:
    state = DashboardState([SOURCE])
    state.record(sample(engine_reply(), t=1))
    state.record(sample(engine_reply(), t=2))
    state.record(sample(engine_reply([backend("be1", "a"), backend("be2", "b", state="drain", admin="drain")]), t=3))
    view = state.view()
    source = view["sources"][0]
    assert source["changed_at"] == {"web/be2": 1_700_000_003}
    assert len(state.history()["sources"]["lab1"]) == 2 and source["last_point"]["t"] == 1_700_000_003
    assert view["events"][-1]["to"] == "drain (admin drain)"


def test_worker_replies_add_up() -> None:
    w0 = engine_reply([backend("be1", "a", new_flows=3, packets_in=10, active_flows=2)], drops={"lb_local": 1})
    w1 = engine_reply([backend("be1", "a", new_flows=4, packets_in=20, active_flows=1)], drops={"not_vip": 5})
    w1["services"][0]["drops"] = {"no_backend": 2}
    merged = merge_worker_stats([copy.deepcopy(w0), w1])
    be1 = merged["services"][0]["backends"][0]
    assert (be1["new_flows"], be1["packets_in"], be1["active_flows"]) == (7, 30, 3)
    assert merged["totals"]["drops"] == {"lb_local": 1, "not_vip": 5}
    assert merged["services"][0]["drops"] == {"no_backend": 3}
    assert merged["flows"]["entries"] == 3 and merged["workers"] == 2
    assert merged["port"]["kernel_drops"] == 6
    assert set(merged["drop_reasons"]) == {"lb_local", "not_vip"}


def test_source_names() -> None:
    assert name_for("/run/pktlb/pktlb-/pktlb.sock") == "pktlb-"
    assert name_for("/tmp/lb2.sock") == "lb2.sock"
    sources = make_sources(["/run/pktlb/a/pktlb.sock", "edge=/tmp/x.sock", "/tmp/x=y/pktlb.sock",
                            "/run/other/a/pktlb.sock"])
    assert [(s.name, s.socket) for s in sources] == [
        ("a", "/run/pktlb/a/pktlb.sock"), ("edge", "/tmp/x.sock"), ("x=y", "/tmp/x=y/pktlb.sock"),
        ("a#2", "/run/other/a/pktlb.sock")]


def test_a_reply_of_an_unknown_shape_is_a_failed_poll_not_a_crash() -> None:
    state = DashboardState([SOURCE])
    state.record(sample(engine_reply(), t=1))
    state.record(sample({"kind": "engine", "services": "nonsense", "totals": []}, t=2))
    view = state.view()["sources"][0]
    assert not view["ok"] and view["error"].startswith("unreadable stats reply")
    state.record(sample(engine_reply(), t=3))
    assert state.view()["sources"][0]["ok"]
    assert [e["to"] for e in state.view()["events"]] == ["unreachable", "answering"]
    half_odd = engine_reply()
    half_odd["services"][0]["backends"][0]["health"] = "not a dict"  # rates and states read fine, metrics do not
    m = scrape(sample(half_odd))
    assert value(m, "pktlb_source_up", lb="lab1") == 1 and "pktlb_frames_received" in m
