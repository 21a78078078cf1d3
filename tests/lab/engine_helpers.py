"""Helpers for lab tests that run the pktlb engine: wait for it, ask it, predict where flows go."""

from __future__ import annotations

import time
from typing import Any

from pktlb.adapters.configfile import load_config
from pktlb.core.datapath import DataPath
from pktlb.core.flowkey import flow_hash
from pktlb.core.packet.addr import ip_to_int
from pktlb.daemon.ctlsock import ControlClientError, request, worker_sockets
from pktlb.lab.addressing import lab_macs


def engine_socket(lab) -> str:
    return load_config(str(lab.paths.config)).lb.control_socket


def ask(lab, payload: dict[str, Any], timeout: float = 5.0) -> Any:
    return request(engine_socket(lab), payload, timeout=timeout)


def wait_engine(lab, timeout: float = 15.0) -> dict[str, Any]:
    """Bounded wait until the engine answers on its control socket and every backend is up."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            stats = ask(lab, {"cmd": "stats"})
            if all(be["state"] == "up" for svc in stats["services"] for be in svc["backends"]):
                return stats
        except ControlClientError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"engine not ready after {timeout} s: {last}")


def await_read_back(socket: str, timeout: float = 10.0) -> None:
    """Bounded wait until every worker of the engine at ``socket`` has read its kernel fast path back once
    more (its ``read_backs`` grew): what the kernel forwarded or scheduled until now is then in the worker's
    stats and flow table.  One loop answers the control socket and runs the tick, so a tick counted after
    the first look began after it.  (A fixed sleep of a tick and a half missed a tick delayed by load.)"""
    def read_backs(path: str) -> int:
        return int(request(path, {"cmd": "stats"})["fastpath"]["read_backs"])

    waiting = {path: read_backs(path) for path in worker_sockets(socket)}
    deadline = time.monotonic() + timeout
    while True:
        waiting = {path: seen for path, seen in waiting.items() if read_backs(path) <= seen}
        if not waiting:
            return
        assert time.monotonic() < deadline, f"no fast-path read-back within {timeout} s from {sorted(waiting)}"
        time.sleep(0.05)


def predicted_backend(lab, src: str, sport: int, dport: int = 80) -> str:
    """Where the engine's scheduler sends a new TCP flow (the same pure code, the same seed)."""
    config = load_config(str(lab.paths.config))
    dp = DataPath(config, macs=lab_macs(config))
    svc = next(s for s in dp.snapshot.services.values() if s.port == dport)
    key = (6, ip_to_int(src), svc.vip, sport, dport)
    return svc.scheduler.pick(key, flow_hash(*key, seed=dp.snapshot.seed), {}).name


def backend_counters(stats: dict[str, Any], service: str = "web") -> dict[str, dict[str, Any]]:
    svc = next(s for s in stats["services"] if s["name"] == service)
    return {be["name"]: be for be in svc["backends"]}
