"""The LB tier's address plan and what it adds to a lab, as pure functions (no I/O).

With ``--lbs N`` (2..8) the lab has LBs ``lb1``..``lbN`` at 198.18.0.(200+i), AS 65100+i, each
running the engine, a BIRD speaker and `pktlb announce`; the router (198.18.0.1, AS 65000) runs
BIRD with one eBGP session per LB.  What each LB announces:

* the VIP, /32;
* nat: also 0.0.0.0/0, which the router installs in table 100 only; a rule sends what the backends
  send (their replies) to that table, so replies reach a live LB for un-NAT, whichever it is;
* fullnat: also its own SNAT address 198.18.2.i/32 (each LB's flows come back to that LB).

The router hashes flows over the next hops with fib_multipath_hash_policy 3 on the 5-tuple
(fields 0x0037) and a pinned seed.  ``--ecmp resilient``: BIRD installs into table 200 instead and
`pktlb nhsync` keeps a resilient next-hop group in the main table.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pktlb.core.rewrite.registry import traits_of
from pktlb.daemon.announce import birdconf as bc

MAX_LBS = 8
LB_ADDRESS_BASE = 200  # lb i: 198.18.0.(200 + i)
SNAT_NETWORK = "198.18.2.0/24"  # fullnat: lb i owns 198.18.2.i
RETURN_TABLE = 100  # nat: where the router looks up what the backends send
BIRD_TABLE = 200  # --ecmp resilient: BIRD's routes land here, nhsync mirrors them
BACKEND_SOURCES = "198.18.0.0/25"  # the backends' addresses (198.18.0.11-74): the return rule's match
HASH_SEED = 2544  # fib_multipath_hash_seed on the router: reproducible flow placement
HASH_FIELDS = 0x0037  # source/destination address, protocol, source/destination port
ECMP_KINDS = ("multipath", "resilient")


class TierError(ValueError):
    """A tier that cannot be built as asked (too many LBs, an unknown ECMP kind ...)."""


@dataclass(frozen=True)
class TierOptions:
    lbs: int
    mode: str
    ecmp: str = "multipath"
    bfd: bool = False


@dataclass(frozen=True)
class TierLb:
    name: str
    index: int
    address: str
    asn: int
    snat: str | None  # fullnat only


@dataclass
class TierPlan:
    options: TierOptions
    vip: str
    router_address: str
    lbs: list[TierLb]
    announced: dict[str, tuple[str, ...]]  # lb name -> prefixes it announces
    router_sysctls: dict[str, int]
    router_rules: list[list[str]] = field(default_factory=list)  # `ip rule add ...` arguments
    files: dict[str, str] = field(default_factory=dict)  # path relative to the state dir -> text

    def rules_argv(self, namespace: str) -> list[list[str]]:
        return [["ip", "-n", namespace, "rule", "add", *rule] for rule in self.router_rules]

    def lb(self, name: str) -> TierLb:
        for lb in self.lbs:
            if lb.name == name:
                return lb
        raise TierError(f"no LB {name!r} in this tier (LBs: {', '.join(x.name for x in self.lbs)})")


def check_tier(options: TierOptions) -> None:
    if not 2 <= options.lbs <= MAX_LBS:
        raise TierError(f"--lbs {options.lbs}: the LB tier has 2 to {MAX_LBS} LBs (address plan 198.18.0.201-"
                        f"{LB_ADDRESS_BASE + MAX_LBS}); --lbs 1 is the single-LB lab")
    if options.ecmp not in ECMP_KINDS:
        raise TierError(f"--ecmp {options.ecmp!r}: expected one of {', '.join(ECMP_KINDS)}")


def lb_address(i: int) -> str:
    return f"198.18.0.{LB_ADDRESS_BASE + i}"


def snat_address(i: int) -> str:
    return str(ipaddress.IPv4Network(SNAT_NETWORK).network_address + i)


def bird_paths(node: str) -> dict[str, str]:
    """File names (relative to the state dir) of one BIRD: config, control socket, pid file, log."""
    return {"config": f"bird/{node}.conf", "socket": f"bird/{node}.ctl", "pid": f"bird/{node}.pid",
            "log": f"logs/bird-{node}.log"}


def announce_paths(node: str) -> dict[str, str]:
    return {"control": f"announce-{node}.sock", "journal": f"announce-{node}.jsonl"}


def engine_socket(node: str) -> str:
    return f"pktlb-{node}.sock"


def make_tier(options: TierOptions, *, vip: str, router_address: str, statedir: str) -> TierPlan:
    check_tier(options)
    traits = traits_of(options.mode)
    lbs = [TierLb(f"lb{i}", i, lb_address(i), bc.LB_AS_BASE + i, snat_address(i) if traits.needs_snat else None)
           for i in range(1, options.lbs + 1)]
    announced: dict[str, tuple[str, ...]] = {}
    for lb in lbs:
        prefixes = [f"{vip}/32"]
        if traits.reverse_nat:  # backends' default route leads to the LBs
            prefixes.append("0.0.0.0/0")
        if lb.snat:
            prefixes.append(f"{lb.snat}/32")
        announced[lb.name] = tuple(prefixes)
    sysctls = {"net.ipv4.fib_multipath_hash_policy": 3, "net.ipv4.fib_multipath_hash_fields": HASH_FIELDS,
               "net.ipv4.fib_multipath_hash_seed": HASH_SEED}
    rules = []
    if traits.reverse_nat:
        rules.append(["from", BACKEND_SOURCES, "iif", "eth0", "lookup", str(RETURN_TABLE), "priority", "100"])
    plan = TierPlan(options, vip, router_address, lbs, announced, sysctls, rules)
    bfd = bc.Bfd() if options.bfd else None
    plan.files[bird_paths("router")["config"]] = bc.router_config(router_spec(plan, statedir, bfd))
    for lb in lbs:
        spec = bc.SpeakerSpec(router_id=lb.address, local_address=lb.address, local_as=lb.asn, interface="eth0",
                              router=bc.Peer("uplink", router_address, bc.ROUTER_AS), prefixes=announced[lb.name],
                              bfd=bfd, log_path=f"{statedir}/{bird_paths(lb.name)['log']}")
        plan.files[bird_paths(lb.name)["config"]] = bc.speaker_config(spec)
    return plan


def router_spec(plan: TierPlan, statedir: str, bfd: bc.Bfd | None) -> bc.RouterSpec:
    services = [f"{plan.vip}/32"] + [f"{lb.snat}/32" for lb in plan.lbs if lb.snat]
    main_table = None if plan.options.ecmp == "multipath" else BIRD_TABLE
    kernels = [bc.KernelExport("kvip", main_table, tuple(services))]
    accept = list(services)
    if traits_of(plan.options.mode).reverse_nat:
        kernels.append(bc.KernelExport("kret", RETURN_TABLE, ("0.0.0.0/0",), exact=True))
        accept.append("0.0.0.0/0")
    return bc.RouterSpec(router_id=plan.router_address, local_address=plan.router_address, interface="eth0",
                         peers=tuple(bc.Peer(lb.name, lb.address, lb.asn) for lb in plan.lbs),
                         accept=tuple(accept), kernels=tuple(kernels), bfd=bfd,
                         log_path=f"{statedir}/{bird_paths('router')['log']}")


def bird_argv(statedir: str, node: str) -> list[str]:
    """BIRD in the foreground (the lab supervisor runs it), with its own socket and pid file."""
    p = bird_paths(node)
    return ["bird", "-f", "-c", f"{statedir}/{p['config']}", "-s", f"{statedir}/{p['socket']}",
            "-P", f"{statedir}/{p['pid']}"]


def announce_argv(pktlb: str, statedir: str, node: str, vip: str, ready_file: str | None) -> list[str]:
    a = announce_paths(node)
    argv = [pktlb, "announce", "run", "--engine-socket", f"{statedir}/{engine_socket(node)}",
            "--bird-socket", f"{statedir}/{bird_paths(node)['socket']}", "--control", f"{statedir}/{a['control']}",
            "--vip", vip, "--journal", f"{statedir}/{a['journal']}"]
    return argv + (["--ready-file", ready_file] if ready_file else [])


def nhsync_argv(pktlb: str, ready_file: str | None) -> list[str]:
    return [pktlb, "nhsync", "--table", str(BIRD_TABLE), "--dev", "eth0"] + (
        ["--ready-file", ready_file] if ready_file else [])
