"""The lab's plan, steps, rulesets and engine config, checked without root (nothing is created)."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from pktlb.cli.lab_cmd import lab
from pktlb.core.config import MODES
from pktlb.core.packet.addr import in_network, ip_to_int
from pktlb.lab.addressing import mac_for_ip
from pktlb.lab.builder import build_steps, render_dry_run
from pktlb.lab.engine_config import checked_engine_config
from pktlb.lab.netns import namespaces
from pktlb.lab.nftables import guard_ruleset, kernel_lb_ruleset
from pktlb.lab.paths import LabPaths
from pktlb.lab.topology import LabError, LabOptions, load_topology, make_plan, node_name_pattern

DATA = load_topology()


def plan_for(mode: str, engine: str = "none", *, ipip: bool = False, **kw):
    options = LabOptions(mode=mode, engine=engine, prefix="pktlb-u-", **kw)
    return make_plan(options, DATA, statedir="/run/pktlb/pktlb-u-", python="/venv/bin/python",
                     pktlb="/venv/bin/pktlb", kernel_has_ipip=ipip, has_binary=lambda name: True)


def all_plans():
    for mode in MODES:
        for engine in ("pktlb", "none"):
            yield plan_for(mode, engine)
    for mode in ("nat", "fullnat", "dsr"):
        yield plan_for(mode, "kernel")


def test_every_address_is_in_the_benchmark_range_and_every_mac_is_derived():
    for plan in all_plans():
        for node in plan.nodes:
            for iface in node.interfaces:
                for cidr in iface.addresses:
                    assert in_network(ip_to_int(cidr.split("/")[0]), ip_to_int("198.18.0.0"), 15), cidr
                if iface.segment:
                    assert iface.mac == mac_for_ip(iface.addresses[0].split("/")[0])


NAMESPACED = re.compile(r"^(ip -n pktlb-u-|ip netns (add|exec) pktlb-u-|bridge -n pktlb-u-)")


def test_no_step_touches_the_root_namespace():
    for plan in all_plans():
        for step in build_steps(plan):
            assert NAMESPACED.match(step.command()), step.command()


def test_interface_names_fit_the_kernel_limit_at_the_largest_lab():
    plan = plan_for("tunnel", backends=64, clients=16)
    names = [i.port or i.ifname for n in plan.nodes for i in n.interfaces]
    assert max(len(name) for name in names) <= 15
    assert [n.name for n in plan.by_role("client")][:3] == ["client", "client2", "client3"]
    assert plan.node("be64").address == "198.18.0.74"


def test_modes_set_up_backends_as_they_need():
    nat, fullnat, dsr = plan_for("nat").node("be1"), plan_for("fullnat").node("be1"), plan_for("dsr").node("be2")
    assert [(r.dst, r.via) for r in nat.routes] == [("default", "198.18.0.2")]
    assert [(r.dst, r.via) for r in fullnat.routes] == [("default", "198.18.0.1")]
    assert "198.18.0.3/24" in plan_for("fullnat").node("lb").interface("eth0").addresses
    assert dsr.interface("lo").addresses == ["198.19.0.100/32"]
    assert dsr.sysctls["net.ipv4.conf.all.arp_ignore"] == 1 and dsr.sysctls["net.ipv4.conf.eth0.arp_announce"] == 2
    assert plan_for("dsr", "pktlb").node("lb").sysctls["net.ipv4.ip_forward"] == 0
    assert all("198.19.0.100" not in c for i in plan_for("dsr").node("lb").interfaces for c in i.addresses)


def test_tunnel_uses_the_kernel_ipip_device_where_there_is_one_else_pktlb_decap():
    user = plan_for("tunnel")
    assert user.decap_kind == "user"
    be1 = user.node("be1")
    assert be1.interface("pktlbtun0").kind == "tun" and be1.sysctls["net.ipv4.conf.pktlbtun0.rp_filter"] == 0
    decaps = [s for s in user.services if s.name.endswith("/decap")]
    assert len(decaps) == 3 and "--address" in decaps[0].argv and "198.18.0.11" in decaps[0].argv
    assert "tso off gso off" in user.node("client").offloads["eth0"]

    kernel = plan_for("tunnel", ipip=True)
    assert kernel.decap_kind == "kernel"
    assert not [s for s in kernel.services if s.name.endswith("/decap")]
    tunl = [s for s in build_steps(kernel) if "type ipip" in s.command()]
    assert len(tunl) == 3 and tunl[0].ok_codes == (17,)  # tunl0 may already exist: fine
    with pytest.raises(LabError, match="no ipip"):
        plan_for("tunnel", decap="kernel")


def test_kernel_engine_is_refused_with_a_reason_for_tunnel():
    with pytest.raises(LabError, match="cannot do mode tunnel.*IP-in-IP"):
        plan_for("tunnel", "kernel")


def test_bad_options_say_what_is_expected():
    with pytest.raises(LabError, match="1 to 64"):
        plan_for("nat", backends=65)
    with pytest.raises(LabError, match="--prefix"):
        make_plan(LabOptions(mode="nat", prefix="bad/prefix"), DATA, statedir="/x", python="p", pktlb="p",
                  kernel_has_ipip=False)


def test_engine_config_is_valid_and_matches_the_lab():
    for mode in MODES:
        plan = plan_for(mode, "pktlb", scheduler="rr")
        text, config = checked_engine_config(plan)
        service = config.services[0]
        assert (service.vip, service.port, service.mode, service.scheduler) == ("198.19.0.100", 80, mode, "rr")
        assert [b.address for b in service.backends] == ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
        # No MAC and no gateway: the engine finds next hops in the LB's routes and neighbours (issue 14).
        assert service.backends[0].mac is None and config.lb.mac is None
        assert config.lb.gateway is None and config.lb.control_socket.startswith(plan.statedir)
        assert (service.snat_address == "198.18.0.3") == (mode == "fullnat")
    engine = [s for s in plan_for("nat", "pktlb").services if s.name == "lb/engine"]
    assert engine[0].argv == ["/venv/bin/pktlb", "run", "-c", "/run/pktlb/pktlb-u-/pktlb.toml"]


def test_rulesets_guard_the_vip_and_snat_ports_and_spread_over_backends():
    guard = guard_ruleset("eth0", "198.19.0.0/24", "198.18.0.3", "20000-59999")
    assert 'hook ingress device "eth0"' in guard and "ip daddr 198.19.0.0/24 counter drop" in guard
    assert "ip daddr 198.18.0.3 tcp dport 20000-59999" in guard and "udp dport 20000-59999" in guard
    nat = kernel_lb_ruleset("198.19.0.100", 80, ["198.18.0.11", "198.18.0.12"], "maglev", None, "20000-59999")
    assert "jhash ip saddr . tcp sport mod 2 map { 0 : 198.18.0.11, 1 : 198.18.0.12 }" in nat and "snat" not in nat
    rr = kernel_lb_ruleset("198.19.0.100", 80, ["198.18.0.11"], "rr", "198.18.0.3", "20000-59999")
    assert "numgen inc mod 1" in rr and "snat to 198.18.0.3:20000-59999" in rr
    kernel_steps = [s.command() for s in build_steps(plan_for("nat", "kernel"))]
    assert any("pktlb_kernel_lb" in c for c in kernel_steps) and not any("pktlb_guard" in c for c in kernel_steps)
    assert plan_for("nat", "kernel").node("lb").sysctls["net.ipv4.ip_forward"] == 1


def test_leftover_pattern_matches_only_lab_node_names():
    pattern = node_name_pattern("pktlb-")
    assert all(pattern.match(f"pktlb-{n}") for n in ("sw", "router", "lb", "client", "client3", "be1", "be12"))
    assert not pattern.match("pktlb-t1a2b3c-be1") and not pattern.match("pktlb-other")


def test_dry_run_prints_every_command_and_creates_nothing():
    prefix = "pktlb-dry-"
    result = CliRunner().invoke(lab, ["up", "--mode", "tunnel", "--prefix", prefix, "--dry-run"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"ip netns add {prefix}lb" in out and f"ip -n {prefix}sw link add s-be1 type veth" in out
    assert "ethtool -K eth0 tx off tso off gso off" in out and "pktlb decap" in out
    assert "nft -f -" not in out  # the pktlb engine installs its own guard (issue 14); the lab applies none
    none = CliRunner().invoke(lab, ["up", "--mode", "tunnel", "--prefix", prefix, "--dry-run", "--engine", "none"])
    assert "nft -f -" in none.output  # without an engine the lab still guards the LB's kernel itself
    assert f"bridge -n {prefix}sw fdb replace 02:00:c6:12:00:0b dev s-be1 master static" in out
    assert not namespaces(prefix)
    assert not LabPaths(prefix).statedir.exists()


def test_dry_run_refuses_kernel_engine_for_tunnel():
    result = CliRunner().invoke(lab, ["up", "--mode", "tunnel", "--engine", "kernel", "--dry-run"])
    assert result.exit_code != 0 and "cannot do mode tunnel" in result.output


def test_render_lists_services_and_config():
    plan = plan_for("nat", "pktlb")
    text = render_dry_run(plan, build_steps(plan), checked_engine_config(plan)[0])
    assert "pktlb.lab.httpd --name be3 --port 80" in text and "#   mode = \"nat\"" in text


def test_fastpath_option_is_checked_and_written_into_the_engine_config(monkeypatch):
    from pktlb.lab import fastpath
    from pktlb.lab.engine_config import engine_config_data

    assert "fastpath" not in engine_config_data(plan_for("nat", "pktlb"))["lb"]  # off: the key is left out
    monkeypatch.setattr(fastpath, "fastpath_hooks", lambda: ())
    with pytest.raises(LabError, match="no kernel fast path"):
        plan_for("nat", "pktlb", fastpath="xdp")
    monkeypatch.setattr(fastpath, "fastpath_hooks", lambda: ("xdp", "tc"))
    with pytest.raises(LabError, match="only the pktlb packet engine"):
        plan_for("nat", "kernel", fastpath="xdp")
    with pytest.raises(LabError, match="only the pktlb packet engine"):
        plan_for("l7", "pktlb", fastpath="xdp")  # pktlb proxy has none
    lb = engine_config_data(plan_for("dsr", "pktlb", fastpath="tc"))["lb"]
    assert lb["fastpath"] == "tc" and lb["gateway"] == "198.18.0.1"  # its replies' one next hop: the router
    assert "gateway" not in engine_config_data(plan_for("nat", "pktlb"))["lb"]  # the engine finds it itself
    # XDP_TX out of the LB's veth reaches the switch only if the switch port runs XDP too; tc needs nothing.
    xdp = [s.command() for s in build_steps(plan_for("nat", "pktlb", fastpath="xdp")) if s.kind == "xdp"]
    assert len(xdp) == 1 and "ip -force -n pktlb-u-sw link set dev s-lb xdp obj" in xdp[0] and "pass.bpf.o" in xdp[0]
    assert not [s for s in build_steps(plan_for("nat", "pktlb", fastpath="tc")) if s.kind == "xdp"]
