"""Writes the pktlb engine's configuration for a lab (the format of pktlb/core/config.py).

Every MAC is the lab's deterministic one (mac_for_ip), so the engine needs no ARP to reach the
router or the backends.  The text is validated with parse_config before it is written.
"""

from __future__ import annotations

from pktlb.core.config import Config, parse_config
from pktlb.core.packet.addr import mac_for_ip
from pktlb.lab.topology import Node, Plan


def _q(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def engine_config_text(plan: Plan, lb: Node | None = None, control_socket: str | None = None) -> str:
    """The engine config of the lab's LB (or of ``lb``, one LB of the tier, with its own control
    socket and, in fullnat, its own SNAT address; every LB gets the same services, backends and
    hash seed, so every LB picks the same backend for a flow)."""
    c, o = plan.constants, plan.options
    lb = lb or plan.by_role("lb")[0]
    snat_address = lb.snat or c["snat_address"]
    router = c["router_server"]
    lines = [
        f"# pktlb engine configuration for the lab {o.prefix!r} (mode {o.mode}); written by `pktlb lab up`.",
        "[lb]",
        'interface = "eth0"',
        f"address = {_q(lb.address)}",
        f"mac = {_q(mac_for_ip(lb.address))}",
        f"gateway = {_q(router)}",
        f"gateway_mac = {_q(mac_for_ip(router))}",
        f"control_socket = {_q(control_socket or plan.statedir + '/pktlb.sock')}",
        "",
        "[[service]]",
        'name = "web"',
        f"vip = {_q(c['vip'])}",
        f"port = {int(c['service_port'])}",
        'protocol = "tcp"',
        f"mode = {_q(o.mode)}",
        f"scheduler = {_q(o.scheduler)}",
    ]
    if o.mode == "fullnat":
        first, last = (int(p) for p in c["snat_ports"].split("-"))
        lines += [f"snat_address = {_q(snat_address)}", f"snat_ports = [{first}, {last}]"]
    lines += ["", "[service.health]", 'checks = ["icmp"]', "interval = 1.0", "timeout = 1.0", "rise = 2", "fall = 3"]
    lines += _backend_lines(plan, int(c["service_port"]))
    # A second service on the VIP for iperf3's bulk TCP runs (throughput tests), same mode.  iperf3 opens
    # a control and a data connection that must reach the same server: source-IP hashing keeps them together.
    lines += ["", "[[service]]", 'name = "iperf"', f"vip = {_q(c['vip'])}", f"port = {int(c['iperf_port'])}",
              'protocol = "tcp"', f"mode = {_q(o.mode)}", 'scheduler = "sh"']
    if o.mode == "fullnat":
        lines += [f"snat_address = {_q(snat_address)}", f"snat_ports = [{first}, {last}]"]
    lines += _backend_lines(plan, int(c["iperf_port"]))
    return "\n".join(lines) + "\n"


def _backend_lines(plan: Plan, port: int) -> list[str]:
    lines: list[str] = []
    for backend in plan.by_role("backend"):
        lines += ["", "[[service.backend]]", f"name = {_q(backend.name)}", f"address = {_q(backend.address)}",
                  f"port = {port}", f"mac = {_q(mac_for_ip(backend.address))}"]
    return lines


def checked_engine_config(plan: Plan, lb: Node | None = None, control_socket: str | None = None) -> tuple[str, Config]:
    """The config text and its parsed form; ConfigError if the lab would write a bad config."""
    text = engine_config_text(plan, lb, control_socket)
    return text, parse_config(text)
