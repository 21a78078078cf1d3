"""Checks of the director's namespace against the engine's services (pure functions over ``HostFacts``)."""

from __future__ import annotations

from pktlb.daemon.hostcheck import Finding, HostFacts, bad, in_cidr, needs, ok


def vip_not_local(facts: HostFacts) -> list[Finding]:
    found = []
    for svc in facts.services:
        owner = facts.local.get(svc.vip)
        if owner is None:
            found.append(ok("vip-local", facts, f"{svc.name}: VIP {svc.vip} is not a local address"))
        else:
            found.append(bad("vip-local", facts, f"{svc.name}: VIP {svc.vip} is a local address (on {owner}): the "
                             "director's kernel answers VIP traffic itself (RST, ICMP) and `pktlb run` refuses it",
                             f"{facts.netns_prefix}ip addr del {svc.vip}/32 dev {owner}  (or the local route)"))
    return found


def vip_reachable(facts: HostFacts) -> list[Finding]:
    found = []
    for svc in facts.services:
        subnet = next(((cidr, ifname) for cidr, ifname in facts.connected if in_cidr(svc.vip, cidr)), None)
        if subnet is None:
            found.append(ok("vip-arp", facts, f"{svc.name}: VIP {svc.vip} is outside the connected subnets: "
                            "routers reach it by a route to this director"))
        else:
            found.append(bad("vip-arp", facts, f"{svc.name}: VIP {svc.vip} is inside {subnet[0]} on {subnet[1]}: "
                             "hosts there ARP for it and nobody answers (the VIP is not local here)",
                             f"give the VIP its own prefix and route it to this director (ip route add {svc.vip}/32 "
                             f"via <director address> on the clients' router)", level="warn"))
    return found


def backend_paths(facts: HostFacts) -> list[Finding]:
    found = []
    for svc in facts.services:
        mode = needs(svc.mode)
        for backend in svc.backends:
            path = facts.paths.get(backend)
            where = f"{svc.name}: backend {backend}"
            if path is None or path.ifname is None:
                found.append(bad("backend-route", facts, f"{where}: no route: its frames would be dropped",
                                 f"{facts.netns_prefix}ip route add {backend}/32 via <gateway> (or a connected subnet)"))
                continue
            if not path.up:
                found.append(bad("backend-route", facts, f"{where}: the way out is {path.ifname}, which is down",
                                 f"{facts.netns_prefix}ip link set {path.ifname} up (and check its cable or peer)"))
                continue
            if mode.backends_on_link and path.next_hop != backend:
                found.append(bad("backend-route", facts, f"{where}: reached via gateway {path.next_hop} on "
                                 f"{path.ifname}, but {svc.mode} rewrites only the MAC: the backend must share a "
                                 "link with the director", "put the backend on a subnet of this director, or use "
                                 "mode tunnel"))
                continue
            if not path.mac_known:
                found.append(bad("backend-neighbour", facts, f"{where}: next hop {path.next_hop} on {path.ifname} "
                                 "has no resolved MAC (no ARP answer yet): its frames are dropped (no_neighbour) "
                                 "until it answers", f"{facts.netns_prefix}ping -c 1 {path.next_hop}  (is it up?)",
                                 level="warn"))
            else:
                found.append(ok("backend-route", facts, f"{where}: via {path.next_hop} on {path.ifname}, MAC known"))
            if mode.encap_overhead and path.path_mtu < 1500 + mode.encap_overhead:
                found.append(bad("tunnel-mtu", facts, f"{where}: path MTU {path.path_mtu} on {path.ifname} leaves "
                                 f"no room for the {mode.encap_overhead}-byte outer header of a full-size packet: "
                                 "the engine answers with ICMP fragmentation-needed",
                                 f"raise the MTU toward backends to {1500 + mode.encap_overhead}, or give clients a "
                                 "route with `mtu 1480 advmss 1440`", level="warn"))
    return found


def forwarding(facts: HostFacts) -> list[Finding]:
    if not facts.sysctl("net.ipv4.ip_forward"):
        return [ok("forwarding", facts, "ip_forward=0: the director's kernel forwards nothing")]
    if facts.guard:
        return [ok("forwarding", facts, "ip_forward=1, and the engine's guard keeps VIP traffic and NAT replies "
                   "from the kernel")]
    nat_replies = [svc.name for svc in facts.services if needs(svc.mode).replies_via_lb and not svc.snat_address]
    message = "ip_forward=1 without the engine's guard: the kernel forwards VIP traffic it has a route for"
    if nat_replies:
        message += f", and NAT replies un-rewritten ({', '.join(nat_replies)}): clients get duplicates and reset"
    return [bad("forwarding", facts, message, "run the engine with its guard (the default), or "
                f"{facts.netns_prefix}sysctl -w net.ipv4.ip_forward=0", level="fail" if nat_replies else "warn")]


def tx_checksum(facts: HostFacts) -> list[Finding]:
    found = []
    for link in facts.data_links():
        if link.kind != "veth" or link.tx_checksum is None:
            continue
        if link.tx_checksum:
            found.append(bad("tx-checksum", facts, f"{link.name}: TX checksum offload on a veth: TCP from this "
                             "namespace leaves with an unfinished checksum; pktlb's engine completes it (virtio "
                             "header), other raw-socket forwarders pass it on broken",
                             f"{facts.netns_prefix}ethtool -K {link.name} tx off", level="warn"))
        else:
            found.append(ok("tx-checksum", facts, f"{link.name}: TX checksum offload off"))
    return found


def snat_ports(facts: HostFacts) -> list[Finding]:
    found = []
    low, high = facts.local_port_range
    for svc in facts.services:
        if not svc.snat_address or not svc.snat_ports:
            continue
        first, last = svc.snat_ports
        subnet = next((cidr for cidr, _ in facts.connected if in_cidr(svc.snat_address, cidr)), None)
        if svc.snat_address not in facts.local and subnet is not None:
            found.append(bad("snat-ports", facts, f"{svc.name}: SNAT address {svc.snat_address} is inside {subnet} "
                             "but not local: backends ARP for it and nobody answers",
                             f"{facts.netns_prefix}ip addr add {svc.snat_address}/32 dev <backend-side interface> "
                             "(the guard keeps the kernel off its SNAT ports)"))
        elif svc.snat_address in facts.local and first <= high and low <= last:
            found.append(bad("snat-ports", facts, f"{svc.name}: SNAT ports {first}-{last} on local address "
                             f"{svc.snat_address} overlap the kernel's ephemeral ports {low}-{high}: the guard "
                             "drops answers to this host's own connections from those ports",
                             f"choose snat_ports outside {low}-{high}, or {facts.netns_prefix}sysctl -w "
                             f"net.ipv4.ip_local_port_range='{low} {first - 1}'", level="warn"))
        else:
            found.append(ok("snat-ports", facts, f"{svc.name}: SNAT ports {first}-{last} on {svc.snat_address}"))
    return found
