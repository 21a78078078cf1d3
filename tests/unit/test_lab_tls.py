"""``pktlb lab up --tls``: what the plan and the configs get (no root: nothing is built)."""

from __future__ import annotations

import pytest

from pktlb.core.config import parse_config
from pktlb.lab.engine_config import engine_config_text
from pktlb.lab.l7 import l7_files
from pktlb.lab.manage import plan_lab
from pktlb.lab.topology import LabError, LabOptions


def test_l4_tls_backends_serve_https_and_the_engine_forwards_443():
    plan = plan_lab(LabOptions(mode="dsr", tls=True, prefix="pktlb-tlsplan-"))
    https = [s for s in plan.services if s.name.endswith("/httpsd")]
    assert [s.node for s in https] == ["be1", "be2", "be3"]
    argv = https[0].argv
    assert argv[argv.index("--port") + 1] == "443" and argv[argv.index("--tls-cert") + 1].endswith("/tls/vip.pem")
    config = parse_config(engine_config_text(plan))
    tls = next(s for s in config.services if s.name == "web-tls")
    assert (tls.port, tls.mode, [b.port for b in tls.backends]) == (443, "dsr", [443, 443, 443])
    assert tls.health.checks == ("tcp",)


def test_l7_tls_the_proxy_ends_it_and_haproxy_renders_it():
    plan = plan_lab(LabOptions(mode="l7", engine="haproxy", tls=True, scheduler="rr", prefix="pktlb-tlsplan-"))
    assert not [s for s in plan.services if s.name.endswith("/httpsd")]  # backends stay plain HTTP
    files, config = l7_files(plan)
    tls = next(s for s in config.services if s.name == "web-tls")
    assert tls.port == 443 and tls.l7.tls.cert.endswith("/tls/vip.pem") and tls.l7.routes == config.services[0].l7.routes
    assert f"bind 198.19.0.100:443 ssl crt {tls.l7.tls.cert}" in files["haproxy.cfg"]


def test_without_tls_nothing_changes():
    plan = plan_lab(LabOptions(mode="dsr", prefix="pktlb-tlsplan-"))
    assert not [s for s in plan.services if s.name.endswith("/httpsd")]
    assert [s.name for s in parse_config(engine_config_text(plan)).services] == ["web", "iperf"]


def test_tls_is_refused_where_it_cannot_work():
    with pytest.raises(LabError, match="--tls works with"):
        plan_lab(LabOptions(mode="nat", engine="kernel", tls=True, prefix="pktlb-tlsplan-"))
