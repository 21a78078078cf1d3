"""Lab build steps: each one a description, the equivalent shell command, and how to apply it.

Netlink steps (namespaces, links, addresses, routes) are applied with pyroute2 when it is
importable; every step can also be applied by running its command with a timeout
(``pktlb.lab.netns``), which is what ``--dry-run`` prints, so a student can read or replay the
lab by hand.  A command that fails raises ``CommandError``; a netlink change that fails, ``StepError``.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pktlb.lab.netns import Namespace


class StepError(RuntimeError):
    """A netlink step failed; the message names the step, the equivalent command and the error."""


@dataclass
class Step:
    summary: str
    argv: list[str]
    stdin: str | None = None
    # Applies the step through netlink given a Netlink pool; None: run argv instead.
    netlink: Callable[[Netlink], None] | None = None
    ok_codes: tuple[int, ...] = ()  # netlink errno values that mean "already so" (EEXIST for tunl0)
    kind: str = "net"

    def command(self) -> str:
        text = shlex.join(self.argv)
        if self.stdin is not None:
            text += " <<'EOF'\n" + self.stdin.rstrip("\n") + "\nEOF"
        return text


@dataclass
class Netlink:
    """One pyroute2 IPRoute per namespace, opened on first use and closed by ``close``."""

    sockets: dict[str, Any] = field(default_factory=dict)

    def __call__(self, namespace: str) -> Any:
        if namespace not in self.sockets:
            from pyroute2 import IPRoute

            self.sockets[namespace] = IPRoute(netns=namespace)
        return self.sockets[namespace]

    def index(self, namespace: str, ifname: str) -> int:
        found = self(namespace).link_lookup(ifname=ifname)
        if not found:
            raise StepError(f"no interface {ifname} in namespace {namespace}")
        return int(found[0])

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()


def apply_steps(steps: Iterable[Step], *, use_netlink: bool = True,
                progress: Callable[[Step], None] | None = None) -> int:
    """Apply steps in order; StepError or CommandError names the step that failed.  Returns how many ran."""
    count = 0
    pool = Netlink()
    here = Namespace.current()  # step commands name their namespace themselves (ip -n NS, ip netns exec NS)
    try:
        for step in steps:
            if progress:
                progress(step)
            if step.netlink is not None and use_netlink:
                _apply_netlink(step, step.netlink, pool)
            else:
                here.run(step.argv, stdin=step.stdin)
            count += 1
    finally:
        pool.close()
    return count


def _apply_netlink(step: Step, change: Callable[[Netlink], None], pool: Netlink) -> None:
    from pyroute2 import NetlinkError

    if step.netlink is None:
        return
    try:
        change(pool)
    except NetlinkError as exc:
        if exc.code not in step.ok_codes:
            raise StepError(f"{step.summary}: netlink error {exc.code} ({exc}); command: {step.command()}") from None


# ---- step constructors: one per kind of change, each with its `ip` equivalent -------------------

def netns_add(name: str) -> Step:
    def do(_: Netlink) -> None:
        from pyroute2 import netns

        netns.create(name)

    return Step(f"create namespace {name}", ["ip", "netns", "add", name], netlink=do)


def link_add(ns: str, ifname: str, kind: str, *, peer: str | None = None, peer_ns: str | None = None) -> Step:
    argv = ["ip", "-n", ns, "link", "add", ifname, "type", kind]
    spec: dict[str, Any] = {"ifname": ifname, "kind": kind}
    if peer:
        argv += ["peer", "name", peer, "netns", peer_ns or ns]
        spec["peer"] = {"ifname": peer, "net_ns_fd": peer_ns or ns}
    if kind == "tun":
        argv = ["ip", "-n", ns, "tuntap", "add", "dev", ifname, "mode", "tun"]
        return Step(f"{ns}: create TUN device {ifname}", argv)
    return Step(f"{ns}: create {kind} {ifname}" + (f" (peer {peer} in {peer_ns})" if peer else ""), argv,
                netlink=lambda nl: nl(ns).link("add", **spec), ok_codes=(17,) if kind == "ipip" else ())


def link_set(ns: str, ifname: str, *, master: str | None = None, mac: str | None = None,
             mtu: int | None = None, up: bool = True) -> Step:
    argv = ["ip", "-n", ns, "link", "set", "dev", ifname]
    attrs: dict[str, Any] = {}
    if master:
        argv += ["master", master]
    if mac:
        argv += ["address", mac]
        attrs["address"] = mac
    if mtu:
        argv += ["mtu", str(mtu)]
        attrs["mtu"] = mtu
    if up:
        argv += ["up"]
        attrs["state"] = "up"

    def do(nl: Netlink) -> None:
        extra = {"master": nl.index(ns, master)} if master else {}
        nl(ns).link("set", index=nl.index(ns, ifname), **attrs, **extra)

    return Step(f"{ns}: set {ifname}" + (f" master {master}" if master else "") + (f" mac {mac}" if mac else "")
                + (" up" if up else ""), argv, netlink=do)


def addr_add(ns: str, ifname: str, cidr: str) -> Step:
    address, _, plen = cidr.partition("/")
    return Step(f"{ns}: address {cidr} on {ifname}", ["ip", "-n", ns, "addr", "add", cidr, "dev", ifname],
                netlink=lambda nl: nl(ns).addr("add", index=nl.index(ns, ifname), address=address,
                                               prefixlen=int(plen or 32)))


def route_replace(ns: str, dst: str, via: str, *, mtu: int | None = None, advmss: int | None = None) -> Step:
    argv = ["ip", "-n", ns, "route", "replace", dst, "via", via]
    metrics = {}
    if mtu:
        argv += ["mtu", str(mtu)]
        metrics["RTAX_MTU"] = mtu
    if advmss:
        argv += ["advmss", str(advmss)]
        metrics["RTAX_ADVMSS"] = advmss
    kwargs: dict[str, Any] = {"dst": dst, "gateway": via}
    if metrics:
        kwargs["metrics"] = metrics
    return Step(f"{ns}: route {dst} via {via}", argv, netlink=lambda nl: nl(ns).route("replace", **kwargs))


def sysctls(ns: str, values: dict[str, int], *, optional: bool = False) -> Step:
    """One `sysctl -w` for all of a namespace's keys (``-e``: ignore keys this kernel lacks)."""
    argv = Namespace(ns).argv(["sysctl", "-q"] + (["-e"] if optional else []) + [f"{k}={v}" for k, v in values.items()])
    return Step(f"{ns}: sysctl {', '.join(f'{k}={v}' for k, v in values.items())}", argv, kind="sysctl")


def ethtool_features(ns: str, ifname: str, features: str) -> Step:
    return Step(f"{ns}: ethtool {ifname} {features}", Namespace(ns).argv(["ethtool", "-K", ifname, *features.split()]),
                kind="ethtool")


def fdb_static(ns: str, port: str, mac: str) -> Step:
    return Step(f"{ns}: static FDB entry {mac} on {port}",
                ["bridge", "-n", ns, "fdb", "replace", mac, "dev", port, "master", "static"], kind="fdb")


def xdp_pass(ns: str, ifname: str, obj: str) -> Step:
    """An XDP program that passes every frame, on a veth whose peer's XDP program sends with XDP_TX: a
    veth delivers XDP_TX frames only to a peer that runs XDP itself (LAB-NOTES)."""
    return Step(f"{ns}: XDP_PASS on {ifname} (receives the LB fast path's XDP_TX)",
                ["ip", "-force", "-n", ns, "link", "set", "dev", ifname, "xdp", "obj", obj, "sec", "xdp"], kind="xdp")


def nft_load(ns: str, ruleset: str, what: str) -> Step:
    return Step(f"{ns}: nftables {what}", Namespace(ns).argv(["nft", "-f", "-"]), stdin=ruleset, kind="nft")
