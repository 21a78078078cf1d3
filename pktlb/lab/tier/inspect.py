"""Reading a running LB tier: the router's BGP sessions and next hops, each LB's announcement.

Used by `lab up` (to wait until the tier has converged), `lab status`, `lab drain-lb`, the tests
and `pktlb tier-report`.  Next hops are read from the router's kernel (what it forwards by), not
from BIRD (what it would like): a plain multipath route, or the members of a next-hop group.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pktlb.adapters import birdctl
from pktlb.daemon.ctlsock import ControlClientError, request
from pktlb.lab.netns import CommandError, Namespace
from pktlb.lab.tier.plan import announce_paths, bird_paths

POLL = 0.01


def _ip_json(namespace: str, args: list[str]) -> Any:
    try:
        out = Namespace(namespace).run(["ip", "-j", *args], timeout=5).stdout
    except CommandError:
        return []
    return json.loads(out or "[]")


def next_hops(namespace: str, prefix: str) -> list[str]:
    """The gateways of the main-table route to ``prefix`` in ``namespace``, sorted.

    A next-hop group is resolved from one dump of every nexthop, so the group and its members are read
    at the same moment; a route read just before BIRD replaced its group names an id the dump no longer
    has, and is read again (a few times at most, then the members found are returned)."""
    for _ in range(_READ_ATTEMPTS):
        gateways, whole = _route_gateways(namespace, prefix)
        if whole:
            break
    return sorted(gateways, key=_key)


_READ_ATTEMPTS = 5


def _route_gateways(namespace: str, prefix: str) -> tuple[list[str], bool]:
    """The route's gateways and whether they were read whole (every id of its group found)."""
    routes = _ip_json(namespace, ["-d", "route", "show", prefix])
    if not routes:
        return [], True
    route = routes[0]
    if "nhid" in route:
        by_id = {nh.get("id"): nh for nh in _ip_json(namespace, ["nexthop", "show"])}
        group = by_id.get(route["nhid"])
        if group is None:
            return [], False
        members = [by_id.get(m.get("id")) for m in group["group"]] if "group" in group else [group]
        gateways = [m["gateway"] for m in members if m is not None and "gateway" in m]
        return gateways, len(gateways) == len(members)
    if "nexthops" in route:
        return [h["gateway"] for h in route["nexthops"] if "gateway" in h], True
    return ([route["gateway"]] if "gateway" in route else []), True


def _key(address: str) -> tuple[int, ...]:
    return tuple(int(x) for x in address.split("."))


def sessions(statedir: str) -> dict[str, str]:
    """The router's BGP sessions: LB name -> BIRD's info ('Established', 'Active', ...), or an error."""
    try:
        rows = birdctl.protocols(f"{statedir}/{bird_paths('router')['socket']}")
    except birdctl.BirdError as exc:
        return {"error": str(exc)}
    return {name: row.info.split()[0] if row.info else row.state for name, row in rows.items() if row.proto == "BGP"}


def announce_status(statedir: str, lb: str) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = request(f"{statedir}/{announce_paths(lb)['control']}", {"cmd": "status"}, timeout=2.0)
        return answer
    except ControlClientError as exc:
        return {"error": str(exc)}


def announce_command(statedir: str, lb: str, cmd: str) -> dict[str, Any]:
    answer: dict[str, Any] = request(f"{statedir}/{announce_paths(lb)['control']}", {"cmd": cmd}, timeout=3.0)
    return answer


def tier_status(record: dict[str, Any]) -> dict[str, Any]:
    """The tier part of `lab status`: sessions, next hops, each LB's announcement."""
    tier, statedir = record["tier"], record["statedir"]
    router_ns = record["prefix"] + "router"
    return {"ecmp": tier["ecmp"], "bfd": tier["bfd"], "sessions": sessions(statedir),
            "next_hops": next_hops(router_ns, record["vip"]),
            "lbs": [{**lb, "announce": announce_status(statedir, lb["name"])} for lb in tier["lbs"]]}


def wait_for(predicate: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``predicate()`` held, or None after ``timeout``."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            return None
        time.sleep(POLL)


def journal(statedir: str, lb: str) -> list[dict[str, Any]]:
    path = Path(statedir) / announce_paths(lb)["journal"]
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def render_tier(tier: dict[str, Any]) -> list[str]:
    lines = [f"LB tier: {len(tier['lbs'])} LBs, router ECMP {tier['ecmp']}" + (", BFD" if tier["bfd"] else "")
             + f"; the router's next hops for the VIP: {', '.join(tier['next_hops']) or 'NONE'}"]
    for lb in tier["lbs"]:
        ann = lb["announce"]
        session = tier["sessions"].get(lb["name"], tier["sessions"].get("error", "?"))
        what = ann.get("error") or (("announced" if ann["announced"] else "withdrawn") + f" ({ann['reason']})")
        lines.append(f"  {lb['name']:<5} {lb['address']:<14} AS {lb['asn']}  BGP {session:<12} {what}")
    return lines
