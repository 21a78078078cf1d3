"""From two polls of a source to what the page shows moving: rates, a history point, state changes.

Pure functions over ``Sample`` replies, so they are tested without an engine.  Rates are counter
differences over the time between the two polls (a counter that went backwards, an engine that
restarted, gives 0, not a negative rate).  A backend's state is the triple (forwarding state,
administrative state, health state); any change of it, a backend appearing or going, a snapshot
generation and a source that stops or starts answering become events for the page's change log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pktlb.daemon.dashboard.sources import ENGINE, PROXY, Sample

# Per backend, the order of a history point's numbers (the page's chart reads the same list).
POINT_FIELDS = ("pps_in", "pps_out", "bps_in", "bps_out", "cps")
BackendKey = str  # "service/backend"


def engine_backends(data: dict[str, Any]) -> dict[BackendKey, dict[str, Any]]:
    return {f"{svc['name']}/{be['name']}": be for svc in data.get("services", []) for be in svc.get("backends", [])}


def engine_states(data: dict[str, Any]) -> dict[BackendKey, tuple[str, str, str]]:
    return {key: (be.get("state", "?"), be.get("admin", "up"), (be.get("health") or {}).get("state") or "unchecked")
            for key, be in engine_backends(data).items()}


# What each kind of source has per backend (the proxy's rows have the engine's state, admin and health).
BACKENDS_BY_KIND: dict[str, Callable[[dict[str, Any]], dict[BackendKey, dict[str, Any]]]] = {
    ENGINE: engine_backends, PROXY: engine_backends}
STATES_BY_KIND: dict[str, Callable[[dict[str, Any]], dict[BackendKey, tuple[str, str, str]]]] = {
    ENGINE: engine_states, PROXY: engine_states}


def _backends(sample: Sample) -> dict[BackendKey, dict[str, Any]]:
    rows = BACKENDS_BY_KIND.get(sample.kind)
    return rows(sample.data) if rows and sample.data is not None else {}


def _states(sample: Sample) -> dict[BackendKey, tuple[str, str, str]]:
    states = STATES_BY_KIND.get(sample.kind)
    return states(sample.data) if states and sample.data is not None else {}


def _rate(cur: Any, prev: Any, elapsed: float) -> float:
    try:
        delta = float(cur) - float(prev)
    except (TypeError, ValueError):
        return 0.0
    return round(delta / elapsed, 3) if delta > 0 else 0.0


def rates(prev: Sample | None, cur: Sample) -> dict[str, Any]:
    """Per backend packets/s, bits/s and new flows/s; per source frames/s and drops/s by reason."""
    if prev is None or not prev.ok or not cur.ok or prev.kind != cur.kind:
        return {"backends": {}, "totals": {}, "drops": {}}
    elapsed = max(cur.monotonic - prev.monotonic, 1e-3)
    before = _backends(prev)
    backends = {}
    for key, be in _backends(cur).items():
        old = before.get(key)
        if old is None:
            continue
        backends[key] = {"pps_in": _rate(be.get("packets_in"), old.get("packets_in"), elapsed),
                         "pps_out": _rate(be.get("packets_out"), old.get("packets_out"), elapsed),
                         "bps_in": 8 * _rate(be.get("bytes_in"), old.get("bytes_in"), elapsed),
                         "bps_out": 8 * _rate(be.get("bytes_out"), old.get("bytes_out"), elapsed),
                         "cps": _rate(be.get("new_flows"), old.get("new_flows"), elapsed)}
        if "requests" in be:  # the proxy's requests per second
            backends[key]["rps"] = _rate(be["requests"], old.get("requests"), elapsed)
    assert cur.data is not None and prev.data is not None
    now_totals, old_totals = cur.data.get("totals") or {}, prev.data.get("totals") or {}
    totals = {k: _rate(v, old_totals.get(k, 0), elapsed) for k, v in now_totals.items() if k != "drops"}
    old_drops = old_totals.get("drops") or {}
    drops = {r: _rate(n, old_drops.get(r, 0), elapsed) for r, n in (now_totals.get("drops") or {}).items()}
    return {"backends": backends, "totals": totals, "drops": drops}


def history_point(cur: Sample, cur_rates: dict[str, Any]) -> dict[str, Any]:
    """One point of the chart: the time and, per backend, the numbers in POINT_FIELDS order."""
    return {"t": round(cur.polled_at, 3),
            "b": {key: [r[f] for f in POINT_FIELDS] for key, r in cur_rates["backends"].items()},
            "dropped": cur_rates["totals"].get("dropped", 0.0)}


def changes(prev: Sample | None, cur: Sample) -> list[dict[str, Any]]:
    """Events between two polls, oldest first: source answering or not, snapshots, backend states."""
    base = {"t": round(cur.polled_at, 3), "source": cur.source.name}
    if prev is None:
        return [] if cur.ok else [{**base, "what": "source", "to": "unreachable", "why": cur.error}]
    if prev.ok != cur.ok:
        if not cur.ok:
            return [{**base, "what": "source", "from": "answering", "to": "unreachable", "why": cur.error}]
        return [{**base, "what": "source", "from": "unreachable", "to": "answering", "why": f"kind {cur.kind}"}]
    if not cur.ok:
        return []
    assert cur.data is not None and prev.data is not None
    events = []
    generation = prev.data.get("generation")
    if isinstance(generation, int):
        for change in cur.data.get("changes") or []:
            if isinstance(change, dict) and isinstance(change.get("generation"), int) and change["generation"] > generation:
                moved = ", ".join(f"{s}: {n} slots moved" for s, n in (change.get("ring_moved") or {}).items())
                events.append({**base, "what": "snapshot", "to": f"snapshot {change['generation']}",
                               "why": change.get("why", "") + (f" ({moved})" if moved else "")})
    old, new = _states(prev), _states(cur)
    for key, state in new.items():
        before = old.get(key)
        if before is None:
            events.append({**base, "what": "backend", "backend": key, "to": describe(state), "why": "added"})
        elif before != state:
            why = _why(before, state, _backends(cur).get(key) or {})
            events.append({**base, "what": "backend", "backend": key, "from": describe(before),
                           "to": describe(state), "why": why})
    for key in old.keys() - new.keys():
        events.append({**base, "what": "backend", "backend": key, "from": describe(old[key]), "to": "removed",
                       "why": "removed"})
    return events


def describe(state: tuple[str, str, str]) -> str:
    forwarding, admin, health = state
    notes = [f"admin {admin}"] if admin != "up" else []
    notes += [f"health {health}"] if health not in ("up", "unchecked") else []
    return forwarding + (f" ({', '.join(notes)})" if notes else "")


def _why(before: tuple[str, str, str], after: tuple[str, str, str], row: dict[str, Any]) -> str:
    if before[1] != after[1]:
        return f"set {after[1]} by operator"
    if before[2] != after[2]:
        return f"health {after[2]}: {(row.get('health') or {}).get('reason') or 'no reason given'}"
    return "state changed"


def changed_keys(events: list[dict[str, Any]]) -> list[BackendKey]:
    return [e["backend"] for e in events if e.get("what") == "backend" and e.get("to") != "removed"]
