#!/usr/bin/env python3
"""A quick, bounded look at the L7 proxy's cost on 127.0.0.1 (no root, no lab): wrk straight to a lab
httpd backend, through ``pktlb proxy``, and through HAProxy rendered from the same config (when an
``haproxy`` binary is found, or PKTLB_HAPROXY names one), each with and without client keep-alive.

    .venv/bin/python scripts/proxy_loopback_bench.py [--seconds 5] [--connections 8]

Per row: requests/s and latency (wrk), backend connections opened per request (the proxy's own
counters: ``pktlb stats``, HAProxy's ``show stat``), and CPU time per request of the process in the
middle (/proc utime + stime, which includes the kernel's loopback work done on its behalf).  Every
run is bounded by ``--seconds``; every process started here is stopped by PID at the end.  On a
shared machine only the orders of magnitude mean anything.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pktlb.core.config import parse_config
from pktlb.core.l7.haproxy import haproxy_config
from pktlb.daemon.ctlsock import request

MODES = (("keep-alive", ()), ("close", ("-H", "Connection: close")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port: int, extra: tuple[str, ...], args: argparse.Namespace) -> dict[str, object]:
    out = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency", *extra,
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                         timeout=args.seconds + 30).stdout
    return {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": re.search(r"\n\s+50%\s+(\S+)", out).group(1), "p99": re.search(r"\n\s+99%\s+(\S+)", out).group(1)}


def wait_for(path: Path, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 10
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.05)


def row(label: str, mode: str, result: dict[str, object], extra: str = "") -> None:
    print(f"{label:<8} {mode:<10} {result['rps']:>8.0f} req/s  p50 {result['p50']:>8}  p99 {result['p99']:>8}  {extra}")


def measure_proxy(port: int, pid: int, stats: Callable[[], tuple[int, int]],
                  args: argparse.Namespace) -> Iterator[tuple[str, dict[str, object], float, float]]:
    """Per client mode: wrk's figures, backend connections opened per request, CPU us per request."""
    for mode, extra in MODES:
        before, cpu0 = stats(), cpu_seconds(pid)
        result = wrk(port, extra, args)
        cpu1, after = cpu_seconds(pid), stats()
        requests = after[0] - before[0]
        opened = after[1] - before[1]
        yield mode, result, opened / max(requests, 1), (cpu1 - cpu0) / max(requests, 1) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed (Debian package wrk)")
    work = Path(tempfile.mkdtemp(prefix="pktlb-l7bench-"))
    procs: list[subprocess.Popen] = []
    try:
        ports = [free_port(), free_port()]
        for i, port in enumerate(ports):
            procs.append(subprocess.Popen([sys.executable, "-m", "pktlb.lab.httpd", "--name", f"be{i + 1}", "--host",
                                           "127.0.0.1", "--port", str(port), "--ready-file", str(work / f"be{i}")],
                                          stderr=subprocess.DEVNULL))
            wait_for(work / f"be{i}", procs[-1], "the backend")
        listen = free_port()
        text = (f'[lb]\ncontrol_socket = "{work}/ctl.sock"\n[[service]]\nname = "web"\nvip = "127.0.0.1"\n'
                f'port = {listen}\nmode = "l7"\nscheduler = "rr"\n')
        text += "".join(f'  [[service.backend]]\n  name = "be{i + 1}"\n  address = "127.0.0.1"\n  port = {p}\n'
                        for i, p in enumerate(ports))
        (work / "l7.toml").write_text(text)
        for mode, extra in MODES:
            cpu0 = cpu_seconds(procs[0].pid)
            result = wrk(ports[0], extra, args)
            row("direct", mode, result, f"backend CPU {(cpu_seconds(procs[0].pid) - cpu0) / result['requests'] * 1e6:.0f} us/request")

        proxy = subprocess.Popen([sys.executable, "-c", "from pktlb.cli import main; main()", "proxy", "-c",
                                  str(work / "l7.toml"), "--no-health"], stderr=subprocess.DEVNULL)
        procs.append(proxy)
        wait_for(work / "ctl.sock", proxy, "pktlb proxy")

        def proxy_stats() -> tuple[int, int]:
            backends = request(str(work / "ctl.sock"), {"cmd": "stats"})["services"][0]["backends"]
            return sum(b["requests"] for b in backends), sum(b["connections_opened"] for b in backends)
        for mode, result, per_request, cpu in measure_proxy(listen, proxy.pid, proxy_stats, args):
            row("pktlb", mode, result, f"backend conns/request {per_request:.4f}  proxy CPU {cpu:.0f} us/request")

        haproxy = os.environ.get("PKTLB_HAPROXY") or shutil.which("haproxy")
        if not haproxy:
            print("haproxy: no binary found (Debian package haproxy, or PKTLB_HAPROXY=path): skipped")
            return 0
        ha_listen = free_port()
        config = parse_config(text.replace(f"port = {listen}\n", f"port = {ha_listen}\n", 1))
        (work / "haproxy.cfg").write_text(haproxy_config(config, stats_socket=str(work / "ha.sock")))
        ha = subprocess.Popen([haproxy, "-db", "-f", str(work / "haproxy.cfg")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        procs.append(ha)
        wait_for(work / "ha.sock", ha, "haproxy")

        def haproxy_stats() -> tuple[int, int]:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(work / "ha.sock"))
                s.sendall(b"show stat\n")
                data = b"".join(iter(lambda: s.recv(65536), b""))
            rows = [r for r in csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
                    if r["svname"] not in ("FRONTEND", "BACKEND")]
            return sum(int(r["stot"] or 0) for r in rows), sum(int(r["connect"] or 0) for r in rows)
        for mode, result, per_request, cpu in measure_proxy(ha_listen, ha.pid, haproxy_stats, args):
            row("haproxy", mode, result, f"backend conns/request {per_request:.4f}  haproxy CPU {cpu:.0f} us/request")
        return 0
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
