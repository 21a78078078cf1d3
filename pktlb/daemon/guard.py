"""The engine's guard: an nftables table it owns by name, so the namespace's own stack stays out of the way.

The engine sees every frame on its packet sockets before the netdev ingress hook; the kernel
behind it must neither answer nor forward what the engine handles (measured in LAB-NOTES: with
forwarding on, backends got two copies of every packet; with the VIP local, the kernel sent RSTs).
The guard drops, at ingress of the engine's interfaces:

* traffic to a VIP (the engine answers it, not this kernel);
* replies to a full-NAT source address and port range (the kernel would answer them with RST);
* replies from a NAT backend's address and port, unless addressed to this namespace itself (the
  kernel would forward them un-rewritten when it routes for the backends; health checks the engine
  itself sends still get their answers: ``fib daddr type != local``).

One table, ``netdev pktlb_guard``, replaced atomically on every change (reload, new interfaces) and
deleted on exit; its comment names the owner, so a table left by an engine killed with SIGKILL is
recognised and removed on the next start (``Guard.clear_stale``).  Every change is logged.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pktlb.adapters.nft import GUARD_FAMILY, GUARD_TABLE, Nft, table_comment
from pktlb.core.config import Config, ServiceConfig
from pktlb.core.rewrite.registry import traits_of

log = logging.getLogger("pktlb.guard")

GUARD_PRIORITY = -500  # before anything else at ingress
COMMENT_MAX = 120  # nftables keeps at most 128 bytes of a comment


@dataclass(frozen=True)
class GuardSpec:
    devices: tuple[str, ...]
    vips: tuple[str, ...] = ()
    snat: tuple[tuple[str, str, int, int], ...] = ()  # (source address, protocol, first port, last port)
    nat_replies: tuple[tuple[str, str, int], ...] = ()  # (backend address, protocol, port)
    owner: str = "pktlb"
    table: str = GUARD_TABLE

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
        return lines


def _set(items: Iterable[str]) -> str:
    values = sorted(set(items))
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


def _quote(text: str) -> str:
    return text.replace("\\", "/").replace('"', "'")[:COMMENT_MAX]


def guard_ruleset(spec: GuardSpec) -> str:
    """An nft script that replaces the guard table in one transaction (create, delete, define)."""
    devices = ", ".join(f'"{name}"' for name in spec.devices)
    head = f"{GUARD_FAMILY} {spec.table}"
    lines = [f"table {head}", f"delete table {head}", f"table {head} {{", f'  comment "{_quote(spec.owner)}"',
             "  chain ingress {",
             f"    type filter hook ingress devices = {{ {devices} }} priority {GUARD_PRIORITY}; policy accept;"]
    lines += [f"    {rule}" for rule in spec.rules()]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def default_replies_via_lb(svc: ServiceConfig) -> bool:
    return traits_of(svc.mode).replies_via_lb


def guard_spec(config: Config, devices: Sequence[str], owner: str, *,
               replies_via_lb: Callable[[ServiceConfig], bool] = default_replies_via_lb) -> GuardSpec:
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
                     nat_replies=tuple(sorted(replies)), owner=owner)


def owner_text(config_path: str | None = None) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
    return f"pktlb engine pid {os.getpid()} since {stamp}" + (f" config {config_path}" if config_path else "")


class Guard:
    """Installs, replaces and removes exactly one table (``spec.table``), logging each change."""

    def __init__(self, nft: Nft, table: str = GUARD_TABLE) -> None:
        self.nft, self.table = nft, table
        self.installed: GuardSpec | None = None

    def clear_stale(self) -> str | None:
        """Remove a guard table left behind (an engine killed with SIGKILL); its owner, or None."""
        text = self.nft.table_text(GUARD_FAMILY, self.table)
        if text is None:
            return None
        owner = table_comment(text) or "unknown owner"
        self.nft.delete_table(GUARD_FAMILY, self.table)
        log.warning("guard: removed table %s %s left by a previous engine (%s)", GUARD_FAMILY, self.table, owner)
        return owner

    def install(self, spec: GuardSpec) -> list[str]:
        """Install or atomically replace the table; the rules now in force."""
        if spec.table != self.table:
            raise ValueError(f"this guard owns table {self.table!r}, not {spec.table!r}")
        if not spec.devices:
            raise ValueError("the guard needs at least one interface")
        before = self.installed.rules() if self.installed else []
        self.nft.load(guard_ruleset(spec))
        after = spec.rules()
        if self.installed is None or self.installed.devices != spec.devices:
            log.info("guard: table %s %s on %s", GUARD_FAMILY, self.table, ", ".join(spec.devices))
        for rule in after:
            if rule not in before:
                log.info("guard: + %s", rule)
        for rule in before:
            if rule not in after:
                log.info("guard: - %s", rule)
        self.installed = spec
        return after

    def remove(self) -> bool:
        """Delete the table if this guard installed it (nothing else is touched)."""
        if self.installed is None:
            return False
        removed = self.nft.delete_table(GUARD_FAMILY, self.table)
        if removed:
            log.info("guard: table %s %s removed", GUARD_FAMILY, self.table)
        else:
            log.warning("guard: table %s %s was already gone", GUARD_FAMILY, self.table)
        self.installed = None
        return removed


def start_guard(config: Config, devices: Sequence[str], config_path: str, wanted: bool = True,
                nft: Nft | None = None) -> Guard | None:
    """What `pktlb run` does at start: remove a guard a killed engine left, then install its own on
    ``devices`` (None with ``wanted`` False: ``--no-guard``, the user keeps the kernel out of the way).
    NftError or ValueError when nft fails."""
    guard = Guard(nft or Nft())
    guard.clear_stale()
    if not wanted:
        log.info("guard: not installed (--no-guard): this namespace's kernel must itself neither answer nor "
                 "forward VIP traffic")
        return None
    guard.install(guard_spec(config, devices, owner_text(config_path)))
    return guard
