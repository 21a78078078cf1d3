"""`pktlb lab drain-lb LB`: withdraw one LB of the tier and wait until the router stops using it.

The LB's announcement supervisor is told to drain (BIRD withdraws the VIP); the router's kernel
route loses that next hop; only then is the drain reported done.  The engine keeps running, so
flows that the router still had in flight (or that other LBs' consistent hashing brings back to
the same backends) are not cut: this is the order a maintenance takes (withdraw, wait, then stop).
"""

from __future__ import annotations

from typing import Any

from pktlb.daemon.ctlsock import ControlClientError, request
from pktlb.lab import state as st
from pktlb.lab.tier.inspect import announce_command, next_hops, wait_for
from pktlb.lab.tier.plan import engine_socket


class DrainError(RuntimeError):
    pass


def drain_lb(prefix: str, lb: str, *, resume: bool = False, timeout: float = 10.0) -> dict[str, Any]:
    recorded = st.load_state(prefix)
    if recorded is None:
        raise DrainError(f"no lab with prefix {prefix!r} is up")
    tier = recorded.get("tier")
    if not tier:
        raise DrainError(f"the lab {prefix!r} has one LB (no tier): `pktlb lab up --lbs N` builds a tier")
    lbs = {x["name"]: x for x in tier["lbs"]}
    if lb not in lbs:
        raise DrainError(f"no LB {lb!r} in the tier; LBs: {', '.join(lbs)}")
    statedir, address = recorded["statedir"], lbs[lb]["address"]
    router_ns = prefix + "router"
    try:
        announce_command(statedir, lb, "resume" if resume else "drain")
    except ControlClientError as exc:
        raise DrainError(f"{lb}'s announce supervisor: {exc}") from None
    waited = wait_for(lambda: (address in next_hops(router_ns, recorded["vip"])) == resume, timeout)
    if waited is None:
        raise DrainError(f"the router still {'does not use' if resume else 'uses'} {lb} ({address}) after "
                         f"{timeout:.0f} s")
    try:
        request(f"{statedir}/{engine_socket(lb)}", {"cmd": "ping"}, timeout=2.0)
        running = True
    except ControlClientError:
        running = False
    return {"lb": lb, "drained": not resume, "seconds": round(waited, 3), "engine_running": running,
            "next_hops": next_hops(router_ns, recorded["vip"])}
