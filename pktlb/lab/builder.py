"""Turns a lab plan into ordered build steps (namespaces, bridges, veths, addresses, routes,
sysctls, offloads, static FDB entries, nftables) that `lab up` applies and `--dry-run` prints."""

from __future__ import annotations

import shlex

from pktlb.core.rewrite.registry import traits_of
from pktlb.lab import steps as st
from pktlb.lab.fastpath import pass_object
from pktlb.lab.netns import Namespace
from pktlb.lab.nftables import DsrPort, guard_ruleset, kernel_dsr_ruleset, kernel_lb_ruleset
from pktlb.lab.paths import LabPaths
from pktlb.lab.topology import Node, Plan


def build_steps(plan: Plan) -> list[st.Step]:
    sw = plan.switch_namespace
    out = [st.netns_add(ns) for ns in plan.namespaces]
    for ns in plan.namespaces:
        # First, so the interfaces made next are born without IPv6 (no ND/MLD chatter in captures).
        out.append(st.sysctls(ns, plan.common_sysctls))
        out.append(st.link_set(ns, "lo"))
    if plan.switch_sysctls:
        out.append(st.sysctls(sw, plan.switch_sysctls, optional=True))
    for bridge in plan.bridges.values():
        out += [st.link_add(sw, bridge, "bridge"), st.link_set(sw, bridge)]
    for node in plan.nodes:
        out += _node_steps(plan, node)
    for node in plan.nodes:
        for iface in node.interfaces:
            if iface.kind == "veth" and iface.port and iface.mac:
                out.append(st.fdb_static(sw, iface.port, iface.mac))
    out += _nft_steps(plan)
    if plan.options.fastpath == "xdp":  # the engine's XDP_TX out of the LB's veth needs XDP on its switch port
        out += [st.xdp_pass(sw, str(iface.port), str(pass_object()))
                for node in plan.by_role("lb") for iface in node.interfaces if iface.kind == "veth" and iface.port]
    return out


def _node_steps(plan: Plan, node: Node) -> list[st.Step]:
    sw, ns = plan.switch_namespace, node.namespace
    out: list[st.Step] = []
    for iface in node.interfaces:
        if iface.kind == "veth":
            assert iface.port is not None and iface.segment is not None  # a veth's far end is a switch port
            out += [st.link_add(sw, iface.port, "veth", peer=iface.ifname, peer_ns=ns),
                    st.link_set(sw, iface.port, master=plan.bridges[iface.segment]),
                    st.link_set(ns, iface.ifname, mac=iface.mac)]
        elif iface.kind in ("tun", "ipip"):
            out += [st.link_add(ns, iface.ifname, iface.kind), st.link_set(ns, iface.ifname)]
    for iface in node.interfaces:
        out += [st.addr_add(ns, iface.ifname, cidr) for cidr in iface.addresses]
    out += [st.route_replace(ns, r.dst, r.via, mtu=r.mtu, advmss=r.advmss) for r in node.routes]
    if node.sysctls:
        out.append(st.sysctls(ns, node.sysctls))
    out += [st.ethtool_features(ns, ifname, features) for ifname, features in node.offloads.items()]
    return out


def _nft_steps(plan: Plan) -> list[st.Step]:
    c = plan.constants
    fullnat = traits_of(plan.options.mode).needs_snat
    snat = c["snat_address"] if fullnat else None
    out = []
    for node in plan.nodes:
        lb_if = next((i.ifname for i in node.interfaces if i.segment), "eth0")
        if node.guard:
            own_snat = (node.snat or snat) if fullnat else None
            out.append(st.nft_load(node.namespace, guard_ruleset(lb_if, c["vip_network"], own_snat, c["snat_ports"]),
                                   "ingress guard (drop VIP traffic before the LB's kernel sees it)"))
        if node.kernel_lb:
            # The kernel's way of doing the mode: a MAC rewrite where only the MAC changes (dsr), else DNAT.
            kernel_lb = _kernel_dsr if traits_of(plan.options.mode).backends_on_link else _kernel_dnat
            out.append(kernel_lb(plan, node, lb_if, snat))
    return out


def _kernel_dnat(plan: Plan, node: Node, lb_if: str, snat: str | None) -> st.Step:
    c = plan.constants
    backends = [b.address for b in plan.by_role("backend")]
    ruleset = kernel_lb_ruleset(c["vip"], int(c["service_port"]), backends, plan.options.scheduler,
                                snat, c["snat_ports"], int(c["iperf_port"]))
    return st.nft_load(node.namespace, ruleset, "kernel load balancer (DNAT" + (" + SNAT)" if snat else ")"))


def _kernel_dsr(plan: Plan, node: Node, lb_if: str, snat: str | None) -> st.Step:
    c = plan.constants
    ports = [DsrPort("tcp", int(c["service_port"]), per_flow=plan.options.scheduler != "sh"),
             DsrPort("tcp", int(c["iperf_port"]), per_flow=False)]
    macs = [str(b.interfaces[0].mac) for b in plan.by_role("backend")]
    ruleset = kernel_dsr_ruleset(lb_if, str(node.interface(lb_if).mac), c["vip"], ports, macs, c["vip_network"])
    return st.nft_load(node.namespace, ruleset, "kernel load balancer (netdev DSR: MAC rewrite, fwd)")



def render_dry_run(plan: Plan, steps: list[st.Step], config_text: str) -> str:
    """The whole lab as a shell script a student can read or replay (as root)."""
    o = plan.options
    lines = [
        "#!/bin/sh -e",
        f"# pktlb lab: mode {o.mode} ({plan.summaries['mode']})",
        f"# engine {o.engine}: {plan.summaries['engine']}",
        f"# {o.backends} backend(s), {o.clients} client(s), namespaces prefixed {o.prefix!r}, "
        f"VIP {plan.constants['vip']}:{plan.constants['service_port']}/tcp",
    ]
    if plan.decap_kind:
        lines.append(f"# decapsulation: {plan.decap_kind} ({plan.summaries['decap']})")
    for step in steps:
        lines += [f"# {step.summary}", step.command()]
    lines += [f"# engine configuration written to {LabPaths.at(plan.statedir).config}:",
              *(f"#   {line}" for line in config_text.splitlines())]
    lines.append("# services, each started and restarted by the lab supervisor:")
    for svc in plan.services:
        lines.append(shlex.join(Namespace(svc.namespace).argv(svc.argv)) + " &")
    return "\n".join(lines) + "\n"


def node_steps(plan: Plan, node: Node) -> list[st.Step]:
    """The steps that add one node to a lab that is already up (`pktlb lab backend add`): its namespace,
    the same wiring `lab up` gives it for the mode, and its static FDB entries on the switch."""
    ns = node.namespace
    out = [st.netns_add(ns), st.sysctls(ns, plan.common_sysctls), st.link_set(ns, "lo")]
    out += _node_steps(plan, node)
    out += [st.fdb_static(plan.switch_namespace, iface.port, iface.mac) for iface in node.interfaces
            if iface.kind == "veth" and iface.port and iface.mac]
    return out
