"""The bench's hands in a lab: commands in namespaces, counters at the backends, CPU time, processes.

The bench builds an ordinary lab (``engine none``: nothing forwards until the bench says so) and
changes only things inside the lab's namespaces, undoing each change after the variant that
needed it (everything else goes with ``lab down``):

* the LB's receive queue is steered to the LB core with RPS, so whatever forwards (the engine,
  the kernel's routing or DNAT, scapy) and the kernel's receive work for it run on one core;
* every backend counts what reaches it in a netdev ingress chain (kernel counters, no Python on
  the path) and drops it there, so backends send nothing back and need no CPU of their own;
* every process of the lab is pinned to the generator's core, away from the LB core.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pktlb.lab.manage import lab_down, lab_up
from pktlb.lab.netns import Namespace
from pktlb.lab.paths import LabPaths
from pktlb.lab.state import pids_in_namespace
from pktlb.lab.topology import LabOptions, Plan

BENCH_PORT = 5000  # the UDP service the flood goes to (the lab's own TCP service stays on port 80)
GEN_CPU, LB_CPU = 0, 1
COUNT_TABLE = "pktlb_bench_count"
COMMAND_TIMEOUT = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
NAPI_COALESCE_NS, NAPI_DEFER_POLLS = 20_000, 2  # see BenchLab.thread_napi
NAPI_PRIORITY = 50  # SCHED_FIFO priority of a threaded NAPI's kernel thread (the kernel's default for irq threads)


class BenchError(RuntimeError):
    """The bench cannot go on (a command failed, the engine did not start); the message says which."""


@dataclass(frozen=True)
class CpuTimes:
    """One CPU's time since boot, in seconds, from /proc/stat."""

    user: float
    system: float
    irq: float
    softirq: float
    steal: float

    @property
    def busy(self) -> float:
        return self.user + self.system + self.irq + self.softirq + self.steal

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user - other.user, self.system - other.system, self.irq - other.irq,
                        self.softirq - other.softirq, self.steal - other.steal)


def cpu_times(cpu: int, stat_text: str | None = None) -> CpuTimes:
    """user (+nice), system, irq, softirq and steal time of one CPU from /proc/stat."""
    text = stat_text if stat_text is not None else Path("/proc/stat").read_text()
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == f"cpu{cpu}":
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) / CLK_TCK for v in fields[1:9])
            return CpuTimes(user + nice, system, irq, softirq, steal)
    raise BenchError(f"no cpu{cpu} line in /proc/stat")


def cpu_busy_seconds(cpu: int, stat_text: str | None = None) -> float:
    """Busy time of one CPU since boot (user, nice, system, irq, softirq, steal)."""
    return cpu_times(cpu, stat_text).busy


def softnet_dropped(cpu: int, text: str | None = None) -> int:
    """Frames the CPU's input backlog dropped (netdev_max_backlog full): /proc/net/softnet_stat column 2."""
    rows = (text if text is not None else Path("/proc/net/softnet_stat").read_text()).split("\n")
    return int(rows[cpu].split()[1], 16)


def ipis(cpu: int, text: str | None = None) -> dict[str, int]:
    """Inter-processor interrupts one CPU received: function calls (RPS hand-offs) and reschedules
    (wake-ups), from /proc/interrupts.  In a VM each costs an exit to the hypervisor."""
    out = {}
    for line in (text if text is not None else Path("/proc/interrupts").read_text()).splitlines():
        fields = line.split()
        if fields and fields[0] in ("CAL:", "RES:"):
            out["function_call" if fields[0] == "CAL:" else "reschedule"] = int(fields[1 + cpu])
    return out


def process_cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process from /proc/PID/stat (reaped children not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def rx_packets(pid: int, ifname: str = "eth0") -> int:
    """Frames received on ``ifname`` in the network namespace of ``pid`` (its /proc/PID/net/dev)."""
    for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == ifname:
            return int(rest.split()[1])
    return 0


def count_ruleset(interface: str, own_address: str, vip: str, port: int) -> str:
    """Backend ingress: count and drop the flood (UDP, or the new-flow flood's TCP SYNs) as NAT/full-NAT/DSR/
    routing deliver it, or inside IP-in-IP (outer and inner headers of 20 bytes: the inner protocol is
    byte 29, the inner destination port bytes 42-43)."""
    return "\n".join([
        f"table netdev {COUNT_TABLE} {{",
        "  chain ingress {",
        f'    type filter hook ingress device "{interface}" priority -10; policy accept;',
        f"    meta pkttype host ip daddr {{ {own_address}, {vip} }} udp dport {port} counter drop",
        f"    meta pkttype host ip daddr {{ {own_address}, {vip} }} tcp dport {port} counter drop",
        f"    meta pkttype host ip daddr {own_address} ip protocol 4 @nh,232,8 {{ 6, 17 }} @nh,336,16 {port} "
        "counter drop",
        "  }",
        "}",
    ]) + "\n"


def parse_counters(nft_json: str) -> int:
    """Sum of the packet counters in ``nft -j list table ...`` output."""
    data = json.loads(nft_json)
    total = 0
    for item in data.get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        for expr in rule.get("expr", []):
            if "counter" in expr:
                total += int(expr["counter"]["packets"])
    return total


class BenchLab:
    """One lab the bench drives: its plan, its namespaces and the bench's changes to them."""

    def __init__(self, mode: str, prefix: str, backends: int = 3) -> None:
        self.mode, self.prefix, self.backends_count = mode, prefix, backends
        self.plan: Plan | None = None
        self.procs: list[subprocess.Popen[bytes]] = []

    # -- life cycle ------------------------------------------------------------------------------
    def up(self) -> BenchLab:
        result = lab_up(LabOptions(mode=self.mode, backends=self.backends_count, engine="none", prefix=self.prefix))
        self.plan = result.plan
        if result.reused:
            raise BenchError(f"a lab with prefix {self.prefix!r} was already up; the bench needs its own "
                             f"(run `pktlb lab down --prefix {self.prefix}`)")
        return self

    def down(self) -> None:
        for proc in self.procs:
            stop(proc)
        lab_down(self.prefix)

    def prepare(self) -> None:
        """RPS: the LB's receive work on the LB core, what it sends (the switch, the backends) on the
        generator's core; counting rules on the backends; every lab process on the generator's core."""
        self.set_rps("lb", "eth0", 1 << LB_CPU)
        self.set_rps("sw", self.lb_switch_port, 1 << GEN_CPU)
        for be in self.backend_nodes:
            self.nft(be.name, count_ruleset("eth0", be.address, self.vip, BENCH_PORT))
        self.pin_lab_processes()

    def set_rps(self, node: str, ifname: str, mask: int) -> None:
        """Receive packet steering of the interface's queue to the CPUs in ``mask`` (0: none)."""
        self.sh(node, f"echo {mask:x} > /sys/class/net/{ifname}/queues/rx-0/rps_cpus")

    @property
    def lb_switch_port(self) -> str:
        """The switch-side end of the LB's veth: what the LB sends is received there."""
        return str(self.node("lb").interfaces[0].port)

    def thread_napi(self, node: str, ifname: str, cpu: int, coalesce: bool = False) -> list[int]:
        """Threaded NAPI on an interface that has NAPI (a veth with an XDP program), its kernel thread pinned
        to ``cpu``; the thread ids.  A veth runs its XDP program in NAPI, scheduled on the CPU that sent
        the frame (the generator's) and not subject to RPS: without this the fast path would run on the
        generator's core, off the LB core's books.  The thread runs SCHED_FIFO, ahead of every ordinary
        task as softirq work is.  ``coalesce``: while frames keep coming, NAPI polls again from a timer
        every NAPI_COALESCE_NS on its own core instead of being woken by the sender for every few frames
        (a NIC's interrupt moderation; each wake-up is an IPI and a context switch).  Off first, so the thread found is the one made now."""
        path = f"/sys/class/net/{ifname}/threaded"
        self.run(node, ["sh", "-c", f"echo 0 > {path}"], check=False)
        before = napi_threads(ifname)
        self.sh(node, f"echo 1 > {path}")
        if coalesce:
            self.sh(node, f"echo {NAPI_DEFER_POLLS} > /sys/class/net/{ifname}/napi_defer_hard_irqs; "
                          f"echo {NAPI_COALESCE_NS} > /sys/class/net/{ifname}/gro_flush_timeout")
        made = sorted(set(napi_threads(ifname)) - set(before))
        if not made:
            raise BenchError(f"no NAPI thread appeared for {ifname} in {self.ns(node)} ({path})")
        for tid in made:  # softirq work preempts every task; a NAPI thread must too, or other load starves it
            os.sched_setaffinity(tid, {cpu})
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(NAPI_PRIORITY))
        return made

    def unthread_napi(self, node: str, ifname: str) -> None:
        """NAPI back in softirq (done while the interface still has NAPI: after that the flag cannot change)."""
        self.run(node, ["sh", "-c", f"echo 0 > /sys/class/net/{ifname}/threaded; "
                                    f"echo 0 > /sys/class/net/{ifname}/napi_defer_hard_irqs; "
                                    f"echo 0 > /sys/class/net/{ifname}/gro_flush_timeout"], check=False)

    def pin_lab_processes(self) -> None:
        for ns in self.namespaces:
            for pid in pids_in_namespace(ns):
                pin(pid, GEN_CPU)

    # -- facts -----------------------------------------------------------------------------------
    @property
    def constants(self) -> dict[str, Any]:
        assert self.plan is not None
        return self.plan.constants

    @property
    def vip(self) -> str:
        return str(self.constants["vip"])

    @property
    def statedir(self) -> Path:
        return self.paths.statedir

    @property
    def paths(self) -> LabPaths:
        return LabPaths(self.prefix)

    @property
    def namespaces(self) -> list[str]:
        assert self.plan is not None
        return self.plan.namespaces

    @property
    def backend_nodes(self) -> list[Any]:
        assert self.plan is not None
        return self.plan.by_role("backend")

    def node(self, name: str) -> Any:
        assert self.plan is not None
        return self.plan.node(name)

    def ns(self, node: str) -> str:
        return self.prefix + node

    # -- commands --------------------------------------------------------------------------------
    def run(self, node: str, argv: list[str], *, timeout: float = COMMAND_TIMEOUT, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return Namespace(self.ns(node)).run(argv, timeout=timeout, check=check, stdin=stdin)

    def sh(self, node: str, script: str) -> None:
        self.run(node, ["sh", "-c", script])

    def nft(self, node: str, ruleset: str) -> None:
        self.run(node, ["nft", "-f", "-"], stdin=ruleset)

    def nft_delete(self, node: str, family: str, table: str) -> None:
        self.run(node, ["nft", "delete", "table", family, table], check=False)

    def sysctl(self, node: str, key: str, value: int) -> None:
        self.run(node, ["sysctl", "-q", "-w", f"{key}={value}"])

    def popen(self, node: str, argv: list[str], *, cpu: int | None, log: Path | None = None,
              stdout: int | None = None) -> subprocess.Popen[bytes]:
        pinned = ["taskset", "-c", str(cpu)] if cpu is not None else []
        out = open(log, "ab") if log else None  # noqa: SIM115 (the child keeps it; closed below)
        try:
            proc = Namespace(self.ns(node)).popen([*pinned, *argv], stdout=stdout if stdout is not None else (
                out or subprocess.DEVNULL), stderr=out or subprocess.DEVNULL)
        finally:
            if out:
                out.close()
        self.procs.append(proc)
        return proc

    def python(self, node: str, module: str, args: list[str], *, cpu: int | None,
               timeout: float) -> dict[str, Any]:
        """Run ``python -m module args`` in a node (pinned), and parse the JSON it prints."""
        pinned = ["taskset", "-c", str(cpu)] if cpu is not None else []
        done = self.run(node, [*pinned, sys.executable, "-m", module, *args], timeout=timeout)
        return json.loads(done.stdout.strip().splitlines()[-1])

    # -- counting --------------------------------------------------------------------------------
    def delivered(self) -> dict[str, int]:
        """Per backend: frames the counting rules matched so far."""
        return {be.name: parse_counters(self.run(be.name, ["nft", "-j", "list", "table", "netdev", COUNT_TABLE]).stdout)
                for be in self.backend_nodes}

    def backend_probe_pids(self) -> list[int]:
        """One process per backend namespace, whose /proc/PID/net/dev shows that namespace's counters."""
        pids = []
        for be in self.backend_nodes:
            found = pids_in_namespace(self.ns(be.name))
            if not found:
                raise BenchError(f"no process in {self.ns(be.name)} to read its interface counters through")
            pids.append(found[0])
        return pids


def pin(pid: int, cpu: int) -> None:
    """Pin every thread of a process to one CPU (a process that is gone is ignored)."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), {cpu})
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        pass


def napi_threads(ifname: str, proc: Path = Path("/proc")) -> list[int]:
    """Kernel threads of threaded NAPI for interfaces named ``ifname`` (any namespace): ``napi/IF-ID``."""
    prefix = f"napi/{ifname}-"[:15]  # comm holds 15 characters
    found = []
    for entry in os.scandir(proc):
        if entry.name.isdigit():
            try:
                comm = (proc / entry.name / "comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith(prefix):
                found.append(int(entry.name))
    return found


def children_of(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0, signum: int = signal.SIGTERM) -> int | None:
    """``signum`` (SIGTERM), then SIGKILL after ``grace`` seconds; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signum)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode


@contextmanager
def changed(undo: list[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    """Collect (function, *args) undo steps while a variant is set up; run them in reverse afterwards."""
    try:
        yield undo
    finally:
        for fn, *args in reversed(undo):
            try:
                fn(*args)
            except (BenchError, subprocess.SubprocessError, OSError):
                pass


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
