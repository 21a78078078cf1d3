"""Processes ``pktlb l7-report`` runs inside a lab's namespaces: a proxy (pktlb or HAProxy) with a config of its
own, HTTPS backends, the client workloads; and the CPU time a process used.

Every process is started with ``Namespace.popen``, remembered by PID and stopped by PID (SIGTERM, then
SIGKILL after a grace period); nothing is left behind when a section fails.  Configs and logs go
under the lab's own directory (``/run/pktlb/PREFIX/l7report/``), removed with the lab.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tomli_w

from pktlb.adapters.haproxy_stats import HaproxyStatsError, haproxy_stats
from pktlb.core.config import parse_config
from pktlb.core.l7.haproxy import haproxy_config
from pktlb.daemon.ctlsock import ControlClientError, request
from pktlb.lab.netns import Namespace

READY_TIMEOUT = 20.0
CLIENT_MODULE = "pktlb.reports.l7features.client"


class ReportError(RuntimeError):
    """A section could not be measured: the message says what failed."""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LabProcess:
    """One process in a namespace, its output in ``log``; ``stop()`` ends it by PID."""

    def __init__(self, namespace: str, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            self.proc = Namespace(namespace).popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid  # `ip netns exec` execs the command: the same PID

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 8) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(grace)


def _wait(predicate: Any, what: str, process: LabProcess, timeout: float = READY_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise ReportError(f"{what}: the process exited: {process.tail()}")
        value = predicate()
        if value:
            return value
        time.sleep(0.1)  # polling a socket another process serves: no event to await from here
    raise ReportError(f"{what}: not ready after {timeout:.0f} s: {process.tail()}")


class Proxy:
    """``pktlb proxy`` or HAProxy in the LB namespace, from one pktlb config (``data``, a TOML-ready dict)."""

    def __init__(self, engine: str, namespace: str, workdir: Path, name: str, data: dict[str, Any]) -> None:
        self.engine = engine
        workdir.mkdir(parents=True, exist_ok=True)
        self.control_socket = str(workdir / f"{name}.sock")
        data = {**data, "lb": {**data.get("lb", {}), "control_socket": self.control_socket}}
        text = tomli_w.dumps(data)
        config = parse_config(text)
        self.config_path = workdir / f"{name}.toml"
        self.config_path.write_text(text)
        self.backends = [b.name for s in config.services for b in s.backends]
        if engine == "haproxy":
            self.stats_socket = str(workdir / f"{name}.haproxy.sock")
            cfg = workdir / f"{name}.haproxy.cfg"
            cfg.write_text(haproxy_config(config, stats_socket=self.stats_socket))
            argv = ["haproxy", "-db", "-f", str(cfg)]
        else:
            argv = [str(Path(sys.executable).parent / "pktlb"), "proxy", "-c", str(self.config_path)]
        self.process = LabProcess(namespace, argv, workdir / f"{name}.log")
        try:
            _wait(self._all_up, f"{engine} ({name})", self.process)
        except BaseException:
            self.process.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def stats(self) -> dict[str, Any] | None:
        try:
            if self.engine == "haproxy":
                return haproxy_stats(self.stats_socket, timeout=1.0)
            return request(self.control_socket, {"cmd": "stats"}, timeout=2.0)
        except (HaproxyStatsError, ControlClientError, OSError):
            return None

    def _all_up(self) -> bool:
        stats = self.stats()
        if stats is None:
            return False
        states = {be["name"]: be["state"] for svc in stats["services"] for be in svc["backends"]}
        return all(states.get(name) == "up" for name in self.backends)

    def backend(self, action: str, service: str, name: str) -> None:
        if self.engine == "haproxy":
            raise ReportError("backend changes are done through pktlb proxy's control socket only")
        request(self.control_socket, {"cmd": "backend", "action": action, "service": service, "backend": name})

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def client_json(namespace: str, args: list[str], timeout: float = 300.0) -> dict[str, Any]:
    """Run the client workload (``client.py``) in ``namespace``; its JSON answer."""
    done = Namespace(namespace).run([sys.executable, "-m", CLIENT_MODULE, *args], timeout=timeout, check=False)
    if done.returncode != 0:
        raise ReportError(f"client {' '.join(args[:1])} failed: {(done.stderr or done.stdout).strip()[-400:]}")
    return json.loads(done.stdout)


def start_client(namespace: str, args: list[str], log: Path) -> LabProcess:
    """Start a client workload without waiting (its JSON ends up in ``log``)."""
    return LabProcess(namespace, [sys.executable, "-m", CLIENT_MODULE, *args], log)


def finished_json(process: LabProcess, timeout: float = 300.0) -> dict[str, Any]:
    try:
        process.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        process.stop()
        raise ReportError(f"client did not finish within {timeout:.0f} s") from None
    if process.proc.returncode != 0:
        raise ReportError(f"client failed: {process.tail()}")
    return json.loads(process.log.read_text().strip().splitlines()[-1])
