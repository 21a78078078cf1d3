"""The two labs ``pktlb l7-report`` measures in, and the proxy configs it runs there.

- the **L7 lab**: ``lab up --mode l7 --engine none``: the VIP on the LB, nothing listening on it; the
  report starts its own ``pktlb proxy`` or HAProxy there, one config per measurement (TLS, cookie,
  cache, filter), each from the same service definition;
- the **L4 lab**: ``lab up --mode dsr --engine pktlb --scheduler sh``: the packet engine, whose config
  gets a second service on port 443 (``pktlb reload``) for TLS that the backends terminate themselves.

Both get a unique prefix and are always removed (``lab down``), also on failure or Ctrl-C.
"""

from __future__ import annotations

import secrets
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from pktlb.adapters.certs import LabPki, make_lab_pki
from pktlb.daemon.ctlsock import request
from pktlb.lab import state as st
from pktlb.lab.manage import lab_down, lab_up
from pktlb.lab.paths import LabPaths
from pktlb.lab.topology import LabOptions, Plan
from pktlb.reports.l7features.servers import LabProcess, ReportError

TLS_PORT = 443
HEALTH = {"checks": ["http"], "interval": 1.0, "timeout": 1.0, "rise": 1, "fall": 2, "http_path": "/health"}
MOVING_CLIENT = [f"198.18.1.{100 + i}" for i in range(64)]  # the client's extra addresses (netns/lab.toml)


@dataclass
class Lab:
    prefix: str
    statedir: Path
    vip: str
    backends: list[tuple[str, str]]  # (name, address)
    port: int
    pki: LabPki
    processes: list[LabProcess] = field(default_factory=list)

    def ns(self, node: str) -> str:
        return self.prefix + node

    @property
    def workdir(self) -> Path:
        return self.statedir / "l7report"

    def service_pid(self, name: str) -> int:
        return int((st.read_json(LabPaths(self.prefix).services_state_file) or {})["services"][name]["pid"])

    def start(self, node: str, argv: list[str], name: str) -> LabProcess:
        process = LabProcess(self.ns(node), argv, self.workdir / f"{name}.log")
        self.processes.append(process)
        return process

    def https_backends(self, port: int, cert: Path, key: Path) -> None:
        """Each backend also serves HTTPS on ``port`` with ``cert`` (the lab's httpd, --tls-cert)."""
        for name, _ in self.backends:
            ready = self.workdir / f"{name}.https{port}.ready"
            process = self.start(name, [sys.executable, "-m", "pktlb.lab.httpd", "--name", name, "--port", str(port),
                                        "--tls-cert", str(cert), "--tls-key", str(key), "--ready-file", str(ready)],
                                 f"{name}.https{port}")
            _await_file(ready, process)

    def stop_processes(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def close(self) -> None:
        self.stop_processes()
        lab_down(self.prefix)


def _await_file(path: Path, process: LabProcess, timeout: float = 15.0) -> None:
    import time
    deadline = time.monotonic() + timeout
    while not path.exists():
        if not process.alive() or time.monotonic() > deadline:
            raise ReportError(f"{process.argv[2:6]} did not start: {process.tail()}")
        time.sleep(0.05)  # a file another process writes once it listens


def report_prefix() -> str:
    return f"pktlb-l7r{secrets.token_hex(2)}"


def build_lab(mode: str, engine: str, scheduler: str, backends: int, base: str, tag: str, *,
              key_type: str = "ec") -> Lab:
    """A lab with prefix ``<base><tag>-`` (``base`` from ``report_prefix()`` or ``--prefix``)."""
    prefix = f"{base}{tag}-"
    result = lab_up(LabOptions(mode=mode, engine=engine, scheduler=scheduler, backends=backends, prefix=prefix))
    try:
        if result.engine_problem:
            raise ReportError(f"lab {prefix}: {result.engine_problem}")
        return attach_lab(prefix, result.plan, key_type=key_type)
    except BaseException:
        lab_down(prefix)
        raise


def attach_lab(prefix: str, plan: Plan, *, key_type: str = "ec") -> Lab:
    """The report's view of a lab that is up: its throwaway certificates, those of ``lab up --tls`` if it made
    them (services already use them), else made now under the lab's directory."""
    vip = plan.constants["vip"]
    addresses = [(b.name, b.address) for b in plan.by_role("backend")]
    tls = LabPaths.at(plan.statedir).tls_dir
    if (tls / "ca.pem").exists():
        pki = LabPki(directory=tls, ca=tls / "ca.pem", vip_cert=tls / "vip.pem", vip_key=tls / "vip.pem.key",
                     backend_cert=tls / "backend.pem", backend_key=tls / "backend.pem.key")
    else:
        pki = make_lab_pki(tls, [vip], [a for _, a in addresses], key_type=key_type)
    return Lab(prefix=prefix, statedir=Path(plan.statedir), vip=vip, backends=addresses,
               port=int(plan.constants["service_port"]), pki=pki)


def l7_service(lab: Lab, name: str, port: int, *, scheduler: str = "rr", l7: dict[str, Any] | None = None,
               backend_port: int | None = None, health: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``mode = "l7"`` service on the lab's VIP over every backend (by its own address)."""
    return {"name": name, "vip": lab.vip, "port": port, "mode": "l7", "scheduler": scheduler,
            "l7": {"header_timeout": 5.0, "idle_timeout": 30.0, **(l7 or {})},
            "health": health or HEALTH,
            "backend": [{"name": n, "address": a, "port": backend_port or lab.port} for n, a in lab.backends]}


def proxy_data(*services: dict[str, Any]) -> dict[str, Any]:
    return {"lb": {"address": "198.18.0.2"}, "service": list(services)}


def tls_table(lab: Lab, **extra: Any) -> dict[str, Any]:
    return {"cert": str(lab.pki.vip_cert), "key": str(lab.pki.vip_key), **extra}


def add_l4_tls_service(lab: Lab) -> None:
    """The L4 lab's engine gets ``web-tls``: VIP:443 by DSR to the backends' own HTTPS (pktlb reload)."""
    paths = LabPaths(lab.prefix)
    data = tomllib.loads(paths.config.read_text())
    web = next(s for s in data["service"] if s.get("port") == lab.port)
    tls = {k: v for k, v in web.items() if k not in ("name", "port", "backend", "health")}
    tls.update(name="web-tls", port=TLS_PORT, health={"checks": ["tcp"], "interval": 1.0, "timeout": 1.0})
    tls["backend"] = [{**b, "port": TLS_PORT} for b in web["backend"]]
    data["service"] = [s for s in data["service"] if s.get("name") != "web-tls"] + [tls]
    paths.config.write_text(tomli_w.dumps(data))
    answer = request(str(paths.control_socket), {"cmd": "reload"}, timeout=10.0)
    if not answer.get("reloaded", True):
        raise ReportError(f"the L4 engine refused the TLS service: {answer.get('error')}")
