"""Measures an LB tier built in the lab: flow spread, failover per failure kind, flows moved.

For each failure kind a steady request stream (``stream.py``, a new connection per request) runs
through the event; the failure is injected into one LB; the router's kernel route is polled every
10 ms until that LB's next hop is gone (the failover time); failed requests are counted.  Then the
LB is restored and the tier must converge again before the next kind.

Flows moved: the router's choice for 2,000 client 5-tuples (``ip route get``, the same hash as
forwarding) before and after one LB is drained, with the ordinary multipath route and with a
resilient next-hop group; plus held keep-alive connections asked again after the drain, to see
whether any connection the router moved to another LB broke.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from pktlb.daemon.ctlsock import ControlClientError, request
from pktlb.lab import state as st
from pktlb.lab.manage import lab_down, lab_up
from pktlb.lab.paths import LabPaths
from pktlb.lab.tier.drain import drain_lb
from pktlb.lab.tier.inspect import next_hops, wait_for
from pktlb.lab.tier.plan import engine_socket, lb_address
from pktlb.lab.topology import LabOptions

FAILURES = ("engine-killed", "speaker-killed", "frozen", "link-cut")
CLIENT = "198.18.1.10"


@dataclass
class TierReportOptions:
    mode: str = "dsr"
    lbs: int = 3
    rate: float = 40.0
    duration: float = 7.0
    inject_at: float = 2.0
    bfd: bool = False
    flows: int = 600
    held: int = 60
    victim: int = 2
    failures: tuple[str, ...] = FAILURES
    prefix: str = field(default_factory=lambda: f"pktlb-tr{secrets.token_hex(2)}-")


class Lab:
    def __init__(self, opts: TierReportOptions, ecmp: str, suffix: str) -> None:
        self.prefix = opts.prefix[:-1] + suffix + "-"
        self.opts = opts
        self.result = lab_up(LabOptions(mode=opts.mode, engine="pktlb", prefix=self.prefix, lbs=opts.lbs, ecmp=ecmp,
                                        bfd=opts.bfd))
        self.statedir = self.result.plan.statedir
        self.vip = self.result.plan.constants["vip"]
        self.all = [lb_address(i) for i in range(1, opts.lbs + 1)]

    def ns(self, node: str) -> str:
        return self.prefix + node

    def hops(self) -> list[str]:
        return next_hops(self.ns("router"), self.vip)

    def service_pid(self, name: str) -> int:
        return int((st.read_json(LabPaths(self.prefix).services_state_file) or {})["services"][name]["pid"])

    def new_flows(self) -> dict[str, int]:
        out = {}
        for i in range(1, self.opts.lbs + 1):
            try:
                stats = request(f"{self.statedir}/{engine_socket(f'lb{i}')}", {"cmd": "stats"})
                out[f"lb{i}"] = sum(be["new_flows"] for svc in stats["services"] if svc["port"] == 80
                                    for be in svc["backends"])
            except ControlClientError:
                out[f"lb{i}"] = 0
        return out

    def client(self, args: list[str], **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", self.ns("client"), sys.executable, "-m",
                                 "pktlb.reports.tier.stream", "--host", self.vip, *args], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, **kw)

    def route_choice(self, sport: int) -> str:
        out = subprocess.run(["ip", "-n", self.ns("router"), "-j", "route", "get", self.vip, "from", CLIENT, "iif",
                              "eth1", "ipproto", "tcp", "sport", str(sport), "dport", "80"],
                             capture_output=True, text=True, timeout=5).stdout
        return json.loads(out)[0]["gateway"]

    def close(self) -> None:
        lab_down(self.prefix)


def _stream(lab: Lab, rate: float, duration: float) -> subprocess.Popen[str]:
    return lab.client(["--rate", str(rate), "--duration", str(duration)])


def measure_spread(lab: Lab, opts: TierReportOptions) -> dict[str, Any]:
    before = lab.new_flows()
    proc = _stream(lab, opts.rate * 2, 3.0)
    rows = [json.loads(line) for line in proc.communicate(timeout=30)[0].splitlines() if line.startswith("{")]
    after = lab.new_flows()
    per_lb = {lb: after[lb] - before.get(lb, 0) for lb in after}
    return {"requests": len(rows), "ok": sum(r["ok"] for r in rows), "new_flows_per_lb": per_lb}


def _inject(lab: Lab, kind: str, victim: str) -> list[int]:
    if kind == "engine-killed":
        os.kill(lab.service_pid(f"{victim}/engine"), signal.SIGKILL)
    elif kind == "speaker-killed":
        os.kill(lab.service_pid(f"{victim}/bird"), signal.SIGKILL)
    elif kind == "frozen":
        pids = st.pids_in_namespace(lab.ns(victim))
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        return pids
    elif kind == "link-cut":
        subprocess.run(["ip", "-n", lab.ns(victim), "link", "set", "eth0", "down"], check=True, timeout=5)
    return []


def _restore(lab: Lab, kind: str, victim: str, frozen: list[int]) -> None:
    if kind == "frozen":
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    elif kind == "link-cut":
        subprocess.run(["ip", "-n", lab.ns(victim), "link", "set", "eth0", "up"], check=True, timeout=5)
        subprocess.run(["ip", "-n", lab.ns(victim), "route", "replace", "default", "via", "198.18.0.1"], timeout=5)


def measure_failure(lab: Lab, opts: TierReportOptions, kind: str) -> dict[str, Any]:
    victim = f"lb{opts.victim}"
    address = lb_address(opts.victim)
    proc = _stream(lab, opts.rate, opts.duration)
    time.sleep(opts.inject_at)
    t0 = time.time()
    frozen = _inject(lab, kind, victim)
    waited = wait_for(lambda: address not in lab.hops(), 15)
    t_withdrawn = time.time() if waited is not None else None
    rows = [json.loads(line) for line in proc.communicate(timeout=opts.duration + 10)[0].splitlines()
            if line.startswith("{")]
    _restore(lab, kind, victim, frozen)
    back = wait_for(lambda: lab.hops() == lab.all, 30)
    failed = [r for r in rows if not r["ok"]]
    return {"kind": kind, "victim": victim, "withdraw_s": round(t_withdrawn - t0, 3) if t_withdrawn else None,
            "requests": len(rows), "failed": len(failed),
            "failed_after_injection": sum(1 for r in failed if r["t"] >= t0 - 1.0),
            "back_in_s": round(back, 2) if back is not None else None,
            "timeline": [{"t": round(r["t"] - t0, 3), "ok": r["ok"]} for r in rows]}


def measure_moves(lab: Lab, opts: TierReportOptions, ecmp: str) -> dict[str, Any]:
    sports = range(20000, 20000 + opts.flows)
    before = {s: lab.route_choice(s) for s in sports}
    holder = lab.client(["--hold", str(opts.held)], stdin=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdin is not None
    line = holder.stdout.readline().strip()
    if not line.startswith("ready "):
        holder.kill()
        raise RuntimeError(f"the held connections did not open ({line!r})")
    held_ports = [int(p) for p in line.split()[1].split(",")]
    before.update({p: lab.route_choice(p) for p in held_ports if p not in before})
    drained = drain_lb(lab.prefix, "lb1", timeout=10)
    after = {s: lab.route_choice(s) for s in before}
    holder.stdin.write("go\n")
    holder.stdin.flush()
    results = json.loads(holder.communicate(timeout=30)[0].strip().splitlines()[-1])
    drain_lb(lab.prefix, "lb1", resume=True, timeout=15)
    gone = lb_address(1)
    survivors = [s for s in sports if before[s] != gone]
    moved = [s for s in survivors if after[s] != before[s]]
    held_moved = [r for r in results if r["port"] in before and before[r["port"]] != gone
                  and after[r["port"]] != before[r["port"]]]
    return {"ecmp": ecmp, "flows": len(sports), "on_survivors": len(survivors), "moved": len(moved),
            "moved_fraction": round(len(moved) / max(1, len(survivors)), 4), "withdraw_s": drained["seconds"],
            "held": len(results), "held_broken": sum(1 for r in results if not r["ok"]),
            "held_moved_between_survivors": len(held_moved),
            "held_moved_broken": sum(1 for r in held_moved if not r["ok"])}


def run_report(opts: TierReportOptions, progress=print) -> dict[str, Any]:
    report: dict[str, Any] = {"options": {k: v for k, v in opts.__dict__.items() if k != "prefix"},
                              "failures": [], "moves": []}
    lab = Lab(opts, "multipath", "m")
    try:
        progress(f"tier {opts.mode}, {opts.lbs} LBs (multipath): spread")
        report["spread"] = measure_spread(lab, opts)
        for kind in opts.failures:
            progress(f"failure: {kind}")
            report["failures"].append(measure_failure(lab, opts, kind))
        progress("flows moved: multipath")
        report["moves"].append(measure_moves(lab, opts, "multipath"))
    finally:
        lab.close()
    lab = Lab(opts, "resilient", "r")
    try:
        progress("flows moved: resilient next-hop group")
        report["moves"].append(measure_moves(lab, opts, "resilient"))
    finally:
        lab.close()
    return report
