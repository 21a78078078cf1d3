"""Collect ``HostFacts`` for the host checks from one namespace: netlink, sysctl, ethtool and nft.

Links, addresses, routes and the way to each backend come from a ``NetlinkCache`` of the namespace
(asking the kernel to resolve an unknown next hop, then waiting at most ``resolve_wait`` seconds:
the only side effect, the ARP request the kernel would send for any traffic); sysctls, offloads and
nftables tables from `sysctl`, `ethtool -k` and `nft list tables`, run with `ip netns exec` for a
named namespace, each with a timeout.  Whatever cannot be read is listed in ``errors``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable

from pktlb.adapters.netlink import NetlinkCache
from pktlb.adapters.nft import GUARD_TABLE, Nft, NftError
from pktlb.core.config import Config
from pktlb.core.packet.addr import int_to_ip
from pktlb.core.routing import RTN_UNICAST, TABLE_MAIN
from pktlb.daemon.hostcheck import HostFacts, LinkFacts, PathFacts, ServiceFacts

COMMAND_TIMEOUT = 10.0
SYSCTL_PATTERN = r"^net\.ipv4\.(ip_forward|ip_local_port_range|conf\..*\.(rp_filter|arp_ignore|arp_announce))$"


def _run(argv: list[str], netns: str | None, errors: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        errors.append(f"{argv[0]} is not installed: {' '.join(argv)} not read")
        return ""
    full = ["ip", "netns", "exec", netns, *argv] if netns else argv
    try:
        done = subprocess.run(full, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        errors.append(f"{' '.join(argv)} timed out")
        return ""
    if done.returncode != 0:
        errors.append(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def read_sysctls(netns: str | None, errors: list[str]) -> tuple[dict[str, int], tuple[int, int]]:
    values: dict[str, int] = {}
    ports = (32768, 60999)
    for line in _run(["sysctl", "-a", "--pattern", SYSCTL_PATTERN], netns, errors).splitlines():
        key, sep, value = line.partition(" = ")
        if not sep:
            continue
        fields = value.split()
        if key.strip() == "net.ipv4.ip_local_port_range" and len(fields) == 2:
            ports = (int(fields[0]), int(fields[1]))
        elif len(fields) == 1 and fields[0].isdigit():
            values[key.strip()] = int(fields[0])
    return values, ports


def tx_checksum(ifname: str, netns: str | None, errors: list[str]) -> bool | None:
    for line in _run(["ethtool", "-k", ifname], netns, errors).splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "tx-checksumming":
            return value.strip().startswith("on")
    return None


def _namespace_facts(cache: NetlinkCache, node: str, netns: str | None, errors: list[str]) -> HostFacts:
    facts = HostFacts(node=node, netns_prefix=f"ip netns exec {netns} " if netns else "")
    by_link: dict[str, list[str]] = {}
    for address, (ifname, prefix) in cache.addresses().items():
        by_link.setdefault(ifname, []).append(f"{address}/{prefix}")
        facts.local[address] = ifname
    for link in cache.links():
        kind = "loopback" if link.kind == 772 else link.driver
        tx = tx_checksum(link.name, netns, errors) if link.driver == "veth" and link.up else None
        facts.links[link.name] = LinkFacts(link.name, kind, link.mtu, link.up, tx, tuple(by_link.get(link.name, ())))
    main = cache.state.tables.get(TABLE_MAIN)
    for route in main or ():
        if route.kind != RTN_UNICAST or not route.hops:
            continue
        hop = route.hops[0]
        if route.prefix == 0 and hop.gateway is not None and facts.default_gateway is None:
            facts.default_gateway = int_to_ip(hop.gateway)
        elif hop.gateway is None and route.prefix < 32:
            facts.connected.append((f"{int_to_ip(route.network)}/{route.prefix}", cache.state.ifname(hop.ifindex)))
    facts.sysctls, facts.local_port_range = read_sysctls(netns, errors)
    return facts


def _paths(cache: NetlinkCache, backends: Iterable[str], resolve_wait: float) -> dict[str, PathFacts]:
    wanted = sorted(set(backends))
    for backend in wanted:
        cache.egress(backend)  # asks the kernel to resolve what is unknown
    cache.wait(lambda: all((e := cache.egress(b)) is None or e.next_hop_mac is not None for b in wanted),
               resolve_wait)
    paths = {}
    for backend in wanted:
        found = cache.egress(backend)
        if found is None:
            paths[backend] = PathFacts(backend, None, None)
        else:
            paths[backend] = PathFacts(backend, found.ifname, int_to_ip(found.next_hop),
                                       found.next_hop_mac is not None, found.up, found.path_mtu)
    return paths


def collect_director(config: Config, *, netns: str | None = None, resolve_wait: float = 1.0) -> HostFacts:
    """Facts of the namespace the engine runs in (``netns``, or this one) for ``config``'s services."""
    errors: list[str] = []
    cache = NetlinkCache(netns=netns)
    try:
        facts = _namespace_facts(cache, netns or "host", netns, errors)
        facts.services = [ServiceFacts(svc.name, svc.mode, svc.vip, svc.snat_address,
                                       svc.snat_ports if svc.snat_address else None,
                                       tuple(be.address for be in svc.backends)) for svc in config.services]
        for vip in {svc.vip for svc in config.services}:
            owner = cache.local_interface(vip)
            if owner is not None:
                facts.local.setdefault(vip, owner)  # AnyIP: a local route without an address
        facts.paths = _paths(cache, (be.address for svc in config.services for be in svc.backends), resolve_wait)
    finally:
        cache.close()
    try:
        facts.guard = any(name == GUARD_TABLE for _, name in Nft(netns).tables())  # at any hook's family
    except NftError as exc:
        errors.append(str(exc))
    facts.errors = errors
    return facts


def collect_backend(services: list[ServiceFacts], *, director: str | None = None,
                    netns: str | None = None) -> HostFacts:
    """Facts of a backend's namespace for the services it serves (their VIPs and modes)."""
    errors: list[str] = []
    cache = NetlinkCache(netns=netns)
    try:
        facts = _namespace_facts(cache, netns or "host", netns, errors)
        for svc in services:
            owner = cache.local_interface(svc.vip)
            if owner is not None:
                facts.local.setdefault(svc.vip, owner)
    finally:
        cache.close()
    facts.services, facts.director = list(services), director
    facts.errors = errors
    return facts
