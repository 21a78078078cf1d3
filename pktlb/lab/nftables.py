"""nftables rulesets the lab loads into the LB namespace.

* The guard (engines pktlb and none): a netdev ingress drop, so the LB's own kernel never sees VIP
  traffic (no RST, no ICMP, no forwarded duplicate) nor the replies to full-NAT ports.  An
  AF_PACKET socket bound with ETH_P_ALL still sees those frames: they are tapped before this hook.
* The kernel engine, the baseline that pktlb's own engine is compared with: for nat and fullnat,
  DNAT in prerouting over the backends, plus SNAT to the lab's SNAT address for fullnat; for dsr,
  a netdev ingress chain that rewrites the destination MAC to a backend's, picked from a map by
  a hash of the flow, and sends the frame straight back out (``fwd to``): no conntrack, no
  routing, what pktlb's DSR mode does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pktlb.adapters.nft import GUARD_TABLE

KERNEL_TABLE = "pktlb_kernel_lb"
KERNEL_DSR_TABLE = "pktlb_kernel_dsr"
DSR_PRIORITY = -10  # before the guard (priority 0), if one is loaded too


def guard_ruleset(interface: str, vip_network: str, snat_address: str | None, snat_ports: str) -> str:
    lines = [
        f"table netdev {GUARD_TABLE} {{",
        "  chain ingress {",
        f'    type filter hook ingress device "{interface}" priority 0; policy accept;',
        f"    ip daddr {vip_network} counter drop comment \"VIP traffic: the engine, not the kernel\"",
    ]
    if snat_address:
        for proto in ("tcp", "udp"):
            lines.append(f"    ip daddr {snat_address} {proto} dport {snat_ports} counter drop "
                         f"comment \"full-NAT replies: the engine's\"")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def kernel_lb_ruleset(vip: str, port: int, backends: Sequence[str], scheduler: str,
                      snat_address: str | None, snat_ports: str, iperf_port: int | None = None) -> str:
    """DNAT (and for fullnat SNAT) rules standing in for the engine.

    rr/wrr spread with ``numgen inc``; sh with a hash of the client address; every other
    scheduler with a hash of client address and port (the closest the kernel has to a flow hash).
    """
    if scheduler in ("rr", "wrr"):
        selector = f"numgen inc mod {len(backends)}"
    elif scheduler == "sh":
        selector = f"jhash ip saddr mod {len(backends)}"
    else:
        selector = f"jhash ip saddr . tcp sport mod {len(backends)}"
    mapping = ", ".join(f"{i} : {address}" for i, address in enumerate(backends))
    lines = [
        f"table ip {KERNEL_TABLE} {{",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        f"    ip daddr {vip} tcp dport {port} counter dnat to {selector} map {{ {mapping} }}",
    ]
    if iperf_port:
        # iperf3's control and data connections must meet the same server: hash the client address only.
        lines.append(f"    ip daddr {vip} tcp dport {iperf_port} counter dnat to jhash ip saddr mod {len(backends)} "
                     f"map {{ {mapping} }}")
    lines += ["  }"]
    if snat_address:
        lines += [
            "  chain postrouting {",
            "    type nat hook postrouting priority srcnat; policy accept;",
            f"    ct status dnat ip protocol tcp counter snat to {snat_address}:{snat_ports}",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class DsrPort:
    """A VIP port the kernel's DSR spreads: by a hash of address and source port (``per_flow``), or of
    the client address only (iperf3's control and data connections must meet the same server)."""

    protocol: str  # "tcp" or "udp"
    port: int
    per_flow: bool = True


def dsr_selector(protocol: str, per_flow: bool, backends: int) -> str:
    """The nft expression that picks a backend's index from the frame.

    Without conntrack every packet of a flow must hash to the same backend by itself, so every
    scheduler becomes a hash here: rr and wrr too (a counter would split a connection's packets).
    """
    key = f"ip saddr . {protocol} sport" if per_flow else "ip saddr"
    return f"jhash {key} mod {backends}"


def kernel_dsr_ruleset(interface: str, lb_mac: str, vip: str, ports: Sequence[DsrPort],
                       backend_macs: Sequence[str], drop_network: str | None = None) -> str:
    """Direct server return in the kernel: on ``interface``'s ingress, a frame to the VIP on one of
    ``ports`` gets the LB's MAC as source and a backend's MAC as destination, and leaves by the same
    interface; IP header and payload are untouched (the backends own the VIP on lo).  Anything else
    to ``drop_network`` (other ports, ICMP) is dropped, so the LB's own kernel never sees VIP traffic.
    """
    if not backend_macs:
        raise ValueError("kernel DSR needs at least one backend MAC")
    macs = ", ".join(f"{i} : {mac}" for i, mac in enumerate(backend_macs))
    lines = [
        f"table netdev {KERNEL_DSR_TABLE} {{",
        "  chain ingress {",
        f'    type filter hook ingress device "{interface}" priority {DSR_PRIORITY}; policy accept;',
    ]
    for p in ports:
        selector = dsr_selector(p.protocol, p.per_flow, len(backend_macs))
        lines.append(f"    ip daddr {vip} {p.protocol} dport {p.port} ether saddr set {lb_mac} "
                     f"ether daddr set {selector} map {{ {macs} }} counter fwd to \"{interface}\"")
    if drop_network:
        lines.append(f'    ip daddr {drop_network} counter drop comment "other VIP traffic: not for the LB\'s kernel"')
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"
