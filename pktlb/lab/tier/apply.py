"""Turns a single-LB lab plan into an LB tier: N LB nodes, BIRD everywhere, the router's changes.

``apply_tier`` rewrites the plan that ``topology.make_plan`` made (it replaces the ``lb`` node with
``lb1``..``lbN`` and the engine service with per-LB services), and returns what else `lab up` must
do: the files to write into the state directory (BIRD configs, one engine config per LB) and the
extra steps (the router's rule for nat).  With ``--lbs 1`` nothing here runs: the lab is today's.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from pktlb.core.rewrite.registry import traits_of
from pktlb.lab import steps as st
from pktlb.lab.engine_config import checked_engine_config
from pktlb.lab.tier.plan import (
    TierError,
    TierOptions,
    TierPlan,
    announce_argv,
    bird_argv,
    engine_socket,
    make_tier,
    nhsync_argv,
)
from pktlb.lab.topology import Interface, LabError, Plan, Route, ServiceSpec


@dataclass
class TierBuild:
    tier: TierPlan
    files: dict[str, str] = field(default_factory=dict)  # relative to the state dir
    steps: list[st.Step] = field(default_factory=list)

    def record(self) -> dict[str, object]:
        """What state.json keeps about the tier (status, drain-lb and the report read it)."""
        o = self.tier.options
        return {"lbs": [{"name": lb.name, "address": lb.address, "asn": lb.asn, "snat": lb.snat,
                         "engine_socket": engine_socket(lb.name)} for lb in self.tier.lbs],
                "ecmp": o.ecmp, "bfd": o.bfd, "announced": {k: list(v) for k, v in self.tier.announced.items()}}


def tier_options(plan: Plan) -> TierOptions:
    o = plan.options
    return TierOptions(o.lbs, o.mode, o.ecmp, o.bfd)


def check_tier_lab(plan: Plan, *, has_binary: Callable[[str], str | None] = shutil.which) -> None:
    """LabError for a tier that cannot be built here (before anything is created)."""
    o = plan.options
    try:
        make_tier(tier_options(plan), vip=plan.constants["vip"], router_address=plan.constants["router_server"],
                  statedir=plan.statedir)
    except TierError as exc:
        raise LabError(str(exc)) from None
    if o.engine != "pktlb":
        raise LabError(f"--lbs {o.lbs} --engine {o.engine}: the LB tier runs the pktlb engine on every LB "
                       "(its announcements follow the engine's health); use --engine pktlb")
    if has_binary("bird") is None:
        raise LabError("the LB tier needs BIRD 2 (`bird`, Debian package bird2): run `make deps` or "
                       "`apt-get install bird2`")


def apply_tier(plan: Plan, *, pktlb: str) -> TierBuild:
    check_tier_lab(plan)
    c, statedir = plan.constants, plan.statedir
    tier = make_tier(tier_options(plan), vip=c["vip"], router_address=c["router_server"], statedir=statedir)
    build = TierBuild(tier, files=dict(tier.files))
    template = plan.by_role("lb")[0]
    position = plan.nodes.index(template)
    lbs = []
    for lb in tier.lbs:
        node = copy.deepcopy(template)
        node.name, node.index, node.namespace, node.snat = lb.name, lb.index, plan.options.prefix + lb.name, lb.snat
        node.interfaces = [Interface("eth0", "server", [f"{lb.address}/24"], f"s-{lb.name}")]
        node.services = ["engine", "bird", "announce"]
        lbs.append(node)
    plan.nodes[position:position + 1] = lbs
    router = plan.node("router")
    router.routes = [r for r in router.routes if r.dst != c["vip_network"]]  # BGP installs the VIP's route
    router.sysctls.update(tier.router_sysctls)
    router.services = ["bird"] + (["nhsync"] if tier.options.ecmp == "resilient" else [])
    if traits_of(plan.options.mode).reverse_nat:  # replies go to the router, which sends them to a live LB (table 100)
        for backend in plan.by_role("backend"):
            backend.routes = [r for r in backend.routes if r.dst != "default"] + [Route("default", c["router_server"])]
    for rule in tier.rules_argv(router.namespace):
        build.steps.append(st.Step(f"router: rule {' '.join(rule[4:])}", rule))
    plan.services = [s for s in plan.services if s.node != "lb"]
    ready = f"{statedir}/ready"
    plan.services.append(ServiceSpec("router/bird", "router", router.namespace, bird_argv(statedir, "router")))
    if tier.options.ecmp == "resilient":
        plan.services.append(ServiceSpec("router/nhsync", "router", router.namespace,
                                         nhsync_argv(pktlb, f"{ready}/router.nhsync"), f"{ready}/router.nhsync"))
    for node, lb in zip(lbs, tier.lbs, strict=True):
        config_name = f"pktlb-{lb.name}.toml"
        text, _ = checked_engine_config(plan, lb=node, control_socket=f"{statedir}/{engine_socket(lb.name)}")
        build.files[config_name] = text
        plan.services += [
            ServiceSpec(f"{lb.name}/engine", lb.name, node.namespace, [pktlb, "run", "-c", f"{statedir}/{config_name}"]),
            ServiceSpec(f"{lb.name}/bird", lb.name, node.namespace, bird_argv(statedir, lb.name)),
            ServiceSpec(f"{lb.name}/announce", lb.name, node.namespace,
                        announce_argv(pktlb, statedir, lb.name, c["vip"], f"{ready}/{lb.name}.announce"),
                        f"{ready}/{lb.name}.announce"),
        ]
    return build
