"""L7's promises, shown in the lab (issue 20): TLS at the proxy, the cookie keeping a client whose address
changes, the cache answering repeated URLs, a flooding client held back while others are served.

Each test builds its own lab (``lab_factory``: unique prefix, always removed) and uses the same pieces
as ``pktlb l7-report`` (``pktlb.reports.l7features``) with small, bounded workloads.
"""

from __future__ import annotations

import json
import shutil

import pytest

from pktlb.reports.l7features.labs import (
    TLS_PORT,
    add_l4_tls_service,
    attach_lab,
    l7_service,
    proxy_data,
    tls_table,
)
from pktlb.reports.l7features.sections import cache_rows, filter_rows, persistence_l4, persistence_l7
from pktlb.reports.l7features.servers import Proxy, client_json
from pktlb.reports.l7features.tls import measure, plaintext_on_the_wire

pytestmark = [pytest.mark.lab, pytest.mark.timeout(240)]


def test_l7_lab_tls_cookie_cache_and_filter_with_pktlb_proxy(lab_factory):
    handle = lab_factory("l7", engine="none", scheduler="rr")
    lab = attach_lab(handle.prefix, handle.plan)
    try:
        # TLS terminated at the proxy: HTTPS from the client, plain HTTP to the backends, forwarding headers say https.
        data = proxy_data(l7_service(lab, "web-tls", TLS_PORT, l7={"tls": tls_table(lab)}))
        with Proxy("pktlb", lab.ns("lb"), lab.workdir, "tls", data) as proxy:
            done = handle.run("client", ["curl", "-sS", "--max-time", "5", "--cacert", str(lab.pki.ca),
                                         f"https://{lab.vip}/"], timeout=10)
            assert done.returncode == 0, done.stderr
            assert '"x_forwarded_proto": "https"' in done.stdout
            plain = handle.run("client", ["curl", "-s", "--max-time", "5", f"http://{lab.vip}:{TLS_PORT}/"], timeout=10)
            assert "plain HTTP to the TLS port" in plain.stdout
            for pattern, full, resumed in (("new", 20, 0), ("resumed", 2, 18)):
                row = measure(lab, proxy.pid, pattern, 20, 2, TLS_PORT, proxy.stats, "web-tls")
                assert row["requests"] == 20 and row["errors"] == 0
                assert (row["handshakes"]["full"], row["handshakes"]["resumed"]) == (full, resumed)
            rejects = proxy.stats()["totals"]["rejects"]
            assert rejects == {"plain_http_on_tls": 1}
            wire = plaintext_on_the_wire(lab, TLS_PORT, 5, "test")  # behind the proxy, HTTP crosses the LB in clear
            assert wire["requests"] == 5 and wire["frames_with_a_readable_request"] == 5

        # Persistence: 12 sessions whose client address changes between two requests.
        sh, cookie = persistence_l7(lab, "pktlb", 12)
        assert sh["moved"] > 0  # source hashing follows the address, so some sessions move ...
        assert cookie["moved"] == 0 and cookie["kept"] == 12  # ... the cookie keeps every one
        for key in ("backend_down", "backend_failed"):  # by the operator; by a dead link the health checks found
            down = cookie[key]
            assert down["failed"] == 0 and down["moved"] == down["sessions_on_it"] > 0, down
            assert down["others_kept"] == 12 - down["sessions_on_it"]

        # Cache: 100 requests over 5 URLs reach the backends 5 times.
        off, on = cache_rows(lab, "pktlb", 100, 5)
        assert (off["backend_requests"], on["backend_requests"], on["errors"]) == (100, 5, 0)

        # Filter: one address floods, another is paced at half the rate: only the flood is refused,
        # and the backends serve exactly the requests that were let through.
        result = filter_rows(lab, "pktlb", flood=300, paced=15, rate=20.0)
        assert result["paced"]["statuses"] == {"200": 15}
        flood = result["flood"]
        # The flood gets the burst and then the rate, however long it took (the machine may be busy).
        assert flood["statuses"].get("429", 0) > 0
        assert flood["statuses"].get("200", 0) <= 20 + 20.0 * flood["seconds"] + 1
        assert result["backends_saw_only_admitted"]
        assert set(result["proxy_rejects"]) == {"rate_limited"}
    finally:
        lab.stop_processes()


@pytest.mark.skipif(not shutil.which("haproxy"), reason="HAProxy (Debian package haproxy) is the L7 baseline")
def test_haproxy_baseline_does_the_same_jobs(lab_factory):
    handle = lab_factory("l7", engine="none", scheduler="rr")
    lab = attach_lab(handle.prefix, handle.plan)
    try:
        data = proxy_data(l7_service(lab, "web-tls", TLS_PORT, l7={"tls": tls_table(lab)}))
        with Proxy("haproxy", lab.ns("lb"), lab.workdir, "tls", data):
            done = handle.run("client", ["curl", "-sS", "--max-time", "5", "--cacert", str(lab.pki.ca),
                                         f"https://{lab.vip}/"], timeout=10)
            assert done.returncode == 0 and '"x_forwarded_proto": "https"' in done.stdout, done.stderr
        _, cookie = persistence_l7(lab, "haproxy", 8)
        assert cookie["moved"] == 0
        off, on = cache_rows(lab, "haproxy", 60, 3)
        assert (off["backend_requests"], on["backend_requests"]) == (60, 3)
        result = filter_rows(lab, "haproxy", flood=300, paced=15, rate=20.0)
        assert result["paced"]["statuses"] == {"200": 15} and result["backends_saw_only_admitted"]
    finally:
        lab.stop_processes()


def test_l4_sh_moves_a_client_whose_address_changes_and_tls_passes_through(lab_factory):
    handle = lab_factory("dsr", engine="pktlb", scheduler="sh")
    lab = attach_lab(handle.prefix, handle.plan)
    try:
        row = persistence_l4(lab, 12)
        assert row["moved"] > 0 and row["moved"] + row["kept"] == 12
        # TLS the backends terminate themselves (the VIP's certificate is theirs): the LB forwards ciphertext.
        lab.https_backends(TLS_PORT, lab.pki.vip_cert, lab.pki.vip_key)
        add_l4_tls_service(lab)
        result = client_json(lab.ns("client"), ["tls", "--host", lab.vip, "--port", str(TLS_PORT), "--pattern", "new",
                                                "--requests", "10", "--concurrency", "2", "--cafile", str(lab.pki.ca)])
        assert (result["requests"], result["errors"]) == (10, 0)
        wire = plaintext_on_the_wire(lab, TLS_PORT, 5, "test")
        assert wire["frames"] > 0 and wire["frames_with_a_readable_request"] == 0  # only ciphertext crosses the LB
    finally:
        lab.stop_processes()


@pytest.mark.parametrize("mode, engine", [
    ("l7", "pktlb"), ("nat", "pktlb"),
    pytest.param("l7", "haproxy", marks=pytest.mark.skipif(not shutil.which("haproxy"), reason="no haproxy"))])
def test_lab_up_tls(lab_factory, mode, engine):
    """``lab up --tls``: HTTPS on the VIP with the lab's own CA; at L7 the proxy ends it, at L4 the backends do."""
    handle = lab_factory(mode, engine=engine, tls=True, scheduler="rr")
    ca = handle.paths.tls_dir / "ca.pem"
    assert ca.exists() and not list(handle.paths.tls_dir.glob("ca*.key"))  # no CA key kept
    seen = set()
    for _ in range(6):
        done = handle.run("client", ["curl", "-sS", "--max-time", "5", "--cacert", str(ca),
                                     f"https://{handle.vip}/"], timeout=10)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        seen.add(answer["backend"])
        if mode == "l7":
            assert answer["x_forwarded_proto"] == "https" and answer["client"] == "198.18.0.2"
        else:
            assert answer["server"].endswith(":443") and answer["client"] == "198.18.1.10"  # nat: the client itself
    assert len(seen) > 1
    untrusted = handle.run("client", ["curl", "-sS", "--max-time", "5", f"https://{handle.vip}/"], timeout=10)
    assert untrusted.returncode != 0  # the lab CA is trusted nowhere else
