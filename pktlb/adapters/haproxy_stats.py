"""HAProxy's counters through its stats socket (``show stat``), in the shape ``pktlb proxy`` reports.

The l7 lab's ``--engine haproxy`` (``pktlb.lab.l7``) runs HAProxy with ``stats socket <lab>/haproxy.sock``;
``pktlb stats --lab`` and ``pktlb compare`` read it here.  ``show stat`` answers one CSV line per
frontend, backend and server; the rendering of ``pktlb.core.l7.haproxy`` names the frontend after
the pktlb service and each HAProxy backend ``<service>__<route>``, so the servers of every route
are summed back into the service's backends, as ``pktlb proxy`` counts them:

    requests            req_tot (HTTP requests sent to the server)
    responses           hrsp_1xx .. hrsp_5xx, by class
    connections_opened  connect (connections HAProxy opened to the server)
    reused              reuse (requests sent over an existing connection)
    failures            econ (connection errors), eresp (response errors), srv_abrt

The answer says ``"kind": "haproxy"``; its ``totals`` and ``services`` rows have the keys of
``pktlb.daemon.proxy.report`` that mean the same thing, so one reader serves both proxies.
"""

from __future__ import annotations

import csv
import io
import socket
from typing import Any

STATS_KIND = "haproxy"
ROUTE_SEPARATOR = "__"  # pktlb.core.l7.haproxy names HAProxy backends <service>__<route>
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
STATES = {"UP": "up", "DOWN": "down", "MAINT": "down", "DRAIN": "draining", "NOLB": "draining"}


class HaproxyStatsError(RuntimeError):
    """The stats socket did not answer, or answered something that is not ``show stat`` CSV."""


def show(socket_path: str, command: str = "show stat", *, timeout: float = 2.0) -> str:
    """One command on HAProxy's stats socket; its whole answer."""
    chunks = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            sock.sendall(command.encode() + b"\n")
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise HaproxyStatsError(f"HAProxy's stats socket {socket_path}: {exc.strerror or exc}") from None
    return b"".join(chunks).decode(errors="replace")


def parse_show_stat(text: str) -> list[dict[str, str]]:
    """The rows of ``show stat`` (header ``# pxname,svname,...``), one dict per proxy or server."""
    if not text.startswith("# "):
        raise HaproxyStatsError(f"not a `show stat` answer: {text.strip()[:200]!r}")
    rows = csv.DictReader(io.StringIO(text[2:]))
    return [{k: v for k, v in row.items() if k} for row in rows if row.get("pxname")]


def _int(row: dict[str, str], key: str) -> int:
    value = row.get(key) or "0"
    return int(value) if value.isdigit() else 0


def summarize(rows: list[dict[str, str]], *, pid: int | None = None) -> dict[str, Any]:
    """``show stat`` rows as a ``pktlb stats``-like answer: per service (frontend), its backends summed over routes."""
    services: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["svname"] == "FRONTEND":
            services[row["pxname"]] = {
                "name": row["pxname"], "mode": "l7", "protocol": "tcp", "engine": "haproxy",
                "counters": {"connections": _int(row, "stot"), "open_connections": _int(row, "scur"),
                             "requests": _int(row, "req_tot"), "responses": _classes(row),
                             "rejects": {"denied": _int(row, "dreq"), "bad_request": _int(row, "ereq")},
                             "bytes_in": _int(row, "bin"), "bytes_out": _int(row, "bout")},
                "routes": [], "backends": {}}
    for row in rows:
        service, sep, route = row["pxname"].partition(ROUTE_SEPARATOR)
        if not sep or service not in services:
            continue
        svc = services[service]
        if row["svname"] == "BACKEND":
            svc["routes"].append({"name": route, "requests": _int(row, "req_tot"), "algorithm": row.get("algo")})
            continue
        be = svc["backends"].setdefault(row["svname"], {
            "name": row["svname"], "address": row.get("addr", "").rpartition(":")[0],
            "port": int(row.get("addr", ":0").rpartition(":")[2] or 0), "state": STATES.get(
                row.get("status", "").split()[0] if row.get("status") else "", "down"),
            "requests": 0, "responses": dict.fromkeys(CLASSES, 0), "failures": {}, "connections_opened": 0,
            "reused": 0, "in_flight": 0, "health": {"state": row.get("status"), "check": row.get("check_status")}})
        be["requests"] += _int(row, "req_tot")
        be["connections_opened"] += _int(row, "connect")
        be["reused"] += _int(row, "reuse")
        be["in_flight"] += _int(row, "scur")
        for cls, n in _classes(row).items():
            be["responses"][cls] = be["responses"].get(cls, 0) + n
        for name, key in (("connect_error", "econ"), ("response_error", "eresp"), ("server_abort", "srv_abrt")):
            if _int(row, key):
                be["failures"][name] = be["failures"].get(name, 0) + _int(row, key)
        if STATES.get((row.get("status") or "").split()[0] if row.get("status") else "", "down") != "up":
            be["state"] = "down"  # a server down in any route's pool counts as down
    out = []
    for svc in services.values():
        svc["backends"] = list(svc["backends"].values())
        out.append(svc)
    totals = {"connections": sum(s["counters"]["connections"] for s in out),
              "open_connections": sum(s["counters"]["open_connections"] for s in out),
              "requests": sum(s["counters"]["requests"] for s in out),
              "backend_connections_opened": sum(b["connections_opened"] for s in out for b in s["backends"])}
    return {"kind": STATS_KIND, "pid": pid, "totals": totals, "services": out}


def _classes(row: dict[str, str]) -> dict[str, int]:
    return {cls: _int(row, f"hrsp_{cls}") for cls in CLASSES}


def haproxy_stats(socket_path: str, *, timeout: float = 2.0) -> dict[str, Any]:
    """HAProxy's counters now, summarised (HaproxyStatsError if the socket does not answer)."""
    info = show(socket_path, "show info", timeout=timeout)
    pid = next((int(line.split(":", 1)[1]) for line in info.splitlines()
                if line.startswith("Pid:") and line.split(":", 1)[1].strip().isdigit()), None)
    return summarize(parse_show_stat(show(socket_path, timeout=timeout)), pid=pid)
