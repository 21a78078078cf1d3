"""A small BGP rig for the LB tier's lab tests: a bridge, a router, a client and N LB namespaces,
BIRD on the router and on each LB (configs from ``pktlb.lab.tier.plan``), no engines.

Everything is made under a unique prefix (``pktlb-t<hex>-``) and removed by ``close()``: BIRD and
nhsync processes by PID, then the namespaces, then the state directory.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from pktlb.adapters import birdctl
from pktlb.lab.tier import inspect
from pktlb.lab.tier.plan import TierOptions, bird_argv, bird_paths, make_tier, nhsync_argv

PKTLB = str(Path(sys.executable).parent / "pktlb")
TIMEOUT = 10.0


def sh(*argv: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    done = subprocess.run(full, capture_output=True, text=True, timeout=TIMEOUT)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(full)}: {done.stderr.strip()}")
    return done


class BgpRig:
    def __init__(self, statedir: Path, lbs: int = 3, ecmp: str = "multipath", bfd: bool = False) -> None:
        self.prefix = f"pktlb-t{secrets.token_hex(3)}-"
        self.statedir = statedir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.namespaces: list[str] = []
        self.plan = make_tier(TierOptions(lbs, "dsr", ecmp, bfd), vip="198.19.0.100", router_address="198.18.0.1",
                              statedir=str(statedir))
        for sub in ("bird", "logs"):
            (statedir / sub).mkdir(parents=True, exist_ok=True)
        for rel, text in self.plan.files.items():
            (statedir / rel).write_text(text)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def ns(self, node: str) -> str:
        return self.prefix + node

    def _add_ns(self, node: str) -> str:
        name = self.ns(node)
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def _host(self, node: str, ifname: str, address: str, bridge: str) -> None:
        port = f"{bridge[-1]}-{node}"[:15]
        sh("ip", "-n", self.ns("sw"), "link", "add", port, "type", "veth", "peer", "name", ifname,
           "netns", self.ns(node))
        sh("ip", "-n", self.ns("sw"), "link", "set", port, "master", bridge, "up")
        sh("ip", "-n", self.ns(node), "addr", "add", address, "dev", ifname)
        sh("ip", "-n", self.ns(node), "link", "set", ifname, "up")

    def _build(self) -> None:
        sw = self._add_ns("sw")
        for br in ("br0", "br1"):
            sh("ip", "-n", sw, "link", "add", br, "type", "bridge")
            sh("ip", "-n", sw, "link", "set", br, "up")
        router = self._add_ns("router")
        self._host("router", "eth0", "198.18.0.1/24", "br0")
        self._host("router", "eth1", "198.18.1.1/24", "br1")
        for key, value in {**self.plan.router_sysctls, "net.ipv4.ip_forward": 1}.items():
            sh("sysctl", "-q", "-w", f"{key}={value}", ns=router)
        self._add_ns("client")
        self._host("client", "eth0", "198.18.1.10/24", "br1")
        for lb in self.plan.lbs:
            self._add_ns(lb.name)
            self._host(lb.name, "eth0", f"{lb.address}/24", "br0")
        self.start_bird("router")
        for lb in self.plan.lbs:
            self.start_bird(lb.name)
        if self.plan.options.ecmp == "resilient":
            ready = self.statedir / "nhsync.ready"
            self._spawn("nhsync", "router", nhsync_argv(PKTLB, str(ready)))
            self.wait(ready.exists, "nhsync ready")

    def _spawn(self, key: str, node: str, argv: list[str]) -> None:
        log = open(self.statedir / "logs" / f"{key}.log", "ab")
        self.procs[key] = subprocess.Popen(["ip", "netns", "exec", self.ns(node), *argv], stdout=log, stderr=log,
                                           stdin=subprocess.DEVNULL)
        log.close()

    def bird_socket(self, node: str) -> str:
        return str(self.statedir / bird_paths(node)["socket"])

    def start_bird(self, node: str) -> None:
        self._spawn(f"bird-{node}", node, bird_argv(str(self.statedir), node))
        self.wait(lambda: _answers(self.bird_socket(node)), f"BIRD on {node}")

    def kill(self, key: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[key]
        os.kill(proc.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            proc.wait(TIMEOUT)

    def announce(self, node: str, on: bool = True) -> None:
        birdctl.set_protocol(self.bird_socket(node), "announce", on)

    def sessions(self) -> dict[str, str]:
        return {name: row.info for name, row in birdctl.protocols(self.bird_socket("router")).items()
                if row.proto == "BGP"}

    def next_hops(self, prefix: str = "198.19.0.100") -> list[str]:
        """The gateways of the router's main-table route to ``prefix`` (multipath or a nexthop group)."""
        return inspect.next_hops(self.ns("router"), prefix)

    def lb_for(self, sport: int, src: str = "198.18.1.10") -> str:
        """The next hop the router picks for a TCP flow from the client to the VIP (forwarding lookup)."""
        out = sh("ip", "-j", "route", "get", "198.19.0.100", "from", src, "iif", "eth1", "ipproto", "tcp",
                 "sport", str(sport), "dport", "80", ns=self.ns("router")).stdout
        return json.loads(out)[0]["gateway"]

    def wait(self, predicate, what: str, timeout: float = TIMEOUT) -> float:
        """Seconds until ``predicate()`` held.  A BIRD control socket that does not answer in time (a
        daemon busy or just restarted) is a state to poll again, not a failure: the last such error is
        reported if the wait times out."""
        started = time.monotonic()
        last: birdctl.BirdError | None = None
        while time.monotonic() - started < timeout:
            try:
                if predicate():
                    return time.monotonic() - started
            except birdctl.BirdError as exc:
                last = exc
            time.sleep(0.01)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last: {last})" if last else ""))

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for name in reversed(self.namespaces):
            sh("ip", "netns", "delete", name, check=False)


def _answers(path: str) -> bool:
    try:
        birdctl.command(path, "show status", timeout=0.5)
        return True
    except birdctl.BirdError:
        return False
