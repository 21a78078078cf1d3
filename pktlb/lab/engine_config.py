"""Writes the pktlb engine's configuration for a lab (the format of pktlb/core/config.py).

The config names no MAC and no gateway: the engine finds every next hop in the LB namespace's
routes and neighbour table, as it would on a network it did not build.  The config is built as data and written with ``tomli_w`` (no hand
quoting); the text is validated with parse_config before it is written.
"""

from __future__ import annotations

from typing import Any

import tomli_w

from pktlb.core.config import Config, parse_config
from pktlb.core.rewrite.registry import traits_of
from pktlb.lab.paths import LabPaths
from pktlb.lab.topology import Node, Plan


def engine_config_data(plan: Plan, lb: Node | None = None, control_socket: str | None = None) -> dict[str, Any]:
    """The engine config of the lab's LB (or of ``lb``, one LB of the tier, with its own control
    socket and, in fullnat, its own SNAT address; every LB gets the same services, backends and
    hash seed, so every LB picks the same backend for a flow)."""
    c, o = plan.constants, plan.options
    lb = lb or plan.by_role("lb")[0]
    arms = [iface.ifname for iface in lb.interfaces if iface.segment]  # one-arm: eth0; two-arm: eth0, eth1
    config: dict[str, Any] = {"lb": {
        "interface": arms[0] if len(arms) == 1 else arms,
        "address": lb.address,
        "control_socket": control_socket or str(LabPaths.at(plan.statedir).control_socket),
    }}
    if o.fastpath != "off":
        config["lb"]["fastpath"] = o.fastpath
        if o.lbs == 1:  # the fast path forwards replies (nat, fullnat) only to a gateway the config names
            config["lb"]["gateway"] = c["router_server"]
    web: dict[str, Any] = {"name": "web", "vip": c["vip"], "port": int(c["service_port"]), "protocol": "tcp",
                           "mode": o.mode, "scheduler": o.scheduler}
    snat: dict[str, Any] = {}
    if traits_of(o.mode).needs_snat:
        first, last = (int(p) for p in c["snat_ports"].split("-"))
        snat = {"snat_address": lb.snat or c["snat_address"], "snat_ports": [first, last]}
    web |= snat
    web["health"] = {"checks": ["icmp"], "interval": 1.0, "timeout": 1.0, "rise": 2, "fall": 3}
    web["backend"] = _backends(plan, int(c["service_port"]))
    # A second service on the VIP for iperf3's bulk TCP runs (throughput tests), same mode.  iperf3 opens
    # a control and a data connection that must reach the same server: source-IP hashing keeps them together.
    iperf: dict[str, Any] = {"name": "iperf", "vip": c["vip"], "port": int(c["iperf_port"]), "protocol": "tcp",
                             "mode": o.mode, "scheduler": "sh", **snat}
    iperf["backend"] = _backends(plan, int(c["iperf_port"]))
    config["service"] = [web, iperf]
    if o.tls:  # HTTPS the backends end themselves (their httpsd service): the engine forwards ciphertext
        tls_port = int(c["tls_port"])
        config["service"].append({**web, "name": "web-tls", "port": tls_port, "backend": _backends(plan, tls_port),
                                  "health": {"checks": ["tcp"], "interval": 1.0, "timeout": 1.0, "rise": 2,
                                             "fall": 3}})
    return config


def engine_config_text(plan: Plan, lb: Node | None = None, control_socket: str | None = None) -> str:
    o = plan.options
    header = f"# pktlb engine configuration for the lab {o.prefix!r} (mode {o.mode}); written by `pktlb lab up`.\n"
    return header + tomli_w.dumps(engine_config_data(plan, lb, control_socket))


def _backends(plan: Plan, port: int) -> list[dict[str, Any]]:
    return [{"name": backend.name, "address": backend.address, "port": port}
            for backend in plan.by_role("backend")]


def checked_engine_config(plan: Plan, lb: Node | None = None, control_socket: str | None = None) -> tuple[str, Config]:
    """The config text and its parsed form; ConfigError if the lab would write a bad config."""
    text = engine_config_text(plan, lb, control_socket)
    return text, parse_config(text)
