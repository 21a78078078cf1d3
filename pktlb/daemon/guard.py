"""The engine's guard: an nftables table it owns by name, so the namespace's own stack stays out of the way.

The kernel behind the engine must neither answer nor forward what the engine handles (measured in
LAB-NOTES: with forwarding on, backends got two copies of every packet; with the VIP local, the
kernel sent RSTs).  The guard's chain must run after the engine's packet sockets got their copy
(net/core/dev.c, ``__netif_receive_skb_core``: ETH_P_ALL taps, then tc ingress, then netdev ingress,
then the per-protocol deliveries: ETH_P_IP packet sockets and ``ip_rcv``, whose first hook is ip
prerouting), so where it hooks follows where the engine reads (``GuardHook``, chosen by the fast
path's hook, pktlb.daemon.readpoint):

* ``netdev ingress``: the engine reads with ETH_P_ALL sockets (no fast path, or XDP before them);
* ``ip prerouting``, matching the engine's interfaces by name: the engine reads with ETH_P_IP
  sockets, after tc ingress (the tc fast path), which a netdev ingress drop would starve.

The guard drops, on the engine's interfaces:

* traffic to a VIP (the engine answers it, not this kernel);
* replies to a full-NAT source address and port range (the kernel would answer them with RST);
* replies from a NAT backend's address and port, unless addressed to this namespace itself (the
  kernel would forward them un-rewritten when it routes for the backends; health checks the engine
  itself sends still get their answers: ``fib daddr type != local``).

One table, ``pktlb_guard`` (in the hook's family), replaced atomically on every change (reload, new interfaces) and
deleted on exit; its comment names the owner, so a table left by an engine killed with SIGKILL is
recognised and removed on the next start (``Guard.clear_stale``).  Every change is logged.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pktlb.adapters.nft import GUARD_FAMILY, GUARD_TABLE, Nft, NftError, table_comment
from pktlb.core.config import Config, ServiceConfig
from pktlb.core.rewrite.registry import traits_of

log = logging.getLogger("pktlb.guard")

GUARD_PRIORITY = -500  # before anything else at its hook (ip prerouting: before defrag, -400, and conntrack)
COMMENT_MAX = 120  # nftables keeps at most 128 bytes of a comment


@dataclass(frozen=True)
class GuardHook:
    """Where the guard's chain runs: a family and hook, and whether the hook itself is per device."""

    family: str
    hook: str
    per_device: bool  # netdev: `devices = {...}` in the chain; else every rule matches `iifname`

    def chain_type(self, devices: Sequence[str]) -> str:
        where = f" devices = {{ {', '.join(_quoted(devices))} }}" if self.per_device else ""
        return f"type filter hook {self.hook}{where} priority {GUARD_PRIORITY}; policy accept;"

    def match_devices(self, devices: Sequence[str]) -> str:
        """What each rule starts with to keep to the engine's interfaces ('' where the hook is per device)."""
        return "" if self.per_device else f"iifname {_set(_quoted(devices))} "


NETDEV_INGRESS = GuardHook(GUARD_FAMILY, "ingress", per_device=True)
IP_PREROUTING = GuardHook("ip", "prerouting", per_device=False)
GUARD_HOOKS = (NETDEV_INGRESS, IP_PREROUTING)


@dataclass(frozen=True)
class GuardSpec:
    devices: tuple[str, ...]
    vips: tuple[str, ...] = ()
    snat: tuple[tuple[str, str, int, int], ...] = ()  # (source address, protocol, first port, last port)
    nat_replies: tuple[tuple[str, str, int], ...] = ()  # (backend address, protocol, port)
    owner: str = "pktlb"
    table: str = GUARD_TABLE
    hook: GuardHook = NETDEV_INGRESS

    def rules(self) -> list[str]:
        """The chain's rules, one per line, each with a comment saying whose traffic it keeps away."""
        lines = []
        if self.vips:
            lines.append(f"ip daddr {_set(self.vips)} counter drop comment \"VIP traffic: the engine's\"")
        for address, proto, first, last in self.snat:
            lines.append(f"ip daddr {address} {proto} dport {first}-{last} counter drop "
                         "comment \"full-NAT replies: the engine's\"")
        for proto in sorted({proto for _, proto, _ in self.nat_replies}):
            pairs = sorted({f"{address} . {port}" for address, p, port in self.nat_replies if p == proto})
            lines.append(f"fib daddr type != local ip saddr . {proto} sport {{ {', '.join(pairs)} }} counter drop "
                         "comment \"NAT replies: the engine rewrites them\"")
        devices = self.hook.match_devices(self.devices)
        return [devices + line for line in lines]


def _set(items: Iterable[str]) -> str:
    values = sorted(set(items))
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


def _quoted(names: Iterable[str]) -> list[str]:
    return [f'"{name}"' for name in names]


def _quote(text: str) -> str:
    return text.replace("\\", "/").replace('"', "'")[:COMMENT_MAX]


def guard_ruleset(spec: GuardSpec) -> str:
    """An nft script that replaces the guard table in one transaction (create, delete, define)."""
    head = f"{spec.hook.family} {spec.table}"
    lines = [f"table {head}", f"delete table {head}", f"table {head} {{", f'  comment "{_quote(spec.owner)}"',
             f"  chain {spec.hook.hook} {{", f"    {spec.hook.chain_type(spec.devices)}"]
    lines += [f"    {rule}" for rule in spec.rules()]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def default_replies_via_lb(svc: ServiceConfig) -> bool:
    return traits_of(svc.mode).replies_via_lb


def guard_spec(config: Config, devices: Sequence[str], owner: str, *,
               replies_via_lb: Callable[[ServiceConfig], bool] = default_replies_via_lb,
               hook: GuardHook = NETDEV_INGRESS) -> GuardSpec:
    """What the guard must drop for ``config``'s services on ``devices``.

    A service whose replies come back through the LB gets a full-NAT rule when it has a SNAT
    address, else a NAT-replies rule for its backends.
    """
    vips: set[str] = set()
    snat: set[tuple[str, str, int, int]] = set()
    replies: set[tuple[str, str, int]] = set()
    for svc in config.services:
        vips.add(svc.vip)
        if not replies_via_lb(svc):
            continue
        if svc.snat_address:
            snat.add((svc.snat_address, svc.protocol, *svc.snat_ports))
        else:
            replies.update((be.address, svc.protocol, be.port) for be in svc.backends)
    return GuardSpec(devices=tuple(devices), vips=tuple(sorted(vips)), snat=tuple(sorted(snat)),
                     nat_replies=tuple(sorted(replies)), owner=owner, hook=hook)


def owner_text(config_path: str | None = None) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
    return f"pktlb engine pid {os.getpid()} since {stamp}" + (f" config {config_path}" if config_path else "")


class Guard:
    """Installs, replaces and removes exactly one table (``table`` in ``hook``'s family), logging each change."""

    def __init__(self, nft: Nft, table: str = GUARD_TABLE, hook: GuardHook = NETDEV_INGRESS) -> None:
        self.nft, self.table, self.hook = nft, table, hook
        self.installed: GuardSpec | None = None

    @property
    def family(self) -> str:
        return self.hook.family

    def clear_stale(self) -> str | None:
        """Remove a guard table left behind (an engine killed with SIGKILL) at any hook; its owner, or None."""
        found = None
        for family in sorted({h.family for h in GUARD_HOOKS}):
            text = self.nft.table_text(family, self.table)
            if text is None:
                continue
            found = table_comment(text) or "unknown owner"
            self.nft.delete_table(family, self.table)
            log.warning("guard: removed table %s %s left by a previous engine (%s)", family, self.table, found)
        return found

    def spec(self, config: Config, devices: Sequence[str], owner: str) -> GuardSpec:
        """What this guard must drop for ``config`` on ``devices``, at its hook."""
        return guard_spec(config, devices, owner, hook=self.hook)

    def install(self, spec: GuardSpec) -> list[str]:
        """Install or atomically replace the table; the rules now in force."""
        if spec.table != self.table:
            raise ValueError(f"this guard owns table {self.table!r}, not {spec.table!r}")
        if spec.hook != self.hook:
            raise ValueError(f"this guard hooks {self.hook.family} {self.hook.hook}, not "
                             f"{spec.hook.family} {spec.hook.hook}")
        if not spec.devices:
            raise ValueError("the guard needs at least one interface")
        before = self.installed.rules() if self.installed else []
        self.nft.load(guard_ruleset(spec))
        after = spec.rules()
        if self.installed is None or self.installed.devices != spec.devices:
            log.info("guard: table %s %s (hook %s) on %s", self.family, self.table, self.hook.hook,
                     ", ".join(spec.devices))
        for rule in after:
            if rule not in before:
                log.info("guard: + %s", rule)
        for rule in before:
            if rule not in after:
                log.info("guard: - %s", rule)
        self.installed = spec
        return after

    def update(self, config: Config, devices: Sequence[str], owner: str) -> None:
        """Follow a new config or backend set; a failure is logged and the previous rules stay."""
        try:
            self.install(self.spec(config, devices, owner))
        except (NftError, ValueError) as exc:
            log.error("guard not updated, the previous rules stay: %s", exc)

    def remove(self) -> bool:
        """Delete the table if this guard installed it (nothing else is touched)."""
        if self.installed is None:
            return False
        try:
            removed = self.nft.delete_table(self.family, self.table)
        except NftError as exc:
            log.error("guard: table not removed (%s); the next start removes it", exc)
            return False
        if removed:
            log.info("guard: table %s %s removed", self.family, self.table)
        else:
            log.warning("guard: table %s %s was already gone", self.family, self.table)
        self.installed = None
        return removed


def start_guard(config: Config, devices: Sequence[str], config_path: str, wanted: bool = True,
                nft: Nft | None = None, hook: GuardHook = NETDEV_INGRESS) -> Guard | None:
    """What `pktlb run` does at start: remove a guard a killed engine left, then install its own at
    ``hook`` on ``devices`` (None with ``wanted`` False: ``--no-guard``, the user keeps the kernel out of
    the way).  NftError or ValueError when nft fails."""
    guard = Guard(nft or Nft(), hook=hook)
    guard.clear_stale()
    if not wanted:
        log.info("guard: not installed (--no-guard): this namespace's kernel must itself neither answer nor "
                 "forward VIP traffic")
        return None
    guard.install(guard.spec(config, devices, owner_text(config_path)))
    return guard
