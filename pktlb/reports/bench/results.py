"""What ``pktlb bench`` measured, as data: per-variant figures, ratios to the baselines, the targets.

Pure: no lab, no sockets.  ``run.py`` fills these records; ``render_text`` prints them and
``BenchReport.as_dict`` is the JSON.  Ratios are taken within one run, never against numbers from
another machine or another day.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from pktlb.core.rewrite.registry import traits_of

NFTABLES, ROUTING, SCAPY = "kernel nftables DNAT", "kernel routing", "scapy forwarder"
NFT_DSR = "kernel nftables DSR"
BASELINES = (("nftables", NFTABLES), ("nftables_dsr", NFT_DSR), ("routing", ROUTING), ("scapy", SCAPY))


def kernel_baseline(result: VariantResult, by_name: dict[str, VariantResult]) -> str:
    """The baseline this row's "kern" ratios and targets use: the kernel's way of doing its mode, if measured
    (the netdev MAC rewrite where only the MAC changes: dsr), else DNAT (tunnel has no kernel way here)."""
    own = NFT_DSR if traits_of(result.mode).backends_on_link else NFTABLES
    return own if own in by_name else NFTABLES


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between ranks; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Latency:
    """TCP-connect round trips at low load, through the variant and straight to a backend."""

    samples: int
    failures: int
    p50_us: float
    p99_us: float
    direct_p50_us: float
    direct_p99_us: float

    @classmethod
    def from_samples(cls, through: list[float], direct: list[float], failures: int = 0) -> Latency:
        return cls(len(through), failures, percentile(through, 50), percentile(through, 99),
                   percentile(direct, 50), percentile(direct, 99))

    @property
    def added_p50_us(self) -> float:
        return self.p50_us - self.direct_p50_us

    @property
    def added_p99_us(self) -> float:
        return self.p99_us - self.direct_p99_us

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "added_p50_us": self.added_p50_us, "added_p99_us": self.added_p99_us}


@dataclass
class VariantResult:
    """One forwarder under one bounded flood."""

    name: str
    kind: str  # "pktlb", "baseline", "reference" or "diagnostic" (no target; CPU not comparable)
    mode: str | None
    sent: int
    delivered: int
    seconds: float  # first to last delivery (the delivery window)
    send_seconds: float
    lb_cpu_seconds: float  # busy time of the LB core over the run
    per_backend: dict[str, int] = field(default_factory=dict)
    latency: Latency | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    paced_cpu_us: float | None = None  # LB CPU per packet in a paced run below saturation (see run.py)
    new_flow_pps: float | None = None  # SYNs delivered per second by a flood of new flows (see run.py)

    @property
    def pps(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    @property
    def flood_cpu_us_per_packet(self) -> float:
        """Under the flood: includes the receive work spent on frames that were then dropped."""
        return 1e6 * self.lb_cpu_seconds / self.delivered if self.delivered else math.nan

    @property
    def cpu_us_per_packet(self) -> float:
        """The paced run's figure when there is one, else the flood's."""
        return self.paced_cpu_us if self.paced_cpu_us is not None else self.flood_cpu_us_per_packet

    @property
    def loss(self) -> float:
        return 1 - self.delivered / self.sent if self.sent else math.nan

    def as_dict(self) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if k != "latency"}
        row.update(pps=self.pps, cpu_us_per_packet=self.cpu_us_per_packet,
                   flood_cpu_us_per_packet=self.flood_cpu_us_per_packet, loss=self.loss,
                   latency=self.latency.as_dict() if self.latency else None)
        return row


@dataclass
class Target:
    """One target of the issue, checked against this run's ratios."""

    name: str
    value: float
    limit: float
    at_most: bool  # True: value <= limit passes; False: value >= limit passes
    note: str = ""  # why a missed target may say little about the forwarder (printed beside the verdict)

    @property
    def met(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    @property
    def missed_by(self) -> float:
        """How far off, as a factor (1.0 when met): value/limit for at-most, limit/value for at-least."""
        if self.met or math.isnan(self.value) or self.value == 0:
            return 1.0 if self.met else math.inf
        return self.value / self.limit if self.at_most else self.limit / self.value

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "limit": self.limit,
                "rule": "at most" if self.at_most else "at least", "met": self.met, "missed_by": self.missed_by,
                "note": self.note or None}


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def ratios(result: VariantResult, by_name: dict[str, VariantResult]) -> dict[str, float]:
    """A variant's pps and CPU-per-packet ratios to the baselines of the same run (nan if absent)."""
    out: dict[str, float] = {}
    for key, base in (*BASELINES, ("kernel", kernel_baseline(result, by_name))):
        other = by_name.get(base)
        out[f"pps_vs_{key}"] = ratio(result.pps, other.pps) if other else math.nan
        out[f"cpu_vs_{key}"] = ratio(result.cpu_us_per_packet, other.cpu_us_per_packet) if other else math.nan
        if result.kind == "diagnostic":  # part of its work ran on the other core: no CPU comparison
            out[f"cpu_vs_{key}"] = math.nan
    return out


CPU_TARGETS = {"nat": 1.5, "dsr": 1.2}  # LB CPU per packet, at most this times the mode's kernel baseline
LOSS_SLACK = 0.001  # "no loss": at most 0.1% of the frames sent (a frame in flight when counting stops)


def send_rate(result: VariantResult) -> float:
    return result.sent / result.send_seconds if result.send_seconds > 0 else math.nan


def generator_bound(result: VariantResult, base: VariantResult) -> str:
    """A note when neither row lost frames: each delivered what the generator managed to send, so their pps
    ratio is the generator's (it shares CPU 0 with the switch, the backends and any other load), not theirs."""
    if math.isnan(result.loss) or math.isnan(base.loss) or max(result.loss, base.loss) > LOSS_SLACK:
        return ""
    return (f"neither lost frames, so both delivered what the generator sent ({_num(send_rate(result), 0)} vs "
            f"{_num(send_rate(base), 0)} frames/s): the ratio is the generator's speed at the two times, "
            "a lower bound on the forwarder's")


def targets(results: list[VariantResult], scaling: dict[str, Any] | None = None) -> list[Target]:
    """The issue's targets that this run can check (those whose baselines were measured)."""
    by_name = {r.name: r for r in results}
    found: list[Target] = []
    for r in results:
        if r.kind != "pktlb":
            continue
        rr = ratios(r, by_name)
        base = kernel_baseline(r, by_name)
        row = r.name.removeprefix("pktlb ")  # the mode, and the fast path's hook if it ran with one
        if base in by_name:
            what = base.removeprefix("kernel ")
            if r.mode in CPU_TARGETS:
                found.append(Target(f"{row}: LB CPU per packet vs {what}", rr["cpu_vs_kernel"],
                                    CPU_TARGETS[r.mode], True))
            found.append(Target(f"{row}: delivered pps vs {what}", rr["pps_vs_kernel"], 0.8, False,
                                generator_bound(r, by_name[base])))
            kernel_loss = by_name[base].loss
            if not math.isnan(kernel_loss) and kernel_loss <= LOSS_SLACK:
                found.append(Target(f"{row}: loss where {what} lost none", r.loss, LOSS_SLACK, True))
        if SCAPY in by_name:
            found.append(Target(f"{row}: delivered pps vs the scapy forwarder", rr["pps_vs_scapy"], 50, False))
    for run in (scaling or {}).get("modes", []):
        speedup = run.get("speedup", {}).get("2")
        if speedup is not None:
            found.append(Target(f"{run['mode']}: backlog drain, 2 workers vs 1", speedup, 1.8, False))
    return found


@dataclass
class BenchReport:
    machine: dict[str, Any]
    settings: dict[str, Any]
    results: list[VariantResult] = field(default_factory=list)
    scaling: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    memory: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form; a value that could not be measured (nan, inf) is null."""
        by_name = {r.name: r for r in self.results}
        return _finite({
            "machine": self.machine, "settings": self.settings,
            "variants": [{**r.as_dict(), "ratios": ratios(r, by_name)} for r in self.results],
            "targets": [t.as_dict() for t in targets(self.results, self.scaling)],
            "scaling": self.scaling, "profile": self.profile, "memory": self.memory, "notes": self.notes,
        })


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _num(value: float, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def render_table(results: list[VariantResult]) -> str:
    by_name = {r.name: r for r in results}
    head = ["variant", "delivered pps", "loss", "LB us/pkt", "(flood)", "pps/kern", "cpu/kern", "pps/route",
            "cpu/route", "+p50 us", "+p99 us", "new flows/s"]
    rows = [head]
    for r in results:
        rr = ratios(r, by_name)
        lat = r.latency
        rows.append([r.name, _num(r.pps, 0), f"{100 * r.loss:.1f}%" if r.sent else "-", _num(r.cpu_us_per_packet),
                     _num(r.flood_cpu_us_per_packet),
                     _num(rr["pps_vs_kernel"]), _num(rr["cpu_vs_kernel"]), _num(rr["pps_vs_routing"]),
                     _num(rr["cpu_vs_routing"]), _num(lat.added_p50_us, 0) if lat else "-",
                     _num(lat.added_p99_us, 0) if lat else "-",
                     _num(r.new_flow_pps, 0) if r.new_flow_pps is not None else "-"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_text(report: BenchReport) -> str:
    m, s = report.machine, report.settings
    out = [f"pktlb bench on {m.get('cpus')} CPU(s) ({m.get('cpu_model')}), Linux {m.get('kernel')}, "
           f"Python {m.get('python')}",
           f"flood: {s.get('packets'):,} x {s.get('frame_bytes')}-byte UDP frames (+FCS) over {s.get('flows')} flows, "
           f"at most {s.get('seconds')} s; generator on CPU {s.get('generator_cpu')}, LB on CPU {s.get('lb_cpu')}",
           "", render_table(report.results),
           f"kern: the kernel's way of doing the row's mode ({NFT_DSR} for dsr where it was measured, "
           f"else {NFTABLES}); route: {ROUTING}; new flows/s: a flood of SYNs, each a new flow"]
    tlist = targets(report.results, report.scaling)
    if tlist:
        out += ["", "targets (ratios measured in this run):"]
        for t in tlist:
            rule = "<=" if t.at_most else ">="
            verdict = "met" if t.met else f"MISSED by {t.missed_by:.2f}x"
            out.append(f"  {t.name}: {_num(t.value)} ({rule} {t.limit}) {verdict}"
                       + (f" ({t.note})" if t.note and not t.met else ""))
    if report.scaling:
        out += ["", "backlog drain (frames queued while the workers were stopped, then released):"]
        for run in report.scaling.get("modes", []):
            cells = ", ".join(f"{r['workers']} worker(s) {_num(r['pps'], 0)} pps" for r in run["runs"])
            speed = ", ".join(f"{k} workers x{_num(v)}" for k, v in run.get("speedup", {}).items())
            out.append(f"  {run['mode']}: {run['frames']:,} frames: {cells}; speedup {speed}")
    if report.profile:
        from pktlb.reports.bench.profile import render_profile

        out += ["", render_profile(report.profile)]
    if report.memory:
        from pktlb.reports.bench.memory import render_memory

        out += ["", render_memory(report.memory)]
    if report.notes:
        out += ["", *(f"note: {n}" for n in report.notes)]
    return "\n".join(out)
