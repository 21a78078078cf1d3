"""``pktlb bench``: one run, one generator, one core pinning, every forwarder measured the same way.

Method (also printed in the report's settings):

* Two cores.  The generator (``benchgen flood``: sendmmsg of prebuilt 64-byte UDP frames over 64
  flows, client namespace), every other lab process, the router and the switch run on CPU 0.  RPS
  steers the LB's eth0 receive work to CPU 1, where the forwarder runs: the engine process
  (pinned), or the kernel's softirq for the baselines.  What the LB sends is steered back to CPU 0
  (RPS on its switch port), so the switch and the backends do not count as LB work.
* Delivered = frames the backends' netdev ingress counters matched (right address, port and MAC),
  dropped right there.  The delivery window runs from the first to the last delivery seen (the
  backends' interface counters, polled every 20 ms; a flood delivered between two polls gets the time
  between them, an upper bound); delivered pps = delivered / window.  Loss =
  1 - delivered / sent, under a flood that offers more than the forwarder can take.
* LB CPU per packet = busy time of CPU 1 (user + system + irq + softirq + steal, /proc/stat) /
  delivered, measured in a second, paced run at 80% of the flood's delivered rate: below
  saturation, so no CPU goes into receiving frames that are then dropped (the flood's own figure,
  which includes that waste, is reported beside it).  User time on CPU 1 that is not the
  forwarder process's is another program's and is left out; other load's kernel time is not
  separable and counts (the report notes a busy LB core).
* Latency: TCP connect times from the client at low load (no flood), through the forwarder and
  straight to a backend (NAT labs get a temporary return route for that); added = through - direct.
* New-flow rate: a flood of TCP SYNs from 128 source addresses, each SYN a new flow (a scheduling
  decision and a flow-table insert; a conntrack entry in the kernel), counted at the backends like
  the UDP flood; new flows/s = delivered SYNs / delivery window.  For the engine with and without
  its kernel fast path, and for the kernel's DNAT and DSR.
* Fast path (``--fastpath``): the engine's rows again with ``pktlb run --fastpath HOOK``, measured
  only if the engine reports the fast path on (else a note says why).  At ``xdp`` the program
  attaches in generic mode (``[lb] xdp_mode = "generic"``, ``--xdp-mode``): it runs on the skb in
  softirq after RPS, on the LB core, exactly where nftables' DNAT runs, and XDP_TX leaves like the
  kernel's sends (RPS back to CPU 0).  A veth's native XDP runs in the veth's NAPI poll on the core
  that SENT the frame, before RPS: measured that way the program's work lands on the generator's
  core (LB CPU ~0.3 us/packet, the generator slowed instead).  ``--xdp-mode native`` moves it to
  the LB core with threaded NAPI (kernel thread pinned, SCHED_FIFO, 20 us poll timer while frames
  come, the switch's port an XDP_PASS program); the thread's wake-ups and context switches then
  cost more than the program (about 2-3 us/packet on a loaded core).  Each flood records the fast
  path's forwarded and punted frames (by reason).
* Warm-up: before each flood (the scapy one aside), 4 frames per flow at 2,000 frames/s, so every flow is
  established: the flood measures forwarding, the SYN flood below measures new flows.  (Full-NAT's
  first packet of a flow goes to Python for its SNAT port, even with the fast path; without the
  warm-up the flood's first tens of milliseconds would be Python's, whatever the forwarder.)
* Repeats (``--repeat N``): each row's flood and paced run N times; the highest delivered pps and
  the lowest CPU per packet count (other load only ever slows a run), every run's figure is kept.
* Backlog drain (``--workers 1,2``): the workers are stopped (SIGSTOP), frames over 8192 flows
  queue in their sockets, then SIGCONT; time until the workers' last send, once the backends have
  counted them all (best of 5).
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pktlb.core.rewrite.registry import MODES, traits_of
from pktlb.lab.fastpath import hooks_to_measure
from pktlb.lab.manage import existing_namespaces
from pktlb.reports.bench.drain import DRAIN_FLOWS, drain
from pktlb.reports.bench.lab import (
    GEN_CPU,
    LB_CPU,
    BenchError,
    BenchLab,
    changed,
    cpu_busy_seconds,
    cpu_times,
    ipis,
    process_cpu_seconds,
    rx_packets,
    softnet_dropped,
)
from pktlb.reports.bench.options import GENERATOR, SYN_FLOWS, BenchOptions, flood_args
from pktlb.reports.bench.results import BenchReport, Latency, VariantResult
from pktlb.reports.bench.variants import (
    KernelDnat,
    KernelDsr,
    KernelRouting,
    PktlbRxOnGeneratorCore,
    PktlbVariant,
    ScapyForwarder,
    Variant,
)

POLL = 0.02  # seconds between looks at the backends' counters
SETTLE = 0.3  # the run is over once no delivery was seen for this long after the generator finished
BACKGROUND_PROBE = 0.5  # seconds the LB core is watched, idle, before each flood
NOISY = 0.05  # a background share above this gets a note in the report
PACED = 0.8  # CPU per packet is measured at this share of the flood's delivered rate: no overload
WARMUP_PER_FLOW, WARMUP_RATE = 4, 2000.0  # frames per flow before an engine row's flood, at this rate
PACED_SECONDS = 4.0  # long enough for ~1000 scheduler ticks on the LB core (CPU time is tick-sampled)
# The lab that hosts the kernel baselines (routing, nftables DNAT): backends route replies via the LB.
BASELINE_MODE = next(m for m in MODES if traits_of(m).reverse_nat)


Progress = Callable[[str], None]


def machine_info() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3]}


@dataclass
class Flood:
    """What one bounded flood measured."""

    sent: int
    delivered: int
    seconds: float  # first to last delivery seen
    send_seconds: float
    lb_cpu_seconds: float
    per_backend: dict[str, int]
    extra: dict[str, Any]

    @property
    def pps(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_packet(self) -> float:
        return 1e6 * self.lb_cpu_seconds / self.delivered if self.delivered else float("nan")


def measure_flood(lab: BenchLab, variant: Variant, packets: int, seconds: float, flows: int,
                  rate: float | None = None, syn: bool = False) -> Flood:
    """One bounded flood through whatever forwards in the lab now; counters before and after.

    LB CPU = busy time of the LB core, minus user time on it that is not the forwarder's own (other
    processes of the machine; the bench runs nothing else in user space there)."""
    probes = lab.backend_probe_pids()
    before = lab.delivered()
    rx_last = sum(rx_packets(p) for p in probes)
    background = _background_busy(BACKGROUND_PROBE)
    cpu_before, drops_before, ipis_before = cpu_times(LB_CPU), softnet_dropped(LB_CPU), ipis(LB_CPU)
    procs_before = {pid: process_cpu_seconds(pid) for pid in variant.process_pids()}
    fastpath_before = variant.fastpath_counters()
    gen = lab.popen("client", [sys.executable, "-m", GENERATOR, *flood_args(lab, packets, seconds, flows, rate,
                                                                             syn=syn)],
                    cpu=GEN_CPU, stdout=subprocess.PIPE)
    first = last = None
    polled = before_first = time.monotonic()  # the poll before the first delivery seen: the window's earliest possible start
    deadline = polled + seconds + 30
    while time.monotonic() < deadline:
        time.sleep(POLL)
        now, rx = time.monotonic(), sum(rx_packets(p) for p in probes)
        if rx != rx_last:
            if first is None:
                first, before_first = now, polled
            last, rx_last = now, rx
        polled = now
        if gen.poll() is not None and now - (last or now) >= SETTLE:
            break
    core, drops_after = cpu_times(LB_CPU) - cpu_before, softnet_dropped(LB_CPU)
    ipis_on_lb = {kind: count - ipis_before.get(kind, 0) for kind, count in ipis(LB_CPU).items()}
    procs = {pid: _cpu_or_none(pid) for pid in procs_before}
    out, _ = gen.communicate(timeout=10)
    fastpath = counter_delta(fastpath_before, variant.fastpath_counters())
    after = lab.delivered()
    if gen.returncode != 0:
        raise BenchError(f"the generator failed (exit {gen.returncode})")
    sent = json.loads(out.decode().strip().splitlines()[-1])
    per_backend = {name: after[name] - before.get(name, 0) for name in after}
    forwarder = [(t[0] - procs_before[p][0], t[1] - procs_before[p][1]) for p, t in procs.items() if t]
    foreign_user = max(0.0, core.user - sum(u for u, _ in forwarder))
    extra = {"lb_core": {"busy": core.busy, "user": core.user, "system": core.system, "softirq": core.softirq,
                         "irq": core.irq, "steal": core.steal, "foreign_user": foreign_user},
             "lb_core_background_busy": background, "lb_backlog_drops": drops_after - drops_before,
             "lb_core_ipis": ipis_on_lb,
             "forwarder_process_cpu_seconds": sum(u + k for u, k in forwarder) if forwarder else None,
             "generator_errors": sent.get("errors")}
    if fastpath is not None:  # what the kernel forwarded and what it punted to Python, by reason, in this flood
        extra["fastpath_counters"] = fastpath
    window = (last - first) if first and last and last > first else 0.0
    if first is not None and window == 0.0:
        # Every delivery fell between two polls (a short flood at kernel speed): the span between those
        # polls bounds the window from above, so the rate is a lower bound rather than nothing.
        window = first - before_first
        extra["delivery_window_bounded"] = True
    return Flood(int(sent["sent"]), sum(per_backend.values()), window, float(sent["seconds"]),
                 core.busy - foreign_user, per_backend, extra)


def counter_delta(before: dict[str, dict[str, int]] | None,
                   after: dict[str, dict[str, int]] | None) -> dict[str, dict[str, int]] | None:
    if before is None or after is None:
        return None
    return {part: {k: v - before.get(part, {}).get(k, 0) for k, v in counts.items()
                   if v - before.get(part, {}).get(k, 0)} for part, counts in after.items()}


def _background_busy(seconds: float) -> float:
    """Share of the LB core busy with nothing of the bench's running (other load on the machine)."""
    before, t0 = cpu_busy_seconds(LB_CPU), time.monotonic()
    time.sleep(seconds)
    return max(0.0, (cpu_busy_seconds(LB_CPU) - before) / (time.monotonic() - t0))


def _cpu_or_none(pid: int) -> tuple[float, float] | None:
    try:
        return process_cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError):
        return None


def connect_rtts(lab: BenchLab, host: str, samples: int) -> dict[str, Any]:
    return lab.python("client", GENERATOR, ["rtt", "--host", host, "--port", str(lab.constants["service_port"]),
                                            "--count", str(samples), "--interval", "0.01"],
                      cpu=GEN_CPU, timeout=30 + samples * 1.1)


def direct_rtts(lab: BenchLab, samples: int) -> list[float]:
    """TCP connects straight to the first backend (a NAT lab's backend gets a return route via the router)."""
    first, client = lab.backend_nodes[0], lab.node("client")
    undo: list[tuple[Any, ...]] = []
    with changed(undo):
        if traits_of(lab.mode).reverse_nat:
            route = [f"{client.address}/32", "via", str(lab.constants["router_server"])]
            lab.run(first.name, ["ip", "route", "replace", *route])
            undo.append((lab.run, first.name, ["ip", "route", "del", *route]))
        return list(connect_rtts(lab, first.address, samples)["samples_us"])


def run_variant(lab: BenchLab, variant: Variant, opts: BenchOptions, direct: list[float] | None,
                progress: Progress, packets: int | None = None, rate: float | None = None) -> VariantResult:
    """The flood (throughput, loss), a paced run at PACED of that throughput (CPU per packet), latency."""
    label = getattr(variant, "label", variant.name)
    progress(f"{label}: starting")
    undo: list[tuple[Any, ...]] = []
    warmup = None
    with changed(undo):
        variant.start(lab, undo)
        try:
            if not rate:  # every flow established first (conntrack, flow tables): the flood measures forwarding
                progress(f"{label}: warm-up, {WARMUP_PER_FLOW} frames per flow")
                warmup = measure_flood(lab, variant, WARMUP_PER_FLOW * opts.flows, opts.seconds, opts.flows,
                                       WARMUP_RATE)
            floods = []
            for _ in range(opts.repeats):  # the best of them: other load on a shared machine only slows a run
                progress(f"{label}: flood of {packets or opts.packets:,} frames")
                floods.append(measure_flood(lab, variant, packets or opts.packets, opts.seconds, opts.flows, rate))
            flood = max(floods, key=lambda f: (f.pps, -f.sent + f.delivered))
            paced, paced_runs = None, []
            if opts.paced and flood.pps > 0:
                paced_rate = PACED * flood.pps
                for _ in range(opts.repeats):
                    progress(f"{label}: paced at {paced_rate:,.0f} frames/s")
                    paced_runs.append(measure_flood(lab, variant, max(1000, int(paced_rate * PACED_SECONDS)),
                                                    PACED_SECONDS + 2, opts.flows, paced_rate))
                measured = [p for p in paced_runs if p.delivered]
                paced = min(measured, key=lambda p: p.cpu_us_per_packet) if measured else paced_runs[0]
            latency = None
            if variant.latency and direct is not None and opts.latency_samples:
                progress(f"{label}: latency")
                through = connect_rtts(lab, lab.vip, opts.latency_samples)
                latency = Latency.from_samples(through["samples_us"], direct, through["failures"])
            syn = None
            if variant.new_flows and opts.syn_packets:
                progress(f"{label}: new-flow flood of {opts.syn_packets:,} SYNs")
                syn = measure_flood(lab, variant, opts.syn_packets, opts.seconds, SYN_FLOWS, syn=True)
        finally:
            stopped = variant.stop(lab)
    result = VariantResult(name=label, kind=variant.kind, mode=variant.mode, sent=flood.sent,
                           delivered=flood.delivered, seconds=flood.seconds, send_seconds=flood.send_seconds,
                           lb_cpu_seconds=flood.lb_cpu_seconds, per_backend=flood.per_backend, latency=latency,
                           extra={**flood.extra, **stopped})
    if rate:
        result.extra["offered_rate_pps"] = rate
    if warmup is not None:
        result.extra["warmup"] = {"sent": warmup.sent, "delivered": warmup.delivered,
                                  "fastpath_counters": warmup.extra.get("fastpath_counters")}
    result.extra["repeats"] = {"flood_pps": [f.pps for f in floods],
                               "flood_loss": [1 - f.delivered / f.sent if f.sent else None for f in floods],
                               "paced_cpu_us": [p.cpu_us_per_packet for p in paced_runs]}
    if syn is not None:
        result.new_flow_pps = syn.pps
        result.extra["new_flows"] = {"sent": syn.sent, "delivered": syn.delivered, "seconds": syn.seconds,
                                     "loss": 1 - syn.delivered / syn.sent if syn.sent else None,
                                     "lb_cpu_seconds": syn.lb_cpu_seconds, "cpu_us_per_flow": syn.cpu_us_per_packet,
                                     "per_backend": syn.per_backend,
                                     "fastpath_counters": syn.extra.get("fastpath_counters")}
    if paced is not None:
        result.paced_cpu_us = paced.cpu_us_per_packet
        result.extra["paced"] = {"offered_pps": PACED * flood.pps, "sent": paced.sent, "delivered": paced.delivered,
                                 "loss": 1 - paced.delivered / paced.sent if paced.sent else None,
                                 "lb_cpu_seconds": paced.lb_cpu_seconds, "cpu_us_per_packet": paced.cpu_us_per_packet,
                                 "lb_core": paced.extra["lb_core"], "lb_core_ipis": paced.extra["lb_core_ipis"],
                                 "fastpath_counters": paced.extra.get("fastpath_counters"),
                                 "lb_core_ipis_per_packet": sum(paced.extra["lb_core_ipis"].values()) / paced.delivered
                                 if paced.delivered else None}
    progress(f"{label}: {result.pps:,.0f} pps, {result.cpu_us_per_packet:.2f} us/packet on CPU {LB_CPU} "
             f"(flood {result.flood_cpu_us_per_packet:.2f}), loss {100 * result.loss:.1f}%")
    return result


def _lab(mode: str, opts: BenchOptions, progress: Progress) -> BenchLab:
    prefix = f"{opts.prefix or 'pktlb-b' + secrets.token_hex(2) + '-'}"
    if existing_namespaces(prefix):
        raise BenchError(f"namespaces with prefix {prefix!r} exist already; pick another --prefix")
    progress(f"lab up: mode {mode} (prefix {prefix})")
    lab = BenchLab(mode, prefix)
    try:
        lab.up().prepare()
    except BaseException:
        lab.down()
        raise
    return lab


def run_bench(opts: BenchOptions, progress: Progress = lambda _: None) -> BenchReport:
    """Every variant, one lab per mode (a NAT lab hosts the baselines); labs are always removed."""
    if os.geteuid() != 0:
        raise BenchError("pktlb bench needs root (network namespaces, AF_PACKET)")
    if (os.cpu_count() or 1) < 2:
        raise BenchError("pktlb bench needs two CPUs (one for the generator, one for the LB)")
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {GEN_CPU})  # the bench itself (and what it starts) stays off the LB core
    report = BenchReport(machine=machine_info(), settings=_settings(opts))
    load = float(report.machine["loadavg_at_start"][0])
    if load > 0.5:
        report.notes.append(f"load average {load} at start: other processes may have shared the LB core")
    order = sorted(opts.modes, key=lambda m: m != BASELINE_MODE)  # the NAT lab first: it hosts the baselines
    if opts.baselines and BASELINE_MODE not in order:
        order.insert(0, BASELINE_MODE)
    scaling: list[dict[str, Any]] = []
    try:
        for mode in order:
            lab = _lab(mode, opts, progress)
            try:
                direct = direct_rtts(lab, opts.latency_samples) if opts.latency_samples else None
                if mode in opts.modes:
                    report.results.append(run_variant(lab, PktlbVariant(mode), opts, direct, progress))
                    for hook in hooks_to_measure(opts.fastpath):
                        try:
                            fast = PktlbVariant(mode, fastpath=hook, xdp_mode=opts.xdp_mode)
                            report.results.append(run_variant(lab, fast, opts, direct, progress))
                        except BenchError as exc:  # the engine runs, but not with its fast path: say why
                            progress(f"pktlb {mode}, fastpath {hook}: not measured: {exc}")
                            report.notes.append(f"pktlb {mode}, fastpath {hook}: not measured: {exc}")
                if mode == BASELINE_MODE and mode in opts.modes and opts.diagnostic:
                    report.results.append(run_variant(lab, PktlbRxOnGeneratorCore(mode), opts, None, progress))
                if mode == BASELINE_MODE and opts.baselines:
                    for variant in (KernelRouting(), KernelDnat()):
                        report.results.append(run_variant(lab, variant, opts, direct, progress))
                    scapy = ScapyForwarder(opts.scapy_packets, opts.seconds)
                    report.results.append(run_variant(lab, scapy, opts, None, progress, packets=opts.scapy_packets,
                                                      rate=opts.scapy_rate))
                if traits_of(mode).backends_on_link and mode in opts.modes and opts.baselines:
                    # The kernel's own way of this mode, in its lab beside its row (DNAT is in the NAT lab).
                    report.results.append(run_variant(lab, KernelDsr(), opts, direct, progress))
                if mode in opts.modes and opts.workers != [1]:
                    runs = [drain(lab, mode, n, opts, progress) for n in opts.workers]
                    base = next((r["pps"] for r in runs if r["workers"] == 1), None)
                    speedup = {str(r["workers"]): r["pps"] / base for r in runs if base and r["workers"] != 1}
                    scaling.append({"mode": mode, "frames": opts.drain_frames, "flows": DRAIN_FLOWS, "runs": runs,
                                    "speedup": speedup})
                if mode == order[0] and opts.profile:
                    from pktlb.reports.bench.lab_profile import lab_profile

                    report.profile = lab_profile(lab, opts, progress)
                if mode == order[0] and opts.memory:
                    from pktlb.reports.bench.lab_memory import memory_report

                    report.memory = memory_report(lab, opts, progress)
            finally:
                progress(f"lab down: {lab.prefix}")
                lab.down()
    finally:
        os.sched_setaffinity(0, affinity)
    if scaling:
        report.scaling = {"modes": scaling}
    noisy = [f"{r.name} {100 * r.extra['lb_core_background_busy']:.0f}%" for r in report.results
             if r.extra.get("lb_core_background_busy", 0) > NOISY]
    if noisy:
        report.notes.append("the LB core was busy before the flood (other load; it counts in LB CPU per packet): "
                            + ", ".join(noisy))
    return report


def _settings(opts: BenchOptions) -> dict[str, Any]:
    return {"modes": opts.modes, "packets": opts.packets, "seconds": opts.seconds, "flows": opts.flows,
            "frame_bytes": 60, "generator_cpu": GEN_CPU, "lb_cpu": LB_CPU, "workers": opts.workers,
            "scapy_packets": opts.scapy_packets, "scapy_rate": opts.scapy_rate,
            "latency_samples": opts.latency_samples, "drain_frames": opts.drain_frames,
            "fastpath": hooks_to_measure(opts.fastpath), "syn_packets": opts.syn_packets, "repeats": opts.repeats,
            "xdp_mode": opts.xdp_mode,
            "method": (__doc__ or "").split("Method (also printed in the report's settings):", 1)[-1].strip()}


def write_outputs(report: BenchReport, out: str | None, text: str) -> list[str]:
    """bench.json and bench.txt in ``out`` (created); the paths written."""
    if not out:
        return []
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.json").write_text(json.dumps(report.as_dict(), indent=2, default=str) + "\n")
    (directory / "bench.txt").write_text(text + "\n")
    return [str(directory / "bench.json"), str(directory / "bench.txt")]
