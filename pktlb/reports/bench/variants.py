"""The forwarders ``pktlb bench`` compares, each a small class that sets itself up in a lab and undoes it.

* ``pktlb``: the engine (``pktlb run``) in one mode, one worker pinned to the LB core, with the
  lab's TCP service plus a UDP service on the bench port (and a TCP one there for the new-flow
  flood); with ``fastpath``, ``pktlb run --fastpath HOOK``: the kernel fast path forwards the
  established flows, and the row is measured only if the engine says the fast path is on.
* ``kernel routing``: the LB namespace forwards (ip_forward=1) with a route for the VIP to the
  first backend: the least work a forwarding hop can do here.
* ``kernel nftables DNAT``: the kernel's conntrack + DNAT over the backends (jhash of address and
  port), the LB's kernel doing what pktlb's NAT mode does.
* ``kernel nftables DSR``: in a DSR lab, a netdev ingress chain on the LB's interface rewrites the
  destination MAC to a backend's (a map indexed by jhash of address and port) and sends the frame
  back out (``fwd to``): no conntrack, no routing, the LB's kernel doing what pktlb's DSR mode does.
* ``scapy forwarder``: scripts/scapy_forwarder.py, a per-packet scapy loop (the reference of what
  not to do), fed at a paced rate it cannot reach.

Baselines run in a NAT-mode lab: its backends route back through the LB, so TCP latency works
through the kernel too.  The guard (a netdev drop of VIP traffic) is lifted for the kernel ones.
The DSR baseline runs in the DSR lab, beside pktlb's DSR row; its chain comes before the guard's.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from pktlb.core.rewrite.registry import traits_of
from pktlb.daemon.ctlsock import ControlClientError, answers, request, worker_socket
from pktlb.lab.fastpath import pass_object
from pktlb.lab.manage import log_tail, pktlb_program
from pktlb.lab.nftables import GUARD_TABLE, KERNEL_DSR_TABLE, DsrPort, guard_ruleset, kernel_dsr_ruleset
from pktlb.reports.bench.lab import (
    BENCH_PORT,
    GEN_CPU,
    LB_CPU,
    BenchError,
    BenchLab,
    children_of,
    pin,
    stop,
    wait_until,
)
from pktlb.reports.bench.results import NFT_DSR, NFTABLES, ROUTING, SCAPY

DNAT_TABLE = "pktlb_bench_dnat"
ENGINE_START_TIMEOUT = 20.0
SCAPY_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "scapy_forwarder.py"


def bench_config_text(lab_config: str, mode: str, vip: str, backends: list[tuple[str, str, str]],
                      snat_address: str | None, max_entries: int | None = None, udp_timeout: float | None = None,
                      xdp_mode: str | None = None) -> str:
    """The lab's engine config plus a UDP service on the bench port, and a TCP one on the same port for
    the new-flow flood's SYNs (backends: name, address, MAC); ``xdp_mode`` goes into its [lb] table."""
    text = lab_config.rstrip()
    if xdp_mode is not None:
        head, sep, rest = text.partition("[lb]\n")
        if not sep:
            raise ValueError("the lab's engine config has no [lb] table")
        text = f'{head}[lb]\nxdp_mode = "{xdp_mode}"\n{rest}'
    lines = [text]
    for name, protocol in (("bench", "udp"), ("bench-syn", "tcp")):
        lines += ["", "[[service]]", f'name = "{name}"', f'vip = "{vip}"', f"port = {BENCH_PORT}",
                  f'protocol = "{protocol}"', f'mode = "{mode}"', 'scheduler = "maglev"']
        if traits_of(mode).needs_snat:
            lines += [f'snat_address = "{snat_address}"', "snat_ports = [20000, 59999]"]
        for be_name, address, mac in backends:
            lines += ["", "[[service.backend]]", f'name = "{be_name}"', f'address = "{address}"',
                      f"port = {BENCH_PORT}", f'mac = "{mac}"']
    flows = []
    if max_entries is not None:
        flows.append(f"max_entries = {max_entries}")
    if udp_timeout is not None:
        flows.append(f"udp_timeout = {udp_timeout}")
    if flows:
        lines += ["", "[flows]", *flows]
    return "\n".join(lines) + "\n"


def dnat_ruleset(vip: str, backends: list[str], udp_port: int, tcp_port: int) -> str:
    """Kernel DNAT of the bench's UDP flood, the lab's TCP service and the new-flow SYNs over the backends."""
    mapping = ", ".join(f"{i} : {address}" for i, address in enumerate(backends))
    n = len(backends)
    return "\n".join([
        f"table ip {DNAT_TABLE} {{",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        f"    ip daddr {vip} udp dport {udp_port} dnat to jhash ip saddr . udp sport mod {n} map {{ {mapping} }}",
        f"    ip daddr {vip} tcp dport {tcp_port} dnat to jhash ip saddr . tcp sport mod {n} map {{ {mapping} }}",
        f"    ip daddr {vip} tcp dport {udp_port} dnat to jhash ip saddr . tcp sport mod {n} map {{ {mapping} }}",
        "  }",
        "}",
    ]) + "\n"


class Variant:
    """A forwarder the bench measures: ``start`` sets it up (recording undo steps), ``stop`` ends it."""

    name: ClassVar[str]
    kind: ClassVar[str] = "baseline"
    mode: str | None = None
    latency: ClassVar[bool] = True  # can a TCP connect go through it?
    new_flows: ClassVar[bool] = False  # does it keep flows (so a SYN flood measures its new-flow rate)?

    def start(self, lab: BenchLab, undo: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def stop(self, lab: BenchLab) -> dict[str, Any]:
        """End it; what it can tell about itself (engine counters...)."""
        return {}

    def process_pids(self) -> list[int]:
        """The user-space forwarding processes, if any (their CPU time is reported beside the core's)."""
        return []

    def fastpath_counters(self) -> dict[str, dict[str, int]] | None:
        """A kernel fast path's counters (forwarded, punts by reason), if the variant has one."""
        return None


def set_forwarding(lab: BenchLab, value: int, undo: list[tuple[Any, ...]]) -> None:
    """The LB namespace's ip_forward set to ``value``; the old value goes on ``undo``."""
    old = int(lab.run("lb", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip())
    lab.sysctl("lb", "net.ipv4.ip_forward", value)
    undo.append((lab.sysctl, "lb", "net.ipv4.ip_forward", old))


def _lift_guard(lab: BenchLab, undo: list[tuple[Any, ...]]) -> None:
    c = lab.constants
    snat = c["snat_address"] if traits_of(lab.mode).needs_snat else None
    lab.nft_delete("lb", "netdev", GUARD_TABLE)
    undo.append((lab.nft, "lb", guard_ruleset("eth0", c["vip_network"], snat, c["snat_ports"])))


class PktlbVariant(Variant):
    name = "pktlb"
    kind = "pktlb"
    new_flows = True
    mode: str  # always a packet mode (set by __init__)

    def __init__(self, mode: str, workers: int = 1, max_entries: int | None = None,
                 udp_timeout: float | None = None, wrapper: list[str] | None = None,
                 fastpath: str | None = None, xdp_mode: str = "generic") -> None:
        self.mode, self.workers, self.wrapper, self.xdp_mode = mode, workers, wrapper or [], xdp_mode
        self.max_entries, self.udp_timeout, self.fastpath = max_entries, udp_timeout, fastpath
        self.proc: Any = None
        self.socket = ""
        self.napi_threads: list[int] = []

    @property
    def label(self) -> str:
        return f"pktlb {self.mode}" + (f", fastpath {self.fastpath}" if self.fastpath else "")

    def start(self, lab: BenchLab, undo: list[tuple[Any, ...]]) -> None:
        set_forwarding(lab, 0, undo)
        native = self.fastpath == "xdp" and self.xdp_mode == "native"
        if native:  # the program's XDP_TX reaches the switch only if the peer runs XDP too
            port = lab.lb_switch_port
            lab.run("sw", ["ip", "-force", "link", "set", "dev", port, "xdp", "obj", str(pass_object()), "sec", "xdp"])
            undo.append((lab.run, "sw", ["ip", "link", "set", "dev", port, "xdp", "off"]))
        c = lab.constants
        backends = [(b.name, b.address, b.interfaces[0].mac) for b in lab.backend_nodes]
        lab_config = lab.paths.config.read_text()
        config = lab.paths.file("bench.toml")
        config.write_text(bench_config_text(lab_config, self.mode, lab.vip, backends, c.get("snat_address"),
                                            self.max_entries, self.udp_timeout,
                                            self.xdp_mode if self.fastpath == "xdp" else None))
        self.socket = str(lab.paths.control_socket)
        log = lab.paths.log("bench-engine")
        argv = [*self.wrapper, pktlb_program(), "run", "-c", str(config), "--no-health", "--workers", str(self.workers)]
        argv += ["--fastpath", self.fastpath] if self.fastpath else []
        self.proc = lab.popen("lb", argv, cpu=LB_CPU if self.workers == 1 else None, log=log)
        sockets = [worker_socket(self.socket, i) for i in range(self.workers)]
        if not wait_until(lambda: self.proc.poll() is not None or all(answers(s) for s in sockets),
                          ENGINE_START_TIMEOUT, 0.1) or self.proc.poll() is not None:
            stop(self.proc)
            raise BenchError(f"the engine did not start ({' '.join(argv)}): {log_tail(str(log)) or 'no log'}")
        for index, pid in enumerate(self.process_pids()):
            pin(pid, LB_CPU if self.workers == 1 else index % 2)
        if self.fastpath:
            self._check_fastpath()
        if native:  # the program runs in the LB interface's NAPI: on the LB core, as RPS does
            try:
                self.napi_threads = lab.thread_napi("lb", "eth0", LB_CPU, coalesce=True)
            except BenchError:
                stop(self.proc)
                raise

    def _check_fastpath(self) -> None:
        """The engine's own word (``pktlb stats``) that its fast path is on at the hook asked for."""
        said = [s.get("fastpath") or {} for s in self.stats()]
        if not said or any(f.get("hook") != self.fastpath for f in said):
            reason = "; ".join(str(f.get("reason") or f) for f in said) or "no stats"
            stop(self.proc)
            raise BenchError(f"the engine runs without its fast path at {self.fastpath}: {reason}")

    def process_pids(self) -> list[int]:
        if self.proc is None:
            return []
        return [self.proc.pid] if self.workers == 1 else children_of(self.proc.pid)

    def fastpath_counters(self) -> dict[str, dict[str, int]] | None:
        """The fast path's forwarded and punt counters now, summed over the workers (None without it)."""
        if not self.fastpath:
            return None
        out: dict[str, dict[str, int]] = {"forwarded": {}, "punts": {}}
        for s in self.stats():
            for part in out:
                for key, value in ((s.get("fastpath") or {}).get(part) or {}).items():
                    out[part][key] = out[part].get(key, 0) + int(value)
        return out

    def stats(self) -> list[dict[str, Any]]:
        sockets = [worker_socket(self.socket, i) for i in range(self.workers)]
        out = []
        for path in sockets:
            try:
                out.append(request(path, {"cmd": "stats"}))
            except ControlClientError:
                pass
        return out

    def stop(self, lab: BenchLab, signum: int = signal.SIGTERM) -> dict[str, Any]:
        stats = self.stats()
        if self.napi_threads:
            lab.unthread_napi("lb", "eth0")  # while the program (and so NAPI) is still there
        if self.proc is not None:
            stop(self.proc, signum=signum)
        return {"engine": [{"worker": s.get("worker"), "totals": s.get("totals"), "port": s.get("port"),
                            "flows": s.get("flows"), "fastpath": s.get("fastpath")} for s in stats],
                **({"napi_threads_on_lb_cpu": len(self.napi_threads)} if self.napi_threads else {}),
                **({"xdp_mode": self.xdp_mode} if self.fastpath == "xdp" else {})}


class PktlbRxOnGeneratorCore(PktlbVariant):
    """Diagnostic: the engine as above, but without RPS on the LB's interface.

    The LB's receive work (the frame into the AF_PACKET socket, the wake-up) then stays on the
    generator's core, as in a set-up without receive steering, and CPU 1 holds only the engine
    process.  Its delivered rate shows what the hand-off between the cores costs the engine: every
    inter-processor interrupt that lands on CPU 1 while Python runs there is a hypervisor exit in
    this VM.  Its CPU per packet leaves that receive work out, so it gets no CPU ratio and no target.
    """

    kind = "diagnostic"
    new_flows = False  # the engine's new-flow rate is measured on its own row

    @property
    def label(self) -> str:
        return f"pktlb {self.mode}, rx on CPU {GEN_CPU}"

    def start(self, lab: BenchLab, undo: list[tuple[Any, ...]]) -> None:
        lab.set_rps("lb", "eth0", 0)
        undo.append((lab.set_rps, "lb", "eth0", 1 << LB_CPU))
        super().start(lab, undo)




class KernelRouting(Variant):
    name = ROUTING

    def start(self, lab: BenchLab, undo: list[tuple[Any, ...]]) -> None:
        first = lab.backend_nodes[0]
        _lift_guard(lab, undo)
        set_forwarding(lab, 1, undo)
        lab.run("lb", ["ip", "route", "replace", f"{lab.vip}/32", "via", first.address])
        undo.append((lab.run, "lb", ["ip", "route", "del", f"{lab.vip}/32"]))
        lab.run(first.name, ["ip", "address", "add", f"{lab.vip}/32", "dev", "lo"])  # for the TCP latency probe
        undo.append((lab.run, first.name, ["ip", "address", "del", f"{lab.vip}/32", "dev", "lo"]))


class KernelDnat(Variant):
    name = NFTABLES
    new_flows = True  # conntrack: every SYN a new entry

    def start(self, lab: BenchLab, undo: list[tuple[Any, ...]]) -> None:
        _lift_guard(lab, undo)
        set_forwarding(lab, 1, undo)
        backends = [b.address for b in lab.backend_nodes]
        lab.nft("lb", dnat_ruleset(lab.vip, backends, BENCH_PORT, int(lab.constants["service_port"])))
        undo.append((lab.nft_delete, "lb", "ip", DNAT_TABLE))


class KernelDsr(Variant):
    """The kernel's DSR (lab/nftables.py's ruleset, the same one ``--engine kernel`` loads in a DSR lab),
    over the bench's UDP port and the lab's TCP service; the LB's ip_forward stays 0."""

    name = NFT_DSR
    mode = "dsr"
    new_flows = True  # stateless: a new flow costs it what any packet does

    def start(self, lab: BenchLab, undo: list[tuple[Any, ...]]) -> None:
        lb = lab.node("lb").interfaces[0]
        ports = [DsrPort("udp", BENCH_PORT), DsrPort("tcp", BENCH_PORT),
                 DsrPort("tcp", int(lab.constants["service_port"]))]
        macs = [str(b.interfaces[0].mac) for b in lab.backend_nodes]
        lab.nft("lb", kernel_dsr_ruleset(lb.ifname, str(lb.mac), lab.vip, ports, macs))
        undo.append((lab.nft_delete, "lb", "netdev", KERNEL_DSR_TABLE))


class ScapyForwarder(Variant):
    name = SCAPY
    kind = "reference"
    latency = False  # it forwards the UDP flood only, one way

    def __init__(self, packets: int, seconds: float) -> None:
        self.packets, self.seconds = packets, seconds
        self.proc: Any = None

    def start(self, lab: BenchLab, undo: list[tuple[Any, ...]]) -> None:
        if not SCAPY_SCRIPT.exists():
            raise BenchError(f"{SCAPY_SCRIPT} is missing")
        set_forwarding(lab, 0, undo)
        lb = lab.node("lb")
        ready = lab.paths.ready / "bench-scapy"
        ready.unlink(missing_ok=True)
        backends = [f"{b.address}={b.interfaces[0].mac}" for b in lab.backend_nodes]
        # Bounds for its whole life: the flood, the paced run after it (fewer frames), and slack.
        argv = [sys.executable, str(SCAPY_SCRIPT), "--iface", "eth0", "--vip", lab.vip, "--port", str(BENCH_PORT),
                "--lb-mac", lb.interfaces[0].mac, "--count", str(10 * self.packets),
                "--seconds", str(self.seconds + 60), "--ready-file", str(ready), *backends]
        self.proc = lab.popen("lb", argv, cpu=LB_CPU, log=lab.paths.log("bench-scapy"))
        if not wait_until(lambda: ready.exists() or self.proc.poll() is not None, ENGINE_START_TIMEOUT, 0.05) \
                or self.proc.poll() is not None:
            stop(self.proc)
            raise BenchError(f"the scapy forwarder did not start: {log_tail(str(lab.paths.log('bench-scapy')))}")
        time.sleep(0.2)  # sniff() opens its socket right after the callback

    def process_pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def stop(self, lab: BenchLab) -> dict[str, Any]:
        if self.proc is not None:
            stop(self.proc, grace=5)
        return {}
