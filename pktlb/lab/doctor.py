"""`pktlb doctor`: checks a lab (or a real host) for the traps measured in /work/shared/LAB-NOTES.md.

One small check class per trap, registered under its name; each yields findings
``{check, node, ok, level, message, fix}``, one line each.  ``level`` is ok, warn (works, with a
caveat) or fail (traffic will break); the command exits non-zero on any fail.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import ClassVar

from pktlb.adapters.nft import GUARD_TABLE
from pktlb.core.config import Config
from pktlb.core.packet.addr import in_network, ip_to_int
from pktlb.core.rewrite.registry import MODES, traits_of
from pktlb.core.rewrite.traits import ModeTraits
from pktlb.daemon.hostcheck import Finding  # one finding type for the lab's checks and the host checks
from pktlb.lab import state as st
from pktlb.lab.facts import NodeFacts, collect
from pktlb.lab.tier.health import tier_rows
from pktlb.lab.topology import LabError, load_topology, mode_default


class Check(ABC):
    name: ClassVar[str]
    roles: ClassVar[tuple[str, ...]]
    trait: ClassVar[str | None] = None  # the mode trait (``ModeTraits`` field) the check is about; None: every mode

    def applies(self, node: NodeFacts) -> bool:
        return node.role in self.roles and (self.trait is None or bool(getattr(self.traits(node), self.trait)))

    @staticmethod
    def traits(node: NodeFacts) -> ModeTraits:
        return traits_of(node.mode)

    @abstractmethod
    def run(self, node: NodeFacts) -> Iterator[Finding]:
        """The findings for one node."""

    def ok(self, node: NodeFacts, message: str) -> Finding:
        return Finding(self.name, node.name, True, "ok", message)

    def bad(self, node: NodeFacts, message: str, fix: str, level: str = "fail") -> Finding:
        return Finding(self.name, node.name, False, level, message, fix)


REGISTRY: dict[str, type[Check]] = {}


@functools.cache
def _layer(mode: str | None) -> int:
    return int(mode_default(load_topology(), mode or "", "layer", 4))


def proxy_layout(node: NodeFacts) -> bool:
    """The node's lab is an L7 layout (netns/lab.toml: the mode's ``layer = 7``): the LB is a proxy owning the VIP."""
    return _layer(node.mode) == 7


def register(cls: type[Check]) -> type[Check]:
    REGISTRY[cls.name] = cls
    return cls


@register
class VipOnLo(Check):
    name = "vip-on-lo"
    roles = ("backend",)
    trait = "vip_on_backend"

    def run(self, node: NodeFacts) -> Iterator[Finding]:
        lo = node.links.get("lo")
        if lo and f"{node.vip}/32" in lo.addresses:
            yield self.ok(node, f"VIP {node.vip}/32 is on lo")
        else:
            yield self.bad(node, f"VIP {node.vip} is not on lo: the kernel drops packets to the VIP",
                           f"{node.fix_prefix()}ip addr add {node.vip}/32 dev lo")


@register
class ArpSysctls(Check):
    name = "arp-sysctls"
    roles = ("backend",)
    trait = "vip_on_backend"

    def run(self, node: NodeFacts) -> Iterator[Finding]:
        for link in node.data_links():
            ignore, announce = node.effective("arp_ignore", link.ifname), node.effective("arp_announce", link.ifname)
            if ignore >= 1 and announce >= 2:
                yield self.ok(node, f"{link.ifname}: arp_ignore={ignore}, arp_announce={announce}")
            else:
                yield self.bad(node, f"{link.ifname}: arp_ignore={ignore}, arp_announce={announce}: this backend "
                               "answers ARP for the VIP and steals traffic from the LB",
                               f"{node.fix_prefix()}sysctl -w net.ipv4.conf.all.arp_ignore=1 "
                               "net.ipv4.conf.all.arp_announce=2")


@register
class RpFilter(Check):
    name = "rp-filter"
    roles = ("backend",)
    trait = "loose_rp_backend"

    def run(self, node: NodeFacts) -> Iterator[Finding]:
        decap_links = [n for n in ("tunl0", "pktlbtun0") if n in node.links]
        targets = decap_links if self.traits(node).needs_decapsulator else [link.ifname for link in node.data_links()]
        for ifname in targets:
            value = node.effective("rp_filter", ifname)
            if value == 0:
                yield self.ok(node, f"{ifname}: effective rp_filter 0 (max of all and {ifname})")
                continue
            fix = f"{node.fix_prefix()}sysctl -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.{ifname}.rp_filter=0"
            if ifname in decap_links:
                yield self.bad(node, f"{ifname}: effective rp_filter {value}: decapsulated packets from clients "
                               "are dropped (the route back to them is not via this device)", fix)
            elif value == 1:
                yield self.bad(node, f"{ifname}: effective rp_filter 1 (strict): client packets are dropped unless "
                               "the route back to the client leaves by this interface", fix, level="warn")
            else:
                yield self.ok(node, f"{ifname}: effective rp_filter {value} (loose)")


@register
class Decapsulation(Check):
    name = "decap"
    roles = ("backend",)
    trait = "needs_decapsulator"

    def run(self, node: NodeFacts) -> Iterator[Finding]:
        tunl0, tun = node.links.get("tunl0"), node.links.get("pktlbtun0")
        if tunl0 and tunl0.up:
            yield self.ok(node, "kernel ipip device tunl0 is up")
        elif tun and tun.up:
            yield self.ok(node, "pktlbtun0 is up with a decapsulator attached")
        else:
            what = "pktlbtun0 has no process attached" if tun else "no tunl0 and no pktlbtun0"
            yield self.bad(node, f"no decapsulation ({what}): IP-in-IP packets get ICMP protocol-unreachable",
                           f"{node.fix_prefix()}ip link set tunl0 up (kernel ipip) or run `pktlb decap --address "
                           f"<backend address>` (or `pktlb lab down` and `lab up` again)")


@register
class TunnelMtu(Check):
    name = "tunnel-mtu"
    roles = ("lb",)
    trait = "encap_overhead"

    def run(self, node: NodeFacts) -> Iterator[Finding]:
        extra = self.traits(node).encap_overhead
        for link in node.data_links():
            if node.topology == "two-arm" and not any(a.split("/")[0] == node.lb_address for a in link.addresses):
                continue  # a two-armed LB's client-side arm carries no IP-in-IP
            if link.mtu >= 1500 + extra:
                yield self.ok(node, f"{link.ifname}: MTU {link.mtu} leaves room for the {extra}-byte outer header")
            else:
                yield self.bad(node, f"{link.ifname}: MTU {link.mtu}: a full-size client packet plus {extra} bytes of "
                               "IP-in-IP does not fit; the engine must answer with ICMP frag-needed (PMTU)",
                               f"keep the engine's PMTU answers on, or give clients a route with `mtu {1500 - extra} "
                               f"advmss {1460 - extra}`, or raise the LB and backend MTU to {1500 + extra}", level="warn")


@register
class TxChecksum(Check):
    name = "tx-checksum"
    roles = ("client", "router", "lb", "backend")

    def run(self, node: NodeFacts) -> Iterator[Finding]:
        for ifname, features in node.offloads.items():
            fix = f"{node.fix_prefix()}ethtool -K {ifname} tx off"
            if features.get("tx") and node.links[ifname].kind != "veth":
                yield self.ok(node, f"{ifname}: TX checksum offload on, but not a veth: the NIC finishes checksums")
            elif features.get("tx"):
                yield self.bad(node, f"{ifname}: TX checksum offload on: TCP leaves with a partial checksum that "
                               "a raw-socket forwarder passes on unfinished (TcpInCsumErrors)", fix)
            else:
                yield self.ok(node, f"{ifname}: TX checksum offload off")
            if node.role == "client" and self.traits(node).encap_overhead and (features.get("tso") or features.get("gso")):
                yield self.bad(node, f"{ifname}: TSO/GSO on: the engine must cut each TCP super-frame into "
                               "segments itself before encapsulating them (CPU), and drops UDP GSO frames",
                               f"{node.fix_prefix()}ethtool -K {ifname} tso off gso off", level="warn")


@register
class LbForwarding(Check):
    name = "lb-forwarding"
    roles = ("lb",)

    def run(self, node: NodeFacts) -> Iterator[Finding]:
        forwarding = node.sysctl("net.ipv4.ip_forward")
        if node.engine == "kernel":
            if forwarding:
                yield self.ok(node, "ip_forward=1 (the kernel engine forwards)")
            else:
                yield self.bad(node, "ip_forward=0 but the kernel engine needs forwarding",
                               f"{node.fix_prefix()}sysctl -w net.ipv4.ip_forward=1")
        elif node.engine == "none":
            yield self.ok(node, f"ip_forward={forwarding} (engine none: the LB only routes backend replies)")
        elif node.topology == "two-arm":
            guarded = GUARD_TABLE in node.nft_tables
            if forwarding and guarded:
                yield self.ok(node, "ip_forward=1: the director routes its servers' replies (dsr, tunnel); the "
                              "engine's guard keeps VIP traffic and NAT replies away from that forwarding")
            elif forwarding:
                yield self.bad(node, "ip_forward=1 without the engine's guard: the kernel forwards VIP traffic too",
                               "restart the engine without --no-guard")
            else:
                yield self.bad(node, "ip_forward=0 on a two-armed director: dsr and tunnel replies cannot cross it",
                               f"{node.fix_prefix()}sysctl -w net.ipv4.ip_forward=1", level="warn")
        elif forwarding:
            guarded = GUARD_TABLE in node.nft_tables
            yield self.bad(node, "ip_forward=1: the LB's kernel may forward a duplicate of VIP traffic"
                           + (" (the ingress guard still drops VIP traffic)" if guarded else ""),
                           f"{node.fix_prefix()}sysctl -w net.ipv4.ip_forward=0", level="warn" if guarded else "fail")
        else:
            yield self.ok(node, "ip_forward=0: the LB's kernel does not forward")


@register
class StrayVip(Check):
    name = "stray-vip"
    roles = ("lb",)

    def applies(self, node: NodeFacts) -> bool:  # in mode l7 the VIP is the proxy's own address (ProxyVip)
        return super().applies(node) and not proxy_layout(node)

    def run(self, node: NodeFacts) -> Iterator[Finding]:
        network, plen = node.vip_network.split("/")
        stray = [(link.ifname, cidr) for link in node.links.values() for cidr in link.addresses
                 if in_network(ip_to_int(cidr.split("/")[0]), ip_to_int(network), int(plen))]
        if not stray:
            yield self.ok(node, "no VIP is assigned on the LB")
        for ifname, cidr in stray:
            yield self.bad(node, f"{cidr} is assigned on {ifname}: the LB's kernel answers VIP traffic with RST/ICMP",
                           f"{node.fix_prefix()}ip addr del {cidr} dev {ifname}")


@register
class LbGuard(Check):
    name = "lb-guard"
    roles = ("lb",)

    def applies(self, node: NodeFacts) -> bool:  # a proxy (mode l7) owns the VIP: nothing to guard
        return super().applies(node) and node.engine != "kernel" and node.namespace is not None \
            and not proxy_layout(node)

    def run(self, node: NodeFacts) -> Iterator[Finding]:
        if GUARD_TABLE in node.nft_tables:
            yield self.ok(node, "nftables ingress guard drops VIP traffic before the LB's kernel sees it")
        else:
            yield self.bad(node, "no nftables ingress guard for VIP traffic", "`pktlb lab down` and `lab up` again",
                           level="warn")


@register
class ProxyVip(Check):
    """Mode l7: the proxy listens on the VIP, so the LB's kernel must own it (and terminate its TCP)."""

    name = "proxy-vip"
    roles = ("lb",)

    def applies(self, node: NodeFacts) -> bool:
        return super().applies(node) and proxy_layout(node)

    def run(self, node: NodeFacts) -> Iterator[Finding]:
        where = [link.ifname for link in node.links.values() if f"{node.vip}/32" in link.addresses]
        if where:
            yield self.ok(node, f"the proxy's VIP {node.vip} is on {', '.join(where)}: the proxy can listen on it")
        else:
            yield self.bad(node, f"{node.vip} is on no interface: the proxy cannot listen on the VIP",
                           f"{node.fix_prefix()}ip addr add {node.vip}/32 dev lo")


@register
class BackendRoute(Check):
    name = "backend-route"
    roles = ("backend",)

    def run(self, node: NodeFacts) -> Iterator[Finding]:
        default = next((r for r in node.routes if r.get("dst") == "default"), None)
        via = default.get("gateway") if default else None
        lb = node.lb_address
        traits = self.traits(node)
        if traits.reverse_nat and node.tier:
            if via == node.router_address:
                yield self.ok(node, f"default route via the router {via}: its rule sends replies to a live LB of the tier")
            else:
                yield self.bad(node, f"default route via {via}: in the LB tier NAT replies go via the router",
                               f"{node.fix_prefix()}ip route replace default via {node.router_address}")
        elif traits.reverse_nat:
            if via == lb:
                yield self.ok(node, f"default route via the LB {lb} (NAT replies go back through it)")
            else:
                yield self.bad(node, f"default route via {via}: NAT replies bypass the LB and reach the client "
                               "from the backend's address", f"{node.fix_prefix()}ip route replace default via {lb}")
        elif (node.mode in MODES and not traits.reverse_nat and via == lb and node.namespace
              and node.topology != "two-arm"):
            yield self.bad(node, f"default route via the LB in mode {node.mode}: replies should not need it",
                           f"{node.fix_prefix()}ip route replace default via {node.router_address}", level="warn")
        elif via:
            yield self.ok(node, f"default route via {via}")


def lab_nodes(prefix: str) -> list[NodeFacts]:
    recorded = st.load_state(prefix)
    if recorded is None:
        raise LabError(f"no lab with prefix {prefix!r} is up; to check this host use `pktlb doctor --host ROLE`")
    constants = load_topology()["constants"]
    options = recorded["options"]
    return [NodeFacts(n["name"], n["role"], n["namespace"], options["mode"], options["engine"], recorded["vip"],
                      constants["vip_network"], recorded.get("decap_kind"), lb_address=constants["lb_address"],
                      router_address=constants["router_server"], tier=bool(recorded.get("tier")),
                      topology=options.get("topology", "one-arm"))
            for n in recorded["nodes"]]


def diagnose_namespace(config: Config, side: str, netns: str | None = None) -> list[Finding]:
    """What would break each of ``config``'s modes in this namespace (or ``netns``), lab or not:
    ``side`` "director" (the engine runs here) or "backend" (this namespace serves the config's
    services: those whose backends include one of its addresses)."""
    from pktlb.daemon.host_facts import collect_backend, collect_director
    from pktlb.daemon.hostcheck import ServiceFacts
    from pktlb.daemon.hostcheck_registry import run_checks

    if side == "director":
        return run_checks(collect_director(config, netns=netns), "director")
    services = [ServiceFacts(svc.name, svc.mode, svc.vip, svc.snat_address,
                             svc.snat_ports if svc.snat_address else None, tuple(be.address for be in svc.backends))
                for svc in config.services]
    probe = collect_backend([], netns=netns)
    own = set(probe.local)
    mine = [svc for svc in services if own & set(svc.backends)] or services
    return run_checks(collect_backend(mine, director=config.lb.address, netns=netns), "backend")


def diagnose(prefix: str, *, host_role: str | None = None, host_mode: str | None = None,
             host_vip: str = "198.19.0.100") -> list[Finding]:
    if host_role:
        nodes = [NodeFacts("host", host_role, None, host_mode, "pktlb", host_vip, f"{host_vip}/32")]
    else:
        nodes = lab_nodes(prefix)
    findings: list[Finding] = []
    for node in nodes:
        collect(node)
        for error in node.errors:
            findings.append(Finding("facts", node.name, False, "warn", error))
        for check in REGISTRY.values():
            instance = check()
            if instance.applies(node):
                findings.extend(instance.run(node))
    recorded = None if host_role else st.load_state(prefix)
    if recorded and recorded.get("tier"):
        findings += [Finding(*row) for row in tier_rows(recorded)]
    return findings


def render_findings(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        lines.append(f"{f.level.upper():<4} {f.node:<8} {f.check:<14} {f.message}" + (f"  -> fix: {f.fix}" if f.fix else ""))
    bad = sum(1 for f in findings if f.level == "fail")
    warn = sum(1 for f in findings if f.level == "warn")
    lines.append(f"{len(findings)} findings: {bad} fail, {warn} warn")
    return "\n".join(lines) + "\n"
