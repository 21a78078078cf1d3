"""Checks of a backend's namespace for the services it serves (pure functions over ``HostFacts``)."""

from __future__ import annotations

from pktlb.daemon.hostcheck import Finding, HostFacts, bad, needs, ok


def vip_on_backend(facts: HostFacts) -> list[Finding]:
    found = []
    for svc in facts.services:
        if not needs(svc.mode).vip_on_backend:
            continue
        owner = facts.local.get(svc.vip)
        if owner is None:
            found.append(bad("vip-on-lo", facts, f"{svc.name}: VIP {svc.vip} is not local here: {svc.mode} "
                             "delivers packets still addressed to the VIP and this kernel drops them",
                             f"{facts.netns_prefix}ip addr add {svc.vip}/32 dev lo"))
        elif owner != "lo":
            found.append(bad("vip-on-lo", facts, f"{svc.name}: VIP {svc.vip} is on {owner}, not lo: this backend "
                             "announces it on the network and steals the director's traffic",
                             f"{facts.netns_prefix}ip addr del {svc.vip}/32 dev {owner}; ip addr add {svc.vip}/32 "
                             "dev lo"))
        else:
            found.append(ok("vip-on-lo", facts, f"{svc.name}: VIP {svc.vip}/32 is on lo"))
    return found


def arp_sysctls(facts: HostFacts) -> list[Finding]:
    if not any(needs(svc.mode).arp_quiet_backend for svc in facts.services):
        return []
    found = []
    for link in facts.data_links():
        ignore, announce = facts.effective("arp_ignore", link.name), facts.effective("arp_announce", link.name)
        if ignore >= 1 and announce >= 2:
            found.append(ok("arp-sysctls", facts, f"{link.name}: arp_ignore={ignore}, arp_announce={announce}"))
        else:
            found.append(bad("arp-sysctls", facts, f"{link.name}: arp_ignore={ignore}, arp_announce={announce}: "
                             "this backend answers ARP for the VIP (on lo) and steals traffic from the director",
                             f"{facts.netns_prefix}sysctl -w net.ipv4.conf.all.arp_ignore=1 "
                             "net.ipv4.conf.all.arp_announce=2"))
    return found


def rp_filter(facts: HostFacts) -> list[Finding]:
    if not any(needs(svc.mode).loose_rp_backend for svc in facts.services):
        return []
    found = []
    for link in facts.data_links() + [lk for lk in facts.links.values() if lk.kind == "tun" and lk.up]:
        value = facts.effective("rp_filter", link.name)
        fix = (f"{facts.netns_prefix}sysctl -w net.ipv4.conf.all.rp_filter=0 "
               f"net.ipv4.conf.{link.name}.rp_filter=0")
        if value == 1:
            level = "fail" if link.kind == "tun" else "warn"
            found.append(bad("rp-filter", facts, f"{link.name}: effective rp_filter 1 (strict): packets from "
                             "clients are dropped unless the route back to them leaves by this interface", fix, level))
        else:
            found.append(ok("rp-filter", facts, f"{link.name}: effective rp_filter {value}"))
    return found


def route_back(facts: HostFacts) -> list[Finding]:
    if not any(needs(svc.mode).reverse_nat for svc in facts.services) or facts.director is None:
        return []
    if facts.default_gateway == facts.director:
        return [ok("route-back", facts, f"default route via the director {facts.director}: NAT replies return "
                   "through it")]
    return [bad("route-back", facts, f"default route via {facts.default_gateway}: NAT replies bypass the director "
                f"{facts.director} and reach clients from this backend's own address",
                f"{facts.netns_prefix}ip route replace default via {facts.director}")]
