"""The l7 lab layout without root: its plan, its proxy config, HAProxy's rendering, and HAProxy's stats parser."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pktlb.adapters.haproxy_stats import HaproxyStatsError, parse_show_stat, summarize
from pktlb.core.config import parse_config
from pktlb.lab.builder import build_steps
from pktlb.lab.l7 import API_HOST, STATIC_PREFIX, engine_socket, l7_files
from pktlb.lab.manage import lab_files, tier_build
from pktlb.lab.topology import LabError, LabOptions, engine_section, load_topology, make_plan, mode_default

DATA = load_topology()
STATEDIR = "/run/pktlb/pktlb-u-"


def plan_for(engine: str, mode: str = "l7", *, installed: bool = True, **kw):
    options = LabOptions(mode=mode, engine=engine, prefix="pktlb-u-", scheduler=kw.pop("scheduler", "rr"), **kw)
    return make_plan(options, DATA, statedir=STATEDIR, python="/venv/bin/python", pktlb="/venv/bin/pktlb",
                     kernel_has_ipip=False, has_binary=lambda name: installed)


def test_the_proxy_owns_the_vip_and_the_backends_keep_their_own_route():
    plan = plan_for("pktlb")
    lb = plan.node("lb")
    assert plan.layer == 7 and plan.engine_service == "proxy"
    assert "198.19.0.100/32" in lb.interface("lo").addresses
    assert not lb.guard and not lb.kernel_lb and lb.sysctls["net.ipv4.ip_forward"] == 0
    for backend in plan.by_role("backend"):
        assert [(r.dst, r.via) for r in backend.routes] == [("default", "198.18.0.1")]
        assert backend.interface("lo").addresses == []  # no VIP on the backends (that is DSR)
    argv = next(s.argv for s in plan.services if s.name == "lb/proxy")
    assert argv == ["/venv/bin/pktlb", "proxy", "-c", f"{STATEDIR}/pktlb.toml"]
    assert not any(s.name == "lb/engine" for s in plan.services)


def test_haproxy_runs_in_the_lb_namespace_from_the_lab_files():
    plan = plan_for("haproxy")
    service = next(s for s in plan.services if s.name == "lb/haproxy")
    assert service.namespace == "pktlb-u-lb"
    assert service.argv == ["haproxy", "-db", "-f", f"{STATEDIR}/haproxy.cfg"]
    assert engine_socket(plan) == f"{STATEDIR}/haproxy.sock"
    files = lab_files(plan)
    assert set(files) == {"pktlb.toml", "haproxy.cfg"}
    assert f"stats socket {STATEDIR}/haproxy.sock" in files["haproxy.cfg"]
    assert "bind 198.19.0.100:80" in files["haproxy.cfg"]


def test_no_engine_leaves_the_vip_on_the_lb_with_nothing_listening():
    plan = plan_for("none")
    assert plan.engine_service is None and engine_socket(plan) is None
    assert not any(s.node == "lb" for s in plan.services)
    assert not plan.node("lb").guard


def test_engines_are_refused_where_they_cannot_work():
    with pytest.raises(LabError, match="HAProxy is the L7 baseline"):
        plan_for("haproxy", mode="nat", scheduler="maglev")
    with pytest.raises(LabError, match="cannot do mode l7"):
        plan_for("kernel")
    with pytest.raises(LabError, match="needs haproxy, which is not installed"):
        plan_for("haproxy", installed=False)
    with pytest.raises(LabError, match="LB tier is built for the L4 modes"):
        tier_build(plan_for("pktlb", lbs=2))


def test_the_l4_labs_are_unchanged_by_the_l7_sections():
    plan = plan_for("pktlb", mode="nat", scheduler="maglev")
    assert plan.layer == 4 and plan.engine_service == "engine"
    assert not plan.node("lb").guard  # the engine installs its own guard (issue 14.3)
    assert "198.19.0.100/32" not in plan.node("lb").interface("lo").addresses
    assert [s.name for s in plan.services if s.node == "lb"] == ["lb/engine"]
    assert "mode" not in engine_section(DATA, "pktlb", "nat")
    assert mode_default(DATA, "nat", "scheduler", "maglev") == "maglev"
    assert mode_default(DATA, "l7", "scheduler", "maglev") == "rr"


def test_the_proxy_config_routes_by_host_and_path_over_the_backends_addresses():
    files, config = l7_files(plan_for("pktlb", backends=3))
    (svc,) = config.services
    assert svc.mode == "l7" and svc.vip == "198.19.0.100" and svc.scheduler == "rr"
    assert [b.address for b in svc.backends] == ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
    routes = {r.name: r for r in svc.l7.routes}
    assert routes["api"].host == API_HOST and routes["api"].backends == ("be1",)
    assert routes["static"].path_prefix == STATIC_PREFIX and routes["static"].backends == ("be3",)
    assert routes["default"].backends is None
    assert parse_config(files["pktlb.toml"]) == config
    assert config.lb.control_socket == f"{STATEDIR}/pktlb.sock"


def test_no_step_of_the_l7_lab_touches_the_root_namespace():
    for engine in ("pktlb", "haproxy", "none"):
        for step in build_steps(plan_for(engine)):
            command = step.command()
            assert command.startswith(("ip -n pktlb-u-", "ip netns add pktlb-u-", "ip netns exec pktlb-u-",
                                       "bridge -n pktlb-u-")), command


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_rendered_config(tmp_path: Path):
    text = lab_files(plan_for("haproxy"))["haproxy.cfg"].replace(f"{STATEDIR}/haproxy.sock", str(tmp_path / "s"))
    (tmp_path / "haproxy.cfg").write_text(text)
    done = subprocess.run(["haproxy", "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True,
                          timeout=20)
    assert done.returncode == 0, done.stdout + done.stderr


SHOW_STAT = """# pxname,svname,scur,stot,bin,bout,dreq,ereq,econ,eresp,status,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,req_tot,srv_abrt,check_status,addr,algo,connect,reuse,
web,FRONTEND,1,40,100,200,0,2,,,OPEN,0,36,0,1,1,38,,,,,,,
web__api,be1,0,5,0,0,,,0,0,UP,0,5,0,0,0,5,0,L7OK,198.18.0.11:80,,1,4,
web__api,BACKEND,0,5,0,0,0,,0,0,UP,0,5,0,0,0,5,0,,,roundrobin,1,4,
web__default,be1,0,10,0,0,,,0,0,UP,0,10,0,0,0,10,0,L7OK,198.18.0.11:80,,2,8,
web__default,be2,0,21,0,0,,,3,0,DOWN,0,20,0,0,1,21,0,L4CON,198.18.0.12:80,,3,18,
web__default,BACKEND,0,31,0,0,0,,3,0,UP,0,30,0,0,1,31,0,,,roundrobin,5,26,
"""


def test_haproxy_show_stat_is_summed_per_backend_over_the_routes():
    data = summarize(parse_show_stat(SHOW_STAT), pid=7)
    assert data["kind"] == "haproxy" and data["pid"] == 7
    (svc,) = data["services"]
    assert svc["name"] == "web" and svc["counters"]["requests"] == 38
    assert svc["counters"]["rejects"]["bad_request"] == 2
    assert [r["name"] for r in svc["routes"]] == ["api", "default"]
    backends = {b["name"]: b for b in svc["backends"]}
    assert backends["be1"]["requests"] == 15 and backends["be1"]["connections_opened"] == 3
    assert backends["be1"]["reused"] == 12 and backends["be1"]["state"] == "up"
    assert backends["be1"]["address"] == "198.18.0.11" and backends["be1"]["port"] == 80
    assert backends["be2"]["state"] == "down" and backends["be2"]["failures"] == {"connect_error": 3}
    assert backends["be2"]["responses"]["5xx"] == 1
    assert data["totals"]["backend_connections_opened"] == 6


def test_a_stats_answer_that_is_not_csv_is_a_clear_error():
    with pytest.raises(HaproxyStatsError, match="not a `show stat` answer"):
        parse_show_stat("Unknown command\n")


def test_lab_up_dry_run_in_mode_l7_uses_rr_and_shows_both_files():
    from click.testing import CliRunner

    from pktlb.cli.lab_cmd import lab

    result = CliRunner().invoke(lab, ["up", "--mode", "l7", "--engine", "haproxy", "--prefix", "pktlb-dry7-",
                                      "--dry-run"])
    assert result.exit_code == 0, result.output
    assert '#   scheduler = "rr"' in result.output and "#   # haproxy.cfg, rendered from it:" in result.output
    assert "ip netns exec pktlb-dry7-lb haproxy -db -f" in result.output
    assert "198.19.0.100/32 dev lo" in result.output
    refused = CliRunner().invoke(lab, ["up", "--mode", "nat", "--engine", "haproxy", "--prefix", "pktlb-dry7-",
                                       "--dry-run"])
    assert refused.exit_code == 1 and "HAProxy is the L7 baseline" in refused.output


def _lb_facts(mode: str, vip_on_lo: bool):
    from pktlb.lab.facts import Link, NodeFacts

    lo = Link("lo", 65536, None, True, ["127.0.0.1/8"] + (["198.19.0.100/32"] if vip_on_lo else []), "loopback")
    eth0 = Link("eth0", 1500, "02:00:c6:12:00:02", True, ["198.18.0.2/24"], "veth")
    return NodeFacts("lb", "lb", "pktlb-u-lb", mode, "pktlb", "198.19.0.100", "198.19.0.0/24",
                     links={"lo": lo, "eth0": eth0})


def test_doctor_wants_the_vip_on_the_proxy_in_mode_l7_and_nowhere_on_an_l4_lb():
    from pktlb.lab.doctor import REGISTRY

    def verdicts(node):
        return {f.check: f.level for cls in REGISTRY.values() if cls().applies(node) for f in cls().run(node)}

    assert verdicts(_lb_facts("l7", True))["proxy-vip"] == "ok"
    assert verdicts(_lb_facts("l7", False))["proxy-vip"] == "fail"
    assert "stray-vip" not in verdicts(_lb_facts("l7", True)) and "lb-guard" not in verdicts(_lb_facts("l7", True))
    assert verdicts(_lb_facts("nat", True))["stray-vip"] == "fail" and "proxy-vip" not in verdicts(_lb_facts("nat", False))
