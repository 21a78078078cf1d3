"""Parts of ``pktlb l7-report`` that need no lab: the client workloads against a local proxy, the rendering."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest

from pktlb.adapters.certs import make_lab_pki
from pktlb.reports.l7features import client
from pktlb.reports.l7features.render import markdown
from pktlb.reports.l7features.tls import tls_facts
from tests.unit.l7_support import run, running_proxy


@pytest.fixture(scope="module")
def pki():
    directory = tempfile.mkdtemp(prefix="pktlb-l7r-")
    yield make_lab_pki(Path(directory) / "tls", ["127.0.0.1"], ["127.0.0.1"])
    shutil.rmtree(directory, ignore_errors=True)


def tls_args(port: int, pattern: str, ca: Path) -> argparse.Namespace:
    return argparse.Namespace(host="127.0.0.1", port=port, server_name=None, cafile=str(ca), tls_version=None,
                              pattern=pattern, path="/", requests=12, concurrency=3)


def test_tls_patterns_do_the_handshakes_they_say(pki):
    tls = f'  [service.l7.tls]\n  cert = "{pki.vip_cert}"\n  key = "{pki.vip_key}"\n'

    async def scenario():
        async with running_proxy(("be1",), l7=tls) as p:
            counters = p.server.stats.service("web")
            seen = {}
            for pattern in ("new", "resumed", "keepalive"):
                before = (counters.tls_full, counters.tls_resumed)
                result = await asyncio.to_thread(client.tls_workload, tls_args(p.port, pattern, pki.ca))
                assert result["requests"] == 12 and result["errors"] == 0
                seen[pattern] = (counters.tls_full - before[0], counters.tls_resumed - before[1],
                                 result["resumed_handshakes"])
            return seen
    seen = run(scenario())
    assert seen["new"] == (12, 0, 0)
    assert seen["resumed"] == (3, 9, 9)  # each of 3 workers: one full handshake, then resumed ones
    assert seen["keepalive"] == (3, 0, 0)  # one connection per worker


def test_load_and_cookies_and_sessions_against_a_cookie_proxy():
    async def scenario():
        async with running_proxy(("be1", "be2"), scheduler="rr", l7="  [service.l7.cookie]\n") as p:
            url = f"http://127.0.0.1:{p.port}/"
            load = await asyncio.to_thread(client.load, argparse.Namespace(
                url=url, requests=10, concurrency=2, source=None, keepalive=True, interval=0.0))
            moving = await asyncio.to_thread(client.sessions, argparse.Namespace(
                url=url, addresses="127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4", cookie=True))
            again = await asyncio.to_thread(client.cookies, argparse.Namespace(
                url=url, cookies="SRVID=be1,SRVID=be2"))
            return load, moving, again
    load, moving, again = run(scenario())
    assert load["statuses"] == {"200": 10}
    assert (moving["sessions"], moving["moved"]) == (2, 0)
    assert [r["backend"] for r in again["rows"]] == ["be1", "be2"]


def test_percentiles_and_facts():
    assert client.percentiles([]) == {"p50": None, "p90": None, "p99": None, "mean": None}
    assert client.percentiles([1.0, 2.0, 3.0, 4.0])["p50"] == 3.0
    rows = [{"layer": "L7", "engine": "pktlb", "pattern": p, "lb_cpu_us_per_request": v}
            for p, v in (("plain", 100.0), ("new", 400.0), ("resumed", 250.0), ("keepalive", 120.0))]
    facts = tls_facts(rows)["L7 pktlb"]
    assert facts == {"new_over_plain": 4.0, "resumed_over_plain": 2.5, "new_over_keepalive": 3.33,
                     "resumed_over_new": 0.62}


def test_markdown_renders_every_section():
    lat = {"p50": 1.0, "p90": 2.0, "p99": 3.0, "mean": 1.5}
    report = {
        "tls": {"rows": [{"layer": "L7", "engine": "pktlb", "pattern": "new", "where_tls_ends": "LB", "requests": 10,
                          "errors": 0, "requests_per_s": 50.0, "latency_ms": lat, "lb_cpu_us_per_request": 400.0,
                          "handshakes": {"full": 10, "resumed": 0}}], "facts": {}},
        "persistence": {"rows": [{"layer": "L4 dsr", "engine": "pktlb", "persistence": "sh", "sessions": 4,
                                  "moved": 3, "kept": 1, "moved_share": 0.75,
                                  "backend_down": {"backend": "be1", "sessions_on_it": 2, "moved": 2,
                                                   "others_kept": 2, "failed": 0}}]},
        "cache": {"rows": [{"engine": "pktlb", "cache": True, "requests": 100, "urls": 5, "backend_requests": 5,
                            "backend_requests_saved": 95, "hit_ratio": 0.95, "errors": 0, "hit_latency_ms": lat,
                            "miss_latency_ms": lat}]},
        "filter": {"rows": [{"engine": "pktlb", "rate": 20.0, "burst": 20,
                             "flood": {"requests": 100, "statuses": {"200": 25, "429": 75}, "ok_latency_ms": lat},
                             "paced": {"requests": 10, "statuses": {"200": 10}, "ok_latency_ms": lat},
                             "backend_requests": 35, "backends_saw_only_admitted": True}]},
        "errors": {}, "seconds": 1.0}
    text = markdown(report)
    for expected in ("| L7    | pktlb  | new", "3 (75%)", "2 moved (new cookie)", "| 95 ", "200: 25, 429: 75"):
        assert expected in text, expected


def test_cli_refuses_unknown_sections_and_engines_by_name():
    from click.testing import CliRunner

    from pktlb.cli import main
    result = CliRunner().invoke(main, ["l7-report", "--sections", "tls,bogus"])
    assert result.exit_code == 2 and "bogus: expected some of tls, persistence, cache, filter" in result.output
    result = CliRunner().invoke(main, ["l7-report", "--engines", "nginx"])
    assert result.exit_code == 2 and "nginx: expected some of pktlb, haproxy" in result.output
    assert CliRunner().invoke(main, ["l7-report", "--help"]).exit_code == 0


def test_write_makes_the_report_files_and_the_tls_chart(tmp_path):
    from pktlb.reports.l7features.render import write
    rows = [{"layer": layer, "engine": engine, "pattern": pattern, "where_tls_ends": "LB", "requests": 10,
             "errors": 0, "requests_per_s": 1.0, "latency_ms": {"p50": 1.0, "p99": 2.0},
             "lb_cpu_us_per_request": cpu}
            for layer, engine in (("L7", "pktlb"), ("L4 dsr", "pktlb"))
            for pattern, cpu in (("plain", 100.0), ("new", 300.0), ("resumed", 200.0), ("keepalive", 50.0))]
    paths = write({"tls": {"rows": rows, "facts": tls_facts(rows)}, "errors": {}}, tmp_path)
    assert set(paths) == {"markdown", "json", "tls_chart"}
    assert (tmp_path / "tls_cpu.png").read_bytes()[:4] == b"\x89PNG"
