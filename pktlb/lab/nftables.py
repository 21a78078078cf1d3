"""nftables rulesets the lab loads into the LB namespace.

* The guard (engines pktlb and none): a netdev ingress drop, so the LB's own kernel never sees VIP
  traffic (no RST, no ICMP, no forwarded duplicate) nor the replies to full-NAT ports.  An
  AF_PACKET socket bound with ETH_P_ALL still sees those frames: they are tapped before this hook.
* The kernel engine (nat and fullnat): DNAT in prerouting over the backends, plus SNAT to the
  lab's SNAT address for fullnat; the baseline that pktlb's own engine is compared with.
"""

from __future__ import annotations

from collections.abc import Sequence

GUARD_TABLE = "pktlb_guard"
KERNEL_TABLE = "pktlb_kernel_lb"


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
