"""BIRD 2 configurations for the LB tier, as pure functions of small frozen specs.

Two roles:

* the **router** (``router_config``): one eBGP session per LB, an explicit import filter that
  accepts only the lab's announced prefixes, nothing exported back, and kernel protocols that
  install what BGP learned with ``merge paths on`` (one route, N next hops = ECMP);
* the **speaker** on each LB (``speaker_config``): one eBGP session to the router and a static
  protocol ``announce`` holding the prefixes to announce.  It starts *disabled*: `pktlb announce`
  enables it once the engine is healthy and disables it to withdraw (``birdc enable/disable``).

Timers are the lab's fast ones (hold 3 s, keepalive 1 s, ``error wait time 1, 5``: BIRD's default
keeps a peer Idle for about a minute after a failure); BFD is optional (100 ms x 3).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

ANNOUNCE_PROTOCOL = "announce"  # the speaker's static protocol that `pktlb announce` switches
ROUTER_AS = 65000
LB_AS_BASE = 65100  # LB i speaks from AS 65100 + i (distinct ASes: no MED/AS tie-break subtleties)


class BirdConfigError(ValueError):
    """A spec that would render a wrong or unsafe configuration."""


@dataclass(frozen=True)
class Timers:
    hold: int = 3  # BIRD's minimum
    keepalive: int = 1
    connect_retry: int = 1
    error_wait: tuple[int, int] = (1, 5)


@dataclass(frozen=True)
class Bfd:
    min_rx_ms: int = 100
    min_tx_ms: int = 100
    multiplier: int = 3


@dataclass(frozen=True)
class Peer:
    name: str  # the BGP protocol's name in BIRD (letters, digits, '_')
    address: str
    asn: int


@dataclass(frozen=True)
class KernelExport:
    """Kernel routing table ``table`` gets the BGP routes whose prefix is inside one of ``within``."""

    name: str
    table: int | None  # None: the main table
    within: tuple[str, ...]
    exact: bool = False  # True: exactly these prefixes, not the longer ones inside them


@dataclass(frozen=True)
class RouterSpec:
    router_id: str
    local_address: str
    interface: str
    peers: tuple[Peer, ...]
    accept: tuple[str, ...]  # prefixes the LBs may announce (any length inside them)
    kernels: tuple[KernelExport, ...]
    local_as: int = ROUTER_AS
    timers: Timers = field(default_factory=Timers)
    bfd: Bfd | None = None
    log_path: str | None = None


@dataclass(frozen=True)
class SpeakerSpec:
    router_id: str
    local_address: str
    local_as: int
    interface: str
    router: Peer
    prefixes: tuple[str, ...]  # announced while the static protocol is enabled
    timers: Timers = field(default_factory=Timers)
    bfd: Bfd | None = None
    log_path: str | None = None


def _name(text: str) -> str:
    if not text or not text.replace("_", "a").isalnum() or not text[0].isalpha():
        raise BirdConfigError(f"BIRD protocol name {text!r}: letters, digits and '_', starting with a letter")
    return text


def _addr(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise BirdConfigError(f"not an IPv4 address: {text!r}") from None


def _net(text: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text)
    except ValueError:
        raise BirdConfigError(f"not an IPv4 prefix: {text!r}") from None


def _asn(value: int) -> int:
    if not 1 <= value <= 4294967294:
        raise BirdConfigError(f"AS number {value} out of range")
    return value


def _quoted(text: str) -> str:
    if '"' in text or "\n" in text:
        raise BirdConfigError(f"cannot quote {text!r}")
    return f'"{text}"'


def _head(router_id: str, log_path: str | None, role: str) -> list[str]:
    lines = [f"# BIRD 2 configuration: {role}; written by pktlb (pktlb/daemon/announce/birdconf.py).",
             f"router id {_addr(router_id)};"]
    if log_path:
        lines.append(f"log {_quoted(log_path)} {{ info, remote, warning, error, auth, fatal, bug }};")
    lines += ["", "protocol device { scan time 10; }"]
    return lines


def _bfd_block(interface: str, bfd: Bfd | None) -> list[str]:
    if bfd is None:
        return []
    return ["", "protocol bfd {",
            f"  interface {_quoted(interface)} {{ min rx interval {bfd.min_rx_ms} ms; "
            f"min tx interval {bfd.min_tx_ms} ms; multiplier {bfd.multiplier}; }};",
            "}"]


def _timer_lines(t: Timers) -> list[str]:
    if t.hold < 3 or not 1 <= t.keepalive < t.hold:
        raise BirdConfigError(f"hold {t.hold} s / keepalive {t.keepalive} s: hold must be >= 3 s and > keepalive")
    return [f"  hold time {t.hold};", f"  startup hold time {t.hold};", f"  keepalive time {t.keepalive};",
            f"  connect retry time {t.connect_retry};", f"  connect delay time {t.connect_retry};",
            f"  error wait time {t.error_wait[0]}, {t.error_wait[1]};"]


def prefix_set(prefixes: tuple[str, ...], exact: bool = False) -> str:
    """A BIRD prefix set matching each prefix and any longer one inside it (``[ a/24{24,32} ]``),
    or with ``exact`` only the prefixes themselves."""
    if not prefixes:
        raise BirdConfigError("an empty prefix set would match nothing")
    parts = [str(n) if exact else f"{n}{{{n.prefixlen},32}}" for n in map(_net, prefixes)]
    return "[ " + ", ".join(parts) + " ]"


def router_config(spec: RouterSpec) -> str:
    """The router's BIRD configuration (see the module docstring)."""
    if not spec.peers:
        raise BirdConfigError("the router needs at least one LB peer")
    names = [p.name for p in spec.peers]
    if len(set(names)) != len(names):
        raise BirdConfigError(f"duplicate peer names: {names}")
    lines = _head(spec.router_id, spec.log_path, "the router in front of the LB tier")
    lines += ["", "# Only the lab's service prefixes are accepted from an LB; nothing is sent back.",
              "filter lb_in {", f"  if net ~ {prefix_set(spec.accept)} then accept;", "  reject;", "}"]
    for k in spec.kernels:
        # BIRD attaches one kernel protocol per BIRD table: another kernel table gets a BIRD table
        # of its own, fed from master4 by a pipe that passes only its prefixes.
        wanted = f"source = RTS_BGP && net ~ {prefix_set(k.within, k.exact)}"
        where = "the main table" if k.table is None else f"kernel table {int(k.table)}"
        lines += ["", f"# {where}: the BGP routes for {', '.join(k.within)}, equal next hops merged (ECMP)."]
        table = "master4"
        if k.table is not None:
            table = f"t_{_name(k.name)}"
            lines += [f"ipv4 table {table};",
                      f"protocol pipe p_{k.name} {{ table master4; peer table {table}; "
                      f"export where {wanted}; import none; }}"]
        lines += [f"protocol kernel {_name(k.name)} {{"]
        if k.table is not None:
            lines.append(f"  kernel table {int(k.table)};")
        lines += ["  merge paths on;", f"  ipv4 {{ table {table}; import none; export where {wanted}; }};", "}"]
    lines += _bfd_block(spec.interface, spec.bfd)
    lines += ["", "template bgp lb_peer {", f"  local {_addr(spec.local_address)} as {_asn(spec.local_as)};",
              *_timer_lines(spec.timers), "  ipv4 { import filter lb_in; export none; };", "}"]
    for peer in spec.peers:
        lines += [f"protocol bgp {_name(peer.name)} from lb_peer {{",
                  f"  neighbor {_addr(peer.address)} as {_asn(peer.asn)};"]
        if spec.bfd is not None:
            lines.append("  bfd on;")
        lines.append("}")
    return "\n".join(lines) + "\n"


def speaker_config(spec: SpeakerSpec) -> str:
    """An LB's BIRD configuration: the session to the router and the (disabled) announcement."""
    lines = _head(spec.router_id, spec.log_path, "the BGP speaker of one LB")
    lines += ["", "# Enabled by `pktlb announce` while the engine is healthy, disabled to withdraw.",
              f"protocol static {ANNOUNCE_PROTOCOL} {{", "  disabled;", "  ipv4;"]
    if not spec.prefixes:
        raise BirdConfigError("a speaker with nothing to announce")
    lines += [f"  route {_net(p)} blackhole;" for p in spec.prefixes]
    lines += ["}"]
    lines += _bfd_block(spec.interface, spec.bfd)
    lines += ["", f"protocol bgp {_name(spec.router.name)} {{",
              f"  local {_addr(spec.local_address)} as {_asn(spec.local_as)};",
              f"  neighbor {_addr(spec.router.address)} as {_asn(spec.router.asn)};",
              *_timer_lines(spec.timers),
              f'  ipv4 {{ import none; export where proto = "{ANNOUNCE_PROTOCOL}"; next hop self; }};']
    if spec.bfd is not None:
        lines.append("  bfd on;")
    lines.append("}")
    return "\n".join(lines) + "\n"
