"""Engine stats replies shaped like pktlb.daemon.report.Reporter.cmd_stats (taken from a lab engine), and a
fake control socket serving them, for the dashboard's unit tests (no root, no engine)."""

from __future__ import annotations

import copy
import json
import os
import socket
import threading
from collections.abc import Callable
from typing import Any


def backend(name: str, address: str, *, state: str = "up", admin: str = "up", new_flows: int = 0, packets_in: int = 0,
            bytes_in: int = 0, packets_out: int = 0, bytes_out: int = 0, active_flows: int = 0,
            health: str | None = "up", check_status: str = "L3OK", rtt_ms: float | None = 0.25) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": name, "address": address, "port": 80, "state": state, "admin": admin, "weight": 1,
        "active_flows": active_flows, "packets_in": packets_in, "bytes_in": bytes_in, "packets_out": packets_out,
        "bytes_out": bytes_out, "new_flows": new_flows, "pps_in": 0.0, "bps_in": 0.0, "pps_out": 0.0, "bps_out": 0.0,
        "rtt_ms": rtt_ms, "health": None}
    if health is not None:
        verdict = "up" if health == "up" else "down"
        row["health"] = {"state": health, "since_s": 12.5, "reason": f"icmp {check_status}",
                         "last_rtt_ms": 0.272 if health == "up" else None,
                         "checks": [{"type": "icmp", "status": check_status, "verdict": verdict,
                                     "detail": "echo reply in 0.272 ms"}]}
    return row


def engine_reply(backends: list[dict[str, Any]] | None = None, *, generation: int = 1,
                 drops: dict[str, int] | None = None, changes: list[dict[str, Any]] | None = None,
                 kind: str | None = "engine") -> dict[str, Any]:
    backends = backends if backends is not None else [backend("be1", "198.18.0.11"), backend("be2", "198.18.0.12")]
    drops = dict(drops or {"lb_local": 7})
    reply: dict[str, Any] = {
        "generation": generation, "uptime": 61.5, "worker": 0,
        "totals": {"received": 100 + sum(drops.values()), "forwarded": 100, "replied": 0,
                   "dropped": sum(drops.values()), "drops": drops},
        "drop_reasons": {r: f"meaning of {r}" for r in drops},
        "flows": {"entries": sum(b["active_flows"] for b in backends), "max_entries": 1000000, "inserted": 9,
                  "evicted": 0, "expired": 2},
        "services": [{"name": "web", "vip": "198.19.0.100", "port": 80, "protocol": "tcp", "mode": "nat",
                      "scheduler": "maglev", "backends": backends, "drops": {"no_backend": 1},
                      "maglev_slots": {b["name"]: 32768 for b in backends}}],
        "port": {"rx": 107, "tx": 100, "rx_truncated": 0, "rx_partial": 0, "rx_gso": 0, "tx_errors": {"ENOBUFS": 2},
                 "kernel_drops": 3, "last_tx_monotonic": 527.5},
        "changes": list(changes or []),
    }
    if kind is not None:
        reply["kind"] = kind
    return reply


class FakeControlSocket:
    """A Unix socket answering every request line with ``{"ok": true, "result": reply()}``, in a thread."""

    def __init__(self, path: str, reply: Callable[[], Any]) -> None:
        self.path, self.reply = path, reply
        self.requests: list[dict[str, Any]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(json.loads(data))
                conn.sendall(json.dumps({"ok": True, "result": copy.deepcopy(self.reply())}).encode() + b"\n")

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=2)
        if os.path.exists(self.path):
            os.unlink(self.path)
