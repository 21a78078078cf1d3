"""`pktlb compare --modes nat,l7`: a short real run of one L4 mode beside the L7 proxies, and what it must show.

One run (module fixture): nat with the pktlb engine and the kernel, l7 with pktlb proxy and HAProxy,
3 backends, 2 s of load.  What tells L4 from L7 must come out of the measurements: backend
connections per request, the address the backend saw and the X-Forwarded-For it got, and how
4 requests on one kept-alive client connection spread.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from pktlb.lab.manage import existing_namespaces, lab_down
from tests.lab.conftest import PKTLB, need_root, unique_prefix

pytestmark = pytest.mark.lab

CLIENT = "198.18.1.10"
PROXY = "198.18.0.2"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    need_root()
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (make deps installs it)")
    prefix = unique_prefix()
    out = tmp_path_factory.mktemp("compare-l7")
    try:
        done = subprocess.run([PKTLB, "compare", "--modes", "nat,l7", "--backends", "3", "--duration", "2",
                               "--out", str(out), "--prefix", prefix, "--json",
                               "--fastpath", "off"],  # the L4 engines without their fast path: it has its own test
                              capture_output=True, text=True, timeout=300)
        leftovers = existing_namespaces(prefix)
    finally:
        lab_down(prefix)
    assert done.returncode == 0, done.stderr[-3000:]
    assert leftovers == []
    data = json.loads((out / "report.json").read_text())
    data["out_dir"] = out
    yield data


def runs(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["mode"], r["engine"]): r for r in report["runs"]}


def test_l7_runs_with_both_proxies_beside_the_l4_engines(report):
    assert set(runs(report)) == {("nat", "pktlb"), ("nat", "kernel"), ("l7", "pktlb"), ("l7", "haproxy")}
    for run in report["runs"]:
        assert run["available"] and run["errors"] == [], run["errors"]
    assert [c for c in report["invariants"] if not c["holds"]] == []


def test_backend_connections_per_request_tell_l4_from_l7(report):
    for (mode, _), run in runs(report).items():
        close = run["backend_connections"]["close"]
        assert close["responses"] == run["http"]["requests"] > 50
        if mode == "nat":
            assert 0.9 <= close["per_request"] <= 1.1, close
        else:
            assert close["per_request"] < 0.2, close  # pooled: far fewer than one per request
        assert run["backend_connections"]["keepalive"]["per_request"] < 0.2


def test_the_backend_learns_the_client_from_the_packet_at_l4_and_from_a_header_at_l7(report):
    for (mode, _), run in runs(report).items():
        learned = run["learned"]
        assert learned["client_address_visible"]
        if mode == "nat":
            assert learned["peer"] == CLIENT and learned["x_forwarded_for"] is None
        else:
            assert learned["peer"] == PROXY and learned["x_forwarded_for"] == CLIENT


def test_one_kept_alive_connection_reaches_one_backend_at_l4_and_several_at_l7(report):
    for (mode, _), run in runs(report).items():
        one = run["one_connection"]
        assert one["client_connections"] == 1 and len(one["backends"]) == 4
        assert one["distinct_backends"] == (1 if mode == "nat" else 3), one  # rr over 3 backends at L7


def test_keepalive_load_and_cpu_are_measured_for_every_engine_that_has_a_process(report):
    for (_, engine), run in runs(report).items():
        keep = run["http_keepalive"]
        assert keep["requests"] > 50 and keep["errors"] <= keep["requests"] // 100
        if engine != "kernel":
            assert run["lb"]["cpu_us_per_request"] > 0 and keep["cpu_us_per_request"] > 0


def test_the_report_has_the_l4_l7_table_and_chart(report):
    out = report["out_dir"]
    markdown = (out / "report.md").read_text()
    assert "## Connections, keep-alive and what the backend learns (L4 vs L7)" in markdown
    assert "| l7 | haproxy | 198.18.0.2 (proxy) | 198.18.1.10 |" in markdown
    assert (out / "l4_l7.png").read_bytes()[:4] == b"\x89PNG"
