"""What `pktlb compare` reads about a lab besides its workloads: what each mode needs, the engine's counters, CPU time.

``mode_requirements`` lists, per role, the sysctls, routes, addresses and offloads a mode and engine
add to the lab (from netns/lab.toml); the others read the pktlb engine's per-backend counters and a
process's CPU time, and turn totals into figures per request.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pktlb.daemon.ctlsock import request
from pktlb.lab.topology import engine_section, expand, merge


def mode_requirements(data: dict[str, Any], mode: str, engine: str, decap_kind: str | None,
                      topology: str = "one-arm") -> dict[str, Any]:
    """Per role, the sysctls, routes, addresses and offloads that this mode, engine and topology add to the lab."""
    chain: list[dict[str, Any]] = []
    name = mode
    while name:
        chain.insert(0, data["mode"][name])
        name = data["mode"][name].get("inherits")
    roles: dict[str, dict[str, Any]] = {}
    layout = data.get("topology", {}).get(topology, {})
    for section in [*chain, engine_section(data, engine, mode), layout]:
        for role, spec in section.items():
            if isinstance(spec, dict) and role not in ("replace", "engines"):
                roles[role] = merge(roles.get(role, {}), spec)
    for role, spec in layout.get("replace", {}).items():
        roles.setdefault(role, {}).update(spec)
    if decap_kind:
        decap = data["decap"][decap_kind]
        backend = roles.setdefault("backend", {})
        backend["sysctls"] = {**backend.get("sysctls", {}), **decap.get("sysctls", {})}
        backend["decap"] = decap.get("summary", decap_kind)
    values = {**data["constants"], "i": 1, "suffix": "", "node": "be1"}
    out: dict[str, Any] = {}
    for role, spec in sorted(roles.items()):
        entry: dict[str, Any] = {}
        if spec.get("sysctls"):
            entry["sysctls"] = dict(spec["sysctls"])
        if spec.get("routes"):
            entry["routes"] = [f"{r['dst']} via {r['via']}" for r in expand(spec["routes"], values)]
        if spec.get("addresses"):
            entry["addresses"] = [f"{a['address']} on {a['ifname']}" for a in expand(spec["addresses"], values)
                                  if "address" in a]
        if spec.get("offloads"):
            entry["offloads"] = dict(spec["offloads"])
        for key in ("decap", "guard", "kernel_lb"):
            if spec.get(key):
                entry[key] = spec[key]
        if entry:
            out[role] = entry
    return out


def engine_stats(socket_path: str) -> dict[str, dict[str, int]]:
    """Per backend name: the engine's counters (summed over services)."""
    return backend_counters(request(socket_path, {"cmd": "stats"}))


def backend_counters(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per backend name: the counters of one `stats` answer (summed over services)."""
    out: dict[str, dict[str, int]] = {}
    for service in stats["services"]:
        for backend in service["backends"]:
            counters = out.setdefault(backend["name"], Counter())
            for key in ("packets_in", "bytes_in", "packets_out", "bytes_out", "new_flows"):
                counters[key] += int(backend.get(key, 0))
    return out


def delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {name: {k: v - before.get(name, {}).get(k, 0) for k, v in counters.items()}
            for name, counters in after.items()}


def totals(per_backend: dict[str, dict[str, int]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for counters in per_backend.values():
        total.update(counters)
    return total


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process, in seconds (None if it is gone)."""
    if not pid:
        return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # fields[0] is field 3 of proc(5)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


TRAFFIC = ("packets_in", "packets_out", "bytes_in", "bytes_out")  # what the LB moved, counted both ways


def per_request(value: float, requests: int) -> float | None:
    return round(value / requests, 3) if requests else None


def traffic_per_request(counts: Mapping[str, Any], requests: int) -> dict[str, float | None]:
    """Each of ``TRAFFIC`` per request, named ``<key>_per_request`` (None without requests)."""
    return {f"{key}_per_request": per_request(counts[key], requests) for key in TRAFFIC}


def cpu_us_per_request(before: float | None, after: float | None, requests: int) -> float | None:
    """CPU microseconds per request between two readings of ``cpu_seconds`` (None if either or the
    request count is missing)."""
    if before is None or after is None or not requests:
        return None
    return round((after - before) * 1e6 / requests, 1)
