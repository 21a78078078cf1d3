"""`pktlb compare` with mode l7 beside the L4 modes, without a lab: invariants, tables, charts, the CLI's modes."""

from __future__ import annotations

import copy

from click.testing import CliRunner

from pktlb.cli import main
from pktlb.lab.topology import load_topology, mode_default
from pktlb.reports.compare.charts import write_charts
from pktlb.reports.compare.connections import what_the_backend_learned
from pktlb.reports.compare.lab_facts import mode_requirements
from pktlb.reports.compare.render import invariants, render_markdown, render_text
from tests.unit.test_compare_parts import REPORT, _run

CLIENT = "198.18.1.10"
PROXY = "198.18.0.2"


def _l4(mode: str, engine: str = "pktlb") -> dict:
    run = _run(mode, engine)
    run.update(layer=4, backend_connections={"close": {"opened": 1004, "responses": 1000, "per_request": 1.004},
                                             "keepalive": {"opened": 16, "responses": 5000, "per_request": 0.0032}},
               one_connection={"requests": 4, "client_connections": 1, "backends": ["be2"] * 4,
                               "distinct_backends": 1},
               http_keepalive={"requests_per_second": 2800.0, "latency_ms": {"p50": 4.4, "p90": 9.0, "p99": 24.3},
                               "cpu_us_per_request": 144.0},
               learned=what_the_backend_learned({"client": run["request"]["backend_saw"]}, CLIENT))
    return run


def _l7(engine: str) -> dict:
    run = _run("nat", engine)
    run.update(mode="l7", layer=7, header_overhead_bytes=None,
               request={"client_address": CLIENT, "backend_saw": PROXY},
               backend_connections={"close": {"opened": 9, "responses": 1000, "per_request": 0.009},
                                    "keepalive": {"opened": 8, "responses": 2000, "per_request": 0.004}},
               one_connection={"requests": 4, "client_connections": 1, "backends": ["be1", "be2", "be1", "be2"],
                               "distinct_backends": 2},
               http_keepalive={"requests_per_second": 837.0, "latency_ms": {"p50": 16.5, "p90": 30.0, "p99": 72.5},
                               "cpu_us_per_request": 748.0},
               learned=what_the_backend_learned({"client": PROXY, "x_forwarded_for": CLIENT}, CLIENT))
    run["lb"]["cpu_us_per_request"] = 1143.0
    return run


def report() -> dict:
    out = copy.deepcopy(REPORT)
    out["settings"].update(modes=["nat", "l7"], l7_scheduler="rr", keepalive_seconds=2)
    out["runs"] = [_l4("nat"), _l4("nat", "kernel"), _l7("pktlb"), _l7("haproxy")]
    return out


def test_l4_and_l7_invariants_hold_for_what_each_does():
    checks = invariants(report())
    assert checks and all(c["holds"] for c in checks), [c for c in checks if not c["holds"]]
    names = {(c["mode"], c["engine"], c["check"]) for c in checks}
    assert ("nat", "pktlb", "one backend connection per request") in names
    assert ("l7", "haproxy", "far fewer backend connections than requests (pooling)") in names
    assert ("l7", "pktlb", f"X-Forwarded-For carries the client ({CLIENT})") in names
    assert ("l7", "pktlb", "4 requests on one client connection are balanced one by one") in names


def test_a_proxy_that_pins_a_connection_or_loses_the_client_breaks_its_invariants():
    bad = report()
    proxy = bad["runs"][2]
    proxy["one_connection"].update(backends=["be1"] * 4, distinct_backends=1)
    proxy["learned"]["x_forwarded_for"] = None
    proxy["backend_connections"]["close"]["per_request"] = 1.0
    bad["runs"][0]["one_connection"].update(distinct_backends=2)
    broken = {(c["mode"], c["engine"], c["check"]) for c in invariants(bad) if not c["holds"]}
    assert broken == {("l7", "pktlb", "4 requests on one client connection are balanced one by one"),
                      ("l7", "pktlb", f"X-Forwarded-For carries the client ({CLIENT})"),
                      ("l7", "pktlb", "far fewer backend connections than requests (pooling)"),
                      ("nat", "pktlb", "4 requests on one client connection reach one backend")}


def test_the_tables_put_l7_beside_l4():
    data = report()
    data["invariants"] = invariants(data)
    text = render_text(data)
    assert "198.18.0.2 (proxy)" in text and "Connections, keep-alive and what the backend learns" in text
    assert "be1 be2 be1 be2" in text and "be2 be2 be2 be2" in text
    markdown = render_markdown(data)
    assert "| l7 | haproxy | 198.18.0.2 (proxy) | 198.18.1.10 | 0.009 / 0.004 | be1 be2 be1 be2 | 837 |" in markdown
    assert "| nat | pktlb | 198.18.1.10 (client) | - | 1.004 / 0.003 | be2 be2 be2 be2 | 2800 |" in markdown
    assert "![Backend connections per request" in markdown


def test_an_old_report_without_the_new_figures_still_renders():
    data = copy.deepcopy(REPORT)
    data["invariants"] = invariants(data)
    assert "n/a" in render_text(data)


def test_the_charts_include_l7(tmp_path):
    paths = write_charts(report(), tmp_path)
    assert (tmp_path / "l4_l7.png") in paths and (tmp_path / "l4_l7.png").read_bytes()[:4] == b"\x89PNG"


def test_l7_is_compared_with_pktlb_proxy_and_haproxy_and_needs_the_vip_on_the_lb():
    data = load_topology()
    assert mode_default(data, "l7", "compare_engines", None) == ["pktlb", "haproxy"]
    needs = mode_requirements(data, "l7", "pktlb", None)
    assert needs["lb"]["addresses"] == ["198.19.0.100/32 on lo"] and "guard" not in needs["lb"]
    assert "mode" not in needs  # an engine's per-mode section is not a role


def test_the_cli_accepts_l7_and_checks_the_l7_scheduler():
    runner = CliRunner()
    bad = runner.invoke(main, ["compare", "--modes", "nat,l7", "--l7-scheduler", "nope"])
    assert bad.exit_code == 2 and "--l7-scheduler" in bad.output
    assert "l7" in runner.invoke(main, ["compare", "--help"]).output


def test_haproxy_is_not_available_without_its_program():
    from pktlb.reports.compare.plan import unavailable

    data = load_topology()
    assert unavailable(data, "l7", "haproxy", has_binary=lambda name: "/usr/sbin/" + name) is None
    reason = unavailable(data, "l7", "haproxy", has_binary=lambda name: None)
    assert reason and "haproxy is not installed" in reason and "cannot do mode l7" in reason
    assert unavailable(data, "l7", "pktlb", has_binary=lambda name: None) is None  # pktlb proxy needs nothing
    assert "cannot do mode l7" in unavailable(data, "l7", "kernel")
