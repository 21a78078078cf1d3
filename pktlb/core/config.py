"""TOML configuration validated into explicit, frozen objects.

Every error names the key (as a path such as ``service[0].backend[2].weight``), the bad value and
what was expected.  Parsing is pure (``parse_config`` takes text); ``pktlb.adapters.configfile.load_config`` reads a file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Any

from pktlb.core.config_reader import ConfigError as ConfigError  # re-exported: callers catch it from here
from pktlb.core.config_reader import Section as _Section  # the table reader every config module shares
from pktlb.core.l7.settings import L7_MODE, L7Config, parse_l7
from pktlb.core.rewrite.registry import MODES as MODES  # re-exported for the CLI's choices
from pktlb.core.rewrite.registry import traits_of
from pktlb.core.sched.maglev import check_table_size
from pktlb.core.sched.registry import scheduler_names

PROTOCOLS = ("tcp", "udp")
CHECK_TYPES = ("icmp", "tcp", "http")
DEFAULT_SCHEDULER = "maglev"
DEFAULT_SEED = 0x706B746C  # "pktl"


@dataclass(frozen=True)
class BackendConfig:
    name: str
    address: str
    port: int
    weight: int = 1
    mac: str | None = None
    # [service.backend.health]: the service's health settings with this backend's overrides applied
    # (None: the backend uses the service's settings as they are).
    health: HealthConfig | None = None


@dataclass(frozen=True)
class HealthConfig:
    checks: tuple[str, ...] = ()
    interval: float = 1.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    http_path: str = "/health"
    http_status: int = 200
    http_body: str = ""
    encapsulated_icmp: bool = False  # tunnel mode: probe through the IP-in-IP path, as Katran does


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    vip: str
    port: int
    protocol: str
    mode: str
    backends: tuple[BackendConfig, ...]
    scheduler: str = DEFAULT_SCHEDULER
    maglev_table_size: int = 65537
    mtu: int = 1500
    snat_address: str | None = None
    snat_ports: tuple[int, int] = (20000, 59999)
    on_backend_down: str = "reschedule"
    health: HealthConfig = field(default_factory=HealthConfig)
    l7: L7Config | None = None  # mode "l7": routes and limits for `pktlb proxy` (pktlb.core.l7.settings)


@dataclass(frozen=True)
class FlowConfig:
    max_entries: int = 1_000_000
    syn_timeout: float = 5.0
    tcp_timeout: float = 300.0
    fin_timeout: float = 10.0
    udp_timeout: float = 30.0


FASTPATH_HOOKS = ("off", "xdp", "tc")
XDP_MODES = ("native", "generic")  # the driver's XDP, or the kernel's generic (skb) XDP after receive steering


@dataclass(frozen=True)
class LbConfig:
    # lb.interface: one name or a list; empty (left out): every interface that is up, except loopback.
    interfaces: tuple[str, ...] = ()
    address: str = "198.18.0.2"
    mac: str | None = None
    gateway: str | None = None
    gateway_mac: str | None = None
    control_socket: str = "/run/pktlb/pktlb.sock"
    hash_seed: int = DEFAULT_SEED
    capture_dir: str | None = None
    fastpath: str = "off"  # the kernel fast path: off, xdp or tc (pktlb run --fastpath overrides it)
    xdp_mode: str = "native"  # how the fast path attaches at xdp: native (the driver's) or generic (skb, after RPS)

    @property
    def interface(self) -> str:
        """The first configured interface ("" when left out): what single-interface callers show."""
        return self.interfaces[0] if self.interfaces else ""


@dataclass(frozen=True)
class Config:
    lb: LbConfig
    flows: FlowConfig
    services: tuple[ServiceConfig, ...]


def parse_backend(table: Any, path: str, service_port: int, service_health: HealthConfig | None = None) -> BackendConfig:
    """One backend table checked and typed: the config file's, or a backend given on the command line."""
    s = _Section(table, path, {"name", "address", "port", "weight", "mac", "health"})
    address = s.ipv4("address")
    raw_health = s.get("health", dict, None)
    return BackendConfig(
        name=s.get("name", str, address),
        address=address,
        port=s.int_in("port", 1, 65535, service_port),
        weight=s.int_in("weight", 0, 1000, 1),
        mac=s.mac("mac"),
        health=None if raw_health is None else _health(raw_health, s.key("health"), service_health),
    )


def _health(table: Any, path: str, base: HealthConfig | None = None) -> HealthConfig:
    """A [health] table; keys it leaves out take their value from ``base`` (the service's, for a backend)."""
    base = base or HealthConfig()
    s = _Section(table, path, {"checks", "interval", "timeout", "rise", "fall", "http_path", "http_status",
                               "http_body", "encapsulated_icmp"})
    checks = s.get("checks", list, list(base.checks))
    for i, check in enumerate(checks):
        if check not in CHECK_TYPES:
            raise ConfigError(f"{path}.checks[{i}]", check, f"one of {', '.join(CHECK_TYPES)}")
    return HealthConfig(
        checks=tuple(checks), interval=s.positive("interval", base.interval),
        timeout=s.positive("timeout", base.timeout),
        rise=s.int_in("rise", 1, 100, base.rise), fall=s.int_in("fall", 1, 100, base.fall),
        http_path=s.get("http_path", str, base.http_path),
        http_status=s.int_in("http_status", 100, 599, base.http_status),
        http_body=s.get("http_body", str, base.http_body),
        encapsulated_icmp=s.get("encapsulated_icmp", bool, base.encapsulated_icmp),
    )


def _service(table: Any, path: str) -> ServiceConfig:
    s = _Section(table, path, {"name", "vip", "port", "protocol", "mode", "scheduler", "maglev_table_size",
                               "mtu", "snat_address", "snat_ports", "on_backend_down", "health", "backend",
                               "l7", "route"})
    port = s.int_in("port", 1, 65535)
    mode = s.choice("mode", MODES + (L7_MODE,))
    health = _health(s.get("health", dict, {}), s.key("health"))
    raw_backends = s.get("backend", list, [])
    backends = tuple(parse_backend(b, f"{path}.backend[{i}]", port, health) for i, b in enumerate(raw_backends))
    if traits_of(mode).keeps_ports:
        for i, b in enumerate(backends):
            if b.port != port:
                raise ConfigError(f"{path}.backend[{i}].port", b.port,
                                  f"{port}, the service port: mode {mode} does not rewrite ports")
    names = [b.name for b in backends]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ConfigError(f"{path}.backend[{i}].name", name, "a name not used by another backend")
    l7 = None
    if mode == L7_MODE:
        l7 = parse_l7(s.get("l7", dict, {}), s.get("route", list, []), path, names, s.get("protocol", str, "tcp"))
    for key in ("l7", "route"):
        if l7 is None and key in table:
            raise ConfigError(s.key(key), table[key], f"nothing: [service.{key}] is for mode l7 (the mode is {mode})")
    snat_ports = s.get("snat_ports", list, [20000, 59999], expected="a list [first, last] of ports")
    if (len(snat_ports) != 2 or not all(isinstance(p, int) and 1024 <= p <= 65535 for p in snat_ports)
            or snat_ports[0] > snat_ports[1]):
        raise ConfigError(s.key("snat_ports"), snat_ports, "a list [first, last] of ports from 1024 to 65535")
    snat_address = s.ipv4("snat_address", None)
    if traits_of(mode).needs_snat and snat_address is None:
        raise ConfigError(s.key("snat_address"), None, "an LB-owned IPv4 address (required for mode fullnat)")
    scheduler = s.choice("scheduler", tuple(scheduler_names()), DEFAULT_SCHEDULER)
    table_size = s.int_in("maglev_table_size", 3, 10_000_019, 65537)
    if scheduler == "maglev":
        try:
            check_table_size(table_size, len(backends))
        except ValueError as exc:
            raise ConfigError(s.key("maglev_table_size"), table_size, str(exc).split("expected ", 1)[-1]) from None
    return ServiceConfig(
        name=s.get("name", str, path), vip=s.ipv4("vip"), port=port, protocol=s.choice("protocol", PROTOCOLS, "tcp"),
        mode=mode, backends=backends, scheduler=scheduler,
        maglev_table_size=table_size,
        mtu=s.int_in("mtu", 576, 65535, 1500), snat_address=snat_address,
        snat_ports=(snat_ports[0], snat_ports[1]),
        on_backend_down=s.choice("on_backend_down", ("reschedule", "drop"), "reschedule"),
        health=health, l7=l7,
    )


def config_from_dict(data: dict[str, Any]) -> Config:
    root = _Section(data, "", {"lb", "flows", "service"})
    lbs = _Section(root.get("lb", dict, {}), "lb", {"interface", "address", "mac", "gateway", "gateway_mac",
                                                   "control_socket", "hash_seed", "capture_dir", "fastpath",
                                                   "xdp_mode"})
    lb = LbConfig(
        interfaces=_interfaces(lbs), address=lbs.ipv4("address", "198.18.0.2"), mac=lbs.mac("mac"),
        gateway=lbs.ipv4("gateway", None), gateway_mac=lbs.mac("gateway_mac"),
        control_socket=lbs.get("control_socket", str, "/run/pktlb/pktlb.sock"),
        hash_seed=lbs.int_in("hash_seed", 0, 2**32 - 1, DEFAULT_SEED), capture_dir=lbs.get("capture_dir", str, None),
        fastpath=lbs.choice("fastpath", FASTPATH_HOOKS, "off"), xdp_mode=lbs.choice("xdp_mode", XDP_MODES, "native"),
    )
    fs = _Section(root.get("flows", dict, {}), "flows", {"max_entries", "syn_timeout", "tcp_timeout",
                                                        "fin_timeout", "udp_timeout"})
    flows = FlowConfig(
        max_entries=fs.int_in("max_entries", 1, 50_000_000, 1_000_000), syn_timeout=fs.positive("syn_timeout", 5.0),
        tcp_timeout=fs.positive("tcp_timeout", 300.0), fin_timeout=fs.positive("fin_timeout", 10.0),
        udp_timeout=fs.positive("udp_timeout", 30.0),
    )
    raw_services = root.get("service", list, expected="one or more [[service]] tables")
    if not raw_services:
        raise ConfigError("service", raw_services, "one or more [[service]] tables")
    services = tuple(_service(t, f"service[{i}]") for i, t in enumerate(raw_services))
    check_services(lb, services)
    return Config(lb=lb, flows=flows, services=services)


def _interfaces(lbs: _Section) -> tuple[str, ...]:
    expected = "a string (an interface name) or a list of them (left out: every interface that is up)"
    raw = lbs.get("interface", (str, list), [], expected=expected)
    names = [raw] if isinstance(raw, str) else raw
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name or len(name) > 15 or "/" in name or name.strip() != name:
            raise ConfigError(lbs.key("interface") + (f"[{i}]" if isinstance(raw, list) else ""), name,
                              "an interface name (1-15 characters, no '/' or spaces)")
    if len(set(names)) != len(names):
        raise ConfigError(lbs.key("interface"), raw, "each interface named once")
    return tuple(names)


def check_services(lb: LbConfig, services: tuple[ServiceConfig, ...]) -> None:
    """Rules across services, checked for the file and again for backends added at run time."""
    seen: dict[tuple[str, str, int], int] = {}
    for i, svc in enumerate(services):
        key = (svc.protocol, svc.vip, svc.port)
        if key in seen:
            raise ConfigError(f"service[{i}].vip", svc.vip, f"a VIP/port/protocol not already used by service[{seen[key]}]")
        seen[key] = i
    # A NAT reply is mapped back to its service by (protocol, backend address, backend port) alone.
    nat_owner: dict[tuple[str, str, int], int] = {}
    for i, svc in enumerate(services):
        if not traits_of(svc.mode).reverse_nat:
            continue
        for j, be in enumerate(svc.backends):
            owner = nat_owner.setdefault((svc.protocol, be.address, be.port), i)
            if owner != i:
                raise ConfigError(f"service[{i}].backend[{j}].port", be.port,
                                  f"a backend address:port not used by NAT service[{owner}] too "
                                  "(replies could not be told apart)")
    _check_address_roles(lb, services)


def _check_address_roles(lb: LbConfig, services: tuple[ServiceConfig, ...]) -> None:
    """Each address has one role: the LB's own, a VIP, a SNAT address or a backend's.  Mixing them would make
    the engine forward to itself, or drop a backend's replies as spoofed (a VIP as source)."""
    roles: dict[str, tuple[str, str]] = {lb.address: ("the LB's address", "lb.address")}
    packet_services = [(i, svc) for i, svc in enumerate(services) if svc.l7 is None]  # a proxy may share addresses
    claims = [(svc.vip, "a VIP", f"service[{i}].vip") for i, svc in packet_services]
    claims += [(svc.snat_address, "a SNAT address", f"service[{i}].snat_address")
               for i, svc in packet_services if svc.snat_address]
    claims += [(be.address, "a backend's address", f"service[{i}].backend[{j}].address")
               for i, svc in packet_services for j, be in enumerate(svc.backends)]
    for address, role, key in claims:
        other_role, other_key = roles.setdefault(address, (role, key))
        if other_role != role:
            raise ConfigError(key, address, f"an address that is not also {other_role} ({other_key})")


def parse_config(text: str) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("(file)", "", f"valid TOML ({exc})") from None
    return config_from_dict(data)
