"""Expands the lab's declarative data (netns/lab.toml) into a concrete plan for one lab.

The plan says which namespaces exist, which interfaces, addresses, routes, sysctls and offloads
each node gets, and which services run where, for one mode, engine, backend and client count.
It checks the network-safety rules on the way: every address inside 198.18.0.0/15, every interface
name at most 15 characters, nothing for the root namespace.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pktlb.core.l7.settings import L7_MODE
from pktlb.core.packet.addr import in_network, int_to_ip, ip_to_int
from pktlb.core.rewrite.registry import MODES, traits_of
from pktlb.lab.addressing import mac_for_ip
from pktlb.lab.capacity import capacity_args
from pktlb.lab.fastpath import missing_reason as fastpath_missing
from pktlb.lab.paths import BadPrefix, LabPaths, check_prefix

LAB_NETWORK = (ip_to_int("198.18.0.0"), 15)
MAX_BACKENDS = 64
MAX_CLIENTS = 16
MAX_SERVICE_TIME_MS = 60_000
MAX_CONCURRENT = 1024
DEFAULT_PREFIX = "pktlb-"
LAB_MODES = MODES + (L7_MODE,)  # the packet engine's four modes, and the L7 proxy layout
ENGINES = ("pktlb", "kernel", "haproxy", "none")
DECAP_CHOICES = ("auto", "kernel", "user")
TOPOLOGIES = ("one-arm", "two-arm")  # the layouts netns/lab.toml describes ([topology.*])


class LabError(RuntimeError):
    """A lab request that cannot be carried out; the message says why and what to do."""


@dataclass(frozen=True)
class LabOptions:
    mode: str
    backends: int = 3
    clients: int = 1
    scheduler: str = "maglev"
    prefix: str = DEFAULT_PREFIX
    engine: str = "pktlb"
    decap: str = "auto"
    lbs: int = 1  # 2..8: the LB tier (pktlb/lab/tier), N LBs behind a BGP router
    ecmp: str = "multipath"  # the tier's router: ordinary multipath route, or a resilient next-hop group
    bfd: bool = False  # the tier's BGP sessions with BFD (100 ms x 3)
    service_time: float = 0.0  # ms each request holds a backend slot (pktlb.lab.capacity); 0: none
    max_concurrent: int = 0  # requests a backend serves at once, the others queue; 0: unlimited
    topology: str = "one-arm"  # one-arm (the LB on the server segment) or two-arm (a director between the segments)
    tls: bool = False  # HTTPS on the VIP's tls_port too: the proxy ends it (l7), or the backends do (L4 modes)
    fastpath: str = "off"  # the pktlb engine's kernel fast path: off, xdp or tc ([lb] fastpath in its config)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Route:
    dst: str
    via: str
    mtu: int | None = None
    advmss: int | None = None


@dataclass
class Interface:
    ifname: str
    segment: str | None  # None: an interface not attached to a bridge (lo, tunnels)
    addresses: list[str] = field(default_factory=list)  # "a.b.c.d/len", the first is the primary
    port: str | None = None  # the bridge port (other end of the veth) in the switch namespace
    kind: str = "veth"  # veth (bridged), lo, ipip (kernel tunl0), tun (pktlb decap's TUN device)

    @property
    def mac(self) -> str | None:
        return mac_for_ip(self.addresses[0].split("/")[0]) if self.segment and self.addresses else None


@dataclass
class Node:
    name: str
    role: str
    index: int
    namespace: str
    interfaces: list[Interface]
    routes: list[Route]
    sysctls: dict[str, int]
    offloads: dict[str, str]
    services: list[str]
    decap: bool = False
    guard: bool = False
    kernel_lb: bool = False
    snat: str | None = None  # fullnat in the LB tier: this LB's own SNAT address (else the lab's)

    @property
    def address(self) -> str:
        """The node's primary address (first address of its first bridged interface)."""
        return next(i for i in self.interfaces if i.segment).addresses[0].split("/")[0]

    def interface(self, ifname: str) -> Interface:
        for iface in self.interfaces:
            if iface.ifname == ifname:
                return iface
        iface = Interface(ifname, None, kind="lo" if ifname == "lo" else "other")
        self.interfaces.append(iface)
        return iface


@dataclass
class ServiceSpec:
    name: str  # unique in the lab: "<node>/<service>"
    node: str
    namespace: str
    argv: list[str]
    ready_file: str | None = None
    requires: str | None = None


@dataclass
class Plan:
    options: LabOptions
    constants: dict[str, Any]
    statedir: str
    switch_namespace: str
    bridges: dict[str, str]  # segment -> bridge name
    switch_sysctls: dict[str, int]
    common_sysctls: dict[str, int]
    nodes: list[Node]
    services: list[ServiceSpec]
    decap_kind: str | None  # "kernel" (tunl0), "user" (pktlb decap), None (not tunnel mode)
    summaries: dict[str, str]
    layer: int = 4  # 7: the LB is an HTTP proxy owning the VIP (pktlb/lab/l7.py writes its config)
    engine_service: str | None = None  # the engine's lab service ("engine", "proxy", "haproxy"); None: no engine

    @property
    def namespaces(self) -> list[str]:
        return [self.switch_namespace] + [n.namespace for n in self.nodes]

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise LabError(f"no node {name!r} in this lab (nodes: {', '.join(n.name for n in self.nodes)})")

    def by_role(self, role: str) -> list[Node]:
        return [n for n in self.nodes if n.role == role]


def default_topology_path() -> Path:
    """netns/lab.toml beside the package (editable install), or $PKTLB_TOPOLOGY."""
    return Path(os.environ.get("PKTLB_TOPOLOGY") or Path(__file__).resolve().parents[2] / "netns" / "lab.toml")


def load_topology(path: str | Path | None = None) -> dict[str, Any]:
    with open(path or default_topology_path(), "rb") as fh:
        return tomllib.load(fh)


def node_name_pattern(prefix: str) -> re.Pattern[str]:
    """Namespace names a lab with this prefix may have created (used to find leftovers after a crash)."""
    return re.compile(rf"^{re.escape(prefix)}(sw|router|lb\d*|client\d*|be\d+)$")


def engine_section(data: dict[str, Any], engine: str, mode: str) -> dict[str, Any]:
    """The engine's table for this mode: its ``[engine.X.mode.M]`` keys replace the general ones."""
    section = dict(data["engine"][engine])
    section.update(section.pop("mode", {}).get(mode, {}))
    return section


def mode_default(data: dict[str, Any], mode: str, key: str, default: Any) -> Any:
    """A mode's own default (``scheduler``, ``layer``, ``compare_engines``) from netns/lab.toml."""
    return data["mode"].get(mode, {}).get(key, default)


def check_options(options: LabOptions, data: dict[str, Any]) -> None:
    if options.mode not in LAB_MODES:
        raise LabError(f"unknown mode {options.mode!r}: expected one of {', '.join(LAB_MODES)}")
    if options.engine not in ENGINES:
        raise LabError(f"unknown engine {options.engine!r}: expected one of {', '.join(ENGINES)}")
    if not 1 <= options.backends <= MAX_BACKENDS:
        raise LabError(f"--backends {options.backends}: expected 1 to {MAX_BACKENDS}")
    if not 1 <= options.clients <= MAX_CLIENTS:
        raise LabError(f"--clients {options.clients}: expected 1 to {MAX_CLIENTS}")
    try:
        check_prefix(options.prefix)
    except BadPrefix as exc:
        raise LabError(str(exc)) from None
    if not 0 <= options.service_time <= MAX_SERVICE_TIME_MS:
        raise LabError(f"--service-time {options.service_time}: expected 0 to {MAX_SERVICE_TIME_MS} milliseconds")
    if not 0 <= options.max_concurrent <= MAX_CONCURRENT:
        raise LabError(f"--max-concurrent {options.max_concurrent}: expected 0 (unlimited) to {MAX_CONCURRENT}")
    if options.decap not in DECAP_CHOICES:
        raise LabError(f"--decap {options.decap!r}: expected one of {', '.join(DECAP_CHOICES)}")
    topologies = data.get("topology", {})
    if options.topology not in topologies:
        raise LabError(f"--topology {options.topology!r}: expected one of {', '.join(topologies)}")
    layout = topologies[options.topology]
    if options.mode not in layout.get("modes", LAB_MODES):
        raise LabError(f"--topology {options.topology} cannot do mode {options.mode}: {layout.get('refusal', '')}")
    refused = layout.get("engines", {}).get(options.engine, {})
    if options.mode in refused.get("modes", ()):
        raise LabError(f"--topology {options.topology}: --engine {options.engine} cannot do mode {options.mode}: "
                       f"{refused.get('refusal', '')}")
    if options.topology != "one-arm" and options.lbs != 1:
        raise LabError(f"--topology {options.topology} has one LB: the LB tier (--lbs) is one-armed")
    if options.tls and (options.engine == "kernel" or options.lbs > 1):
        raise LabError("--tls works with --engine pktlb, haproxy or none and one LB (the kernel baseline and the "
                       "LB tier forward only the HTTP and iperf ports)")
    if options.fastpath != "off":
        if options.engine != "pktlb" or mode_default(data, options.mode, "layer", 4) != 4:
            raise LabError(f"--fastpath {options.fastpath}: only the pktlb packet engine has a fast path "
                           f"(got --engine {options.engine}, mode {options.mode})")
        problem = fastpath_missing(options.fastpath)
        if problem:
            raise LabError(f"--fastpath {options.fastpath}: {problem}")
    engine = data["engine"][options.engine]
    if options.mode not in engine.get("modes", LAB_MODES):
        raise LabError(f"--engine {options.engine} cannot do mode {options.mode}: {engine.get('refusal', '')}")


def expand(text: Any, values: dict[str, Any]) -> Any:
    """Fill {placeholders} in a string (recursively in lists and tables)."""
    if isinstance(text, list):
        return [expand(t, values) for t in text]
    if isinstance(text, dict):
        return {k: expand(v, values) for k, v in text.items()}
    if not isinstance(text, str):
        return text

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        offset = re.fullmatch(r"(\d+)\+i", key)
        if offset:
            return str(int(offset.group(1)) + values["i"])
        if key not in values:
            raise LabError(f"netns data: unknown placeholder {{{key}}} in {text!r}")
        return str(values[key])

    return re.sub(r"\{([^{}]+)\}", fill, text)


def merge(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """Tables are updated, lists appended to, plain values replaced."""
    out = copy.deepcopy(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        elif isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = out[key] + copy.deepcopy(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _mode_chain(data: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    section = data["mode"][mode]
    parent = section.get("inherits")
    return (_mode_chain(data, parent) if parent else []) + [section]


def _address_range(spec: str) -> list[str]:
    """'198.18.1.100-198.18.1.163/24' -> one 'a.b.c.d/24' per address."""
    span, _, plen = spec.partition("/")
    first, _, last = span.partition("-")
    lo, hi = ip_to_int(first), ip_to_int(last or first)
    if hi < lo or hi - lo > 1024:
        raise LabError(f"netns data: bad address range {spec!r}")
    return [f"{int_to_ip(a)}/{plen or 32}" for a in range(lo, hi + 1)]


def _check_address(cidr: str, where: str) -> None:
    address = cidr.split("/")[0]
    if not in_network(ip_to_int(address), *LAB_NETWORK):
        raise LabError(f"netns data: {where} address {address} is outside 198.18.0.0/15")


def _build_node(role: str, spec: dict[str, Any], i: int, values: dict[str, Any], options: LabOptions,
                switch: dict[str, Any], decap: dict[str, Any] | None) -> Node:
    local = {**values, "i": i, "suffix": "" if i == 1 else str(i)}
    name = expand(spec["name"], local)
    local["node"] = name
    interfaces = []
    for raw in expand(spec.get("interfaces", []), local):
        port = f"{switch['port_prefix'][raw['segment']]}{name}"
        interfaces.append(Interface(raw["ifname"], raw["segment"], [raw["address"]], port))
    node = Node(name=name, role=role, index=i, namespace=options.prefix + name, interfaces=interfaces,
                routes=[Route(**r) for r in expand(spec.get("routes", []), local)],
                sysctls=dict(spec.get("sysctls", {})), offloads=dict(spec.get("offloads", {})),
                services=list(spec.get("services", [])), decap=bool(spec.get("decap")),
                guard=bool(spec.get("guard")), kernel_lb=bool(spec.get("kernel_lb")))
    for extra in expand(spec.get("addresses", []), local):
        if "instances" in extra and i not in extra["instances"]:
            continue
        cidrs = _address_range(extra["range"]) if "range" in extra else [extra["address"]]
        node.interface(extra["ifname"]).addresses.extend(cidrs)
    if node.decap and decap:
        dev = expand(decap["interface"], local)
        node.interfaces.append(Interface(dev["ifname"], None, [dev["address"]] if "address" in dev else [],
                                         kind=dev["kind"]))
        node.sysctls.update(decap.get("sysctls", {}))
        node.services.extend(decap.get("services", []))
    for iface in node.interfaces:
        if len(iface.ifname) > 15 or (iface.port and len(iface.port) > 15):
            raise LabError(f"interface name {iface.port or iface.ifname!r} is longer than 15 characters")
        for cidr in iface.addresses:
            _check_address(cidr, f"{name}/{iface.ifname}")
    for route in node.routes:
        _check_address(route.via, f"{name} route via")
    return node


def make_plan(options: LabOptions, data: dict[str, Any], *, statedir: str, python: str, pktlb: str,
              kernel_has_ipip: bool, has_binary: Any = None) -> Plan:
    """The full plan of one lab; ``has_binary(name)`` says whether an optional program is installed."""
    check_options(options, data)
    constants = dict(data["constants"])
    counts = {"1": 1, "backends": options.backends, "clients": options.clients}
    engine = engine_section(data, options.engine, options.mode)
    decap_kind = None
    if traits_of(options.mode).needs_decapsulator:
        if options.decap == "kernel" and not kernel_has_ipip:
            raise LabError("--decap kernel: this kernel has no ipip module; use --decap user (pktlb decap)")
        decap_kind = "kernel" if options.decap == "kernel" or (options.decap == "auto" and kernel_has_ipip) else "user"
    nodes: list[Node] = []
    for role, base in data["node"].items():
        spec = base
        for mode_section in _mode_chain(data, options.mode):
            spec = merge(spec, mode_section.get(role, {}))
        spec = merge(spec, engine.get(role, {}))
        layout = data.get("topology", {}).get(options.topology, {})
        spec = merge(spec, layout.get(role, {}))
        spec.update(copy.deepcopy(layout.get("replace", {}).get(role, {})))  # e.g. routes: replaced, not appended
        decap = data["decap"][decap_kind] if decap_kind else None
        for i in range(1, counts[str(spec["count"])] + 1):
            nodes.append(_build_node(role, spec, i, constants, options, data["switch"], decap))
    values = {**constants, "python": python, "pktlb": pktlb, "statedir": statedir}
    paths = LabPaths.at(statedir)
    services: list[ServiceSpec] = []
    layer = int(mode_default(data, options.mode, "layer", 4))
    for node in nodes:
        if options.tls and layer == 4 and node.role == "backend":
            node.services.append("httpsd")  # the backends end TLS themselves: the LB carries ciphertext
        for service in node.services:
            sdef = data["service"][service]
            if sdef.get("requires") and has_binary is not None and not has_binary(sdef["requires"]):
                if service == engine.get("service"):
                    raise LabError(f"--engine {options.engine} needs {sdef['requires']}, which is not installed "
                                   "(`make deps` installs it)")
                continue
            ready = str(paths.ready_file(node.name, service)) if sdef.get("ready") else None
            argv = expand(sdef["argv"], {**values, "node": node.name, "address": node.address, "ready_file": ready})
            if sdef.get("capacity"):  # the backend's HTTP server takes the lab's capacity options
                argv += capacity_args(options.service_time, options.max_concurrent)
            services.append(ServiceSpec(f"{node.name}/{service}", node.name, node.namespace, argv, ready,
                                        sdef.get("requires")))
    summaries = {"mode": data["mode"][options.mode].get("summary", ""), "engine": engine.get("summary", ""),
                 "decap": data["decap"][decap_kind].get("summary", "") if decap_kind else "",
                 "topology": data.get("topology", {}).get(options.topology, {}).get("summary", "")}
    return Plan(options=options, constants=constants, statedir=statedir,
                switch_namespace=options.prefix + data["switch"]["node"], bridges=dict(data["switch"]["bridges"]),
                switch_sysctls=dict(data["switch"].get("sysctls", {})),
                common_sysctls=dict(data.get("common", {}).get("sysctls", {})), nodes=nodes, services=services,
                decap_kind=decap_kind, summaries=summaries, layer=layer,
                engine_service=engine.get("service"))
