"""The host checks by name, for each side (director, backend), and running them over one namespace's facts."""

from __future__ import annotations

from pktlb.daemon import hostcheck_backend as backend
from pktlb.daemon import hostcheck_director as director
from pktlb.daemon.hostcheck import Check, Finding, HostFacts

DIRECTOR_CHECKS: dict[str, Check] = {
    "vip-local": director.vip_not_local,
    "vip-arp": director.vip_reachable,
    "backend-route": director.backend_paths,
    "forwarding": director.forwarding,
    "tx-checksum": director.tx_checksum,
    "snat-ports": director.snat_ports,
}

BACKEND_CHECKS: dict[str, Check] = {
    "vip-on-lo": backend.vip_on_backend,
    "arp-sysctls": backend.arp_sysctls,
    "rp-filter": backend.rp_filter,
    "route-back": backend.route_back,
    "tx-checksum": director.tx_checksum,
}

SIDES = {"director": DIRECTOR_CHECKS, "backend": BACKEND_CHECKS}


def run_checks(facts: HostFacts, side: str) -> list[Finding]:
    """Every check of ``side`` ("director" or "backend") over ``facts``, in the table's order, after a
    warning for each fact that could not be read."""
    try:
        checks = SIDES[side]
    except KeyError:
        raise ValueError(f"unknown side {side!r}: expected one of {', '.join(SIDES)}") from None
    findings = [Finding("facts", facts.node, False, "warn", error) for error in facts.errors]
    for check in checks.values():
        findings.extend(check(facts))
    return findings
