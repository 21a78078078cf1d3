"""One engine's stats over all its workers: find the per-worker control sockets and add their counters up.

``pktlb run --workers N`` gives worker 0 the configured control socket and worker i ``<socket>.w<i>``
(see ``pktlb.daemon.workers``).  Each worker has its own counters and flow table, so ``pktlb stats``
and the dashboard ask every worker and merge: counters, rates and flow-table sizes are summed;
states, health and the change history are worker 0's (every worker runs the same checks).  The
kernel fast path's counters live in maps all workers share: taken once, from worker 0.
"""

from __future__ import annotations

from typing import Any

from pktlb.daemon.ctlsock import request, worker_sockets

TOTAL_KEYS = ("received", "forwarded", "replied", "dropped")
FLOW_TABLE_KEYS = ("entries", "max_entries", "inserted", "evicted", "expired")
PORT_KEYS = ("rx", "tx", "rx_truncated", "rx_partial", "rx_gso", "kernel_drops")
FASTPATH_KEYS = ("errors", "imported_flows", "kernel_flows", "deferred_flows", "foreign_backends")
BACKEND_KEYS = ("active_flows", "packets_in", "bytes_in", "packets_out", "bytes_out", "new_flows",
                "pps_in", "bps_in", "pps_out", "bps_out")


def merge_worker_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Worker 0's stats with every worker's counters added up (one worker: returned as it is)."""
    merged = parts[0]
    if len(parts) == 1:
        return merged
    merged["workers"] = len(parts)
    if all("cpu_seconds" in p for p in parts):
        merged["cpu_seconds"] = round(sum(p["cpu_seconds"] for p in parts), 4)
    for other in parts[1:]:
        for key in TOTAL_KEYS:
            merged["totals"][key] += other["totals"][key]
        if "kernel_forwarded" in merged["totals"]:  # each worker reads back only its own flows
            merged["totals"]["kernel_forwarded"] += other["totals"].get("kernel_forwarded", 0)
        fast, other_fast = merged.get("fastpath") or {}, other.get("fastpath") or {}
        for key in FASTPATH_KEYS:  # per worker; the program's counters (forwarded, punts) are shared: once
            if key in fast:
                fast[key] += other_fast.get(key, 0)
        for reason, n in other["totals"]["drops"].items():
            merged["totals"]["drops"][reason] = merged["totals"]["drops"].get(reason, 0) + n
        merged.get("drop_reasons", {}).update(other.get("drop_reasons", {}))
        for key in FLOW_TABLE_KEYS:  # each worker has its own table
            merged["flows"][key] += other["flows"][key]
        port, other_port = merged.get("port"), other.get("port") or {}
        for key in PORT_KEYS:
            if port is not None and key in port:
                port[key] += other_port.get(key, 0)
        for svc, other_svc in zip(merged["services"], other["services"], strict=False):
            rows = {b["name"]: b for b in other_svc["backends"]}
            for be in svc["backends"]:
                for key in BACKEND_KEYS:
                    if key in be and be["name"] in rows:
                        be[key] += rows[be["name"]].get(key, 0)
            drops = svc.get("drops")
            if drops is not None:
                for reason, n in (other_svc.get("drops") or {}).items():
                    drops[reason] = drops.get(reason, 0) + n
    return merged


def engine_stats(socket_path: str, timeout: float = 5.0) -> dict[str, Any]:
    """Ask every worker of the engine at ``socket_path`` for its stats and merge them
    (ControlClientError if any worker does not answer)."""
    return merge_worker_stats([request(path, {"cmd": "stats"}, timeout) for path in worker_sockets(socket_path)])
