"""`pktlb doctor`'s checks of an LB tier: sessions, next hops, the router's hash, announcements.

Returns plain rows (check, node, ok, level, message, fix) that ``pktlb.lab.doctor`` turns into its
findings, so this package does not import the doctor (no cycle between the two).
"""

from __future__ import annotations

from typing import Any

from pktlb.lab.netns import CommandError, Namespace
from pktlb.lab.tier.inspect import tier_status
from pktlb.lab.tier.plan import HASH_FIELDS

Row = tuple[str, str, bool, str, str, str]


def _sysctl(namespace: str, key: str) -> int | None:
    try:
        return int(Namespace(namespace).run(["sysctl", "-n", key], timeout=5).stdout.strip())
    except (CommandError, ValueError):
        return None


def tier_rows(recorded: dict[str, Any]) -> list[Row]:
    status = tier_status(recorded)
    rows: list[Row] = []
    router_ns = recorded["prefix"] + "router"
    policy = _sysctl(router_ns, "net.ipv4.fib_multipath_hash_policy")
    fields = _sysctl(router_ns, "net.ipv4.fib_multipath_hash_fields")
    if policy == 3 and fields == HASH_FIELDS:
        rows.append(("ecmp-hash", "router", True, "ok", "multipath hash policy 3 on the 5-tuple (fields 0x0037)", ""))
    else:
        rows.append(("ecmp-hash", "router", False, "fail",
                     f"multipath hash policy {policy}, fields {fields}: flows are not spread by their 5-tuple",
                     f"ip netns exec {router_ns} sysctl -w net.ipv4.fib_multipath_hash_policy=3 "
                     f"net.ipv4.fib_multipath_hash_fields={HASH_FIELDS}"))
    sessions = status["sessions"]
    for lb in status["lbs"]:
        session = sessions.get(lb["name"], sessions.get("error", "missing"))
        fix = f"see {recorded['statedir']}/logs/bird-{lb['name']}.log and `pktlb lab status`"
        rows.append(("bgp-session", lb["name"], session == "Established", "ok" if session == "Established" else "fail",
                     f"BGP session with the router: {session}", "" if session == "Established" else fix))
        ann = lb["announce"]
        if "error" in ann:
            rows.append(("announce", lb["name"], False, "fail", f"announce supervisor: {ann['error']}",
                         "`pktlb lab down` and `lab up` again"))
            continue
        routed = lb["address"] in status["next_hops"]
        if ann["announced"] and routed:
            rows.append(("announce", lb["name"], True, "ok", "announces the VIP; the router uses it", ""))
        elif ann["drained"]:
            rows.append(("announce", lb["name"], True, "warn", "drained by the operator: withdrawn",
                         f"pktlb lab drain-lb {lb['name']} --resume"))
        else:
            rows.append(("announce", lb["name"], False, "fail",
                         f"{'announced' if ann['announced'] else 'withdrawn'} ({ann['reason']}), "
                         f"{'in' if routed else 'not in'} the router's next hops", "`pktlb lab status`"))
    return rows
