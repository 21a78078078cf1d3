"""``pktlb bench``: the engine in each mode against the kernel's routing, nftables DNAT and DSR, and a scapy loop."""

from __future__ import annotations

import click

from pktlb.cli.common import emit_json, require_root
from pktlb.core.config import MODES
from pktlb.lab.fastpath import parse_hooks
from pktlb.lab.netns import CommandError


def _int_list(_ctx: click.Context, _param: click.Parameter, value: str) -> list[int]:
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected numbers separated by commas, like 1,2") from None
    if not items or any(not 1 <= n <= 16 for n in items):
        raise click.BadParameter(f"{value!r}: expected worker counts from 1 to 16")
    return items


def _modes(_ctx: click.Context, _param: click.Parameter, value: str) -> list[str]:
    modes = [m.strip() for m in value.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise click.BadParameter(f"{value!r}: expected modes from {', '.join(MODES)}, separated by commas")
    return modes


def _fastpath(_ctx: click.Context, _param: click.Parameter, value: str) -> list[str] | None:
    try:
        return parse_hooks(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--modes", default=",".join(MODES), show_default=True, callback=_modes,
              help="Engine modes to measure, comma-separated.")
@click.option("--packets", default=500_000, show_default=True, type=click.IntRange(1_000, 50_000_000),
              help="Frames per flood (each forwarder gets one flood; the scapy one gets --scapy-packets).")
@click.option("--seconds", default=5.0, show_default=True, type=click.FloatRange(0.5, 120),
              help="Upper bound on each flood's duration.")
@click.option("--workers", default="1", show_default=True, callback=_int_list,
              help="Worker counts for the backlog-drain scaling test, e.g. 1,2 (1 alone: no test).")
@click.option("--profile", is_flag=True, help="Per-stage cost breakdown (ns/packet) and pyinstrument profiles.")
@click.option("--memory", is_flag=True, help="Flow-table bytes per entry, RSS at 1M flows, RSS over a long flood.")
@click.option("--memory-seconds", default=60.0, show_default=True, type=click.FloatRange(5, 600),
              help="Length of the flood with changing flows during which --memory samples the engine's RSS.")
@click.option("--no-baselines", is_flag=True, help="Skip kernel routing, nftables DNAT and DSR, and the scapy forwarder.")
@click.option("--no-diagnostic", is_flag=True,
              help="Skip the engine run without receive steering (nat, its receive work left on CPU 0).")
@click.option("--scapy-packets", default=20_000, show_default=True, type=click.IntRange(100, 1_000_000),
              help="Frames offered to the scapy forwarder (at --scapy-rate).")
@click.option("--latency-samples", default=200, show_default=True, type=click.IntRange(0, 10_000),
              help="TCP connects per latency measurement (0: no latency).")
@click.option("--fastpath", "fastpath_text", default="auto", show_default=True, callback=_fastpath,
              help="The engine's rows again with its kernel fast path at these hooks (xdp, tc, comma-separated); "
                   "auto: the first hook this pktlb has; off: none.")
@click.option("--syn-packets", default=50_000, show_default=True, type=click.IntRange(0, 1_000_000),
              help="SYNs of the new-flow flood (each a new flow), per engine row and kernel DNAT/DSR; 0: none.")
@click.option("--xdp-mode", default="generic", show_default=True, type=click.Choice(["generic", "native"]),
              help="How the engine's fast path attaches in the xdp rows: generic (on the skb, after RPS, on the LB "
                   "core like nftables) or native (a veth's own XDP, run in a NAPI thread pinned to the LB core).")
@click.option("--repeat", "repeats", default=1, show_default=True, type=click.IntRange(1, 10),
              help="Floods and paced runs per row; the best counts (other load on a shared machine only slows "
                   "a run down).")
@click.option("--prefix", default="", help="Namespace prefix of the bench's labs (default: pktlb-b<random>-).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of text.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Directory for bench.json, bench.txt and the profiles.")
def bench(modes: list[str], packets: int, seconds: float, workers: list[int], profile: bool, memory: bool,
          memory_seconds: float, no_baselines: bool, no_diagnostic: bool, scapy_packets: int, latency_samples: int,
          fastpath_text: list[str] | None, syn_packets: int, xdp_mode: str, repeats: int, prefix: str, as_json: bool,
          out_dir: str | None) -> None:
    """Measure the engine against the kernel and a naive scapy loop, in one run (needs root, 2 CPUs).

    Builds a lab per mode, floods it with 64-byte UDP frames (generator on CPU 0, LB on CPU 1) and
    reports delivered packets per second, LB CPU microseconds per packet, loss, the ratios to the
    kernel's nftables DNAT (DSR for dsr) and routing, and the latency the LB adds.  Every lab is removed after.
    """
    from pktlb.reports.bench.lab import BenchError
    from pktlb.reports.bench.options import BenchOptions
    from pktlb.reports.bench.results import render_text
    from pktlb.reports.bench.run import run_bench, write_outputs

    require_root("pktlb bench")
    opts = BenchOptions(modes=modes, packets=packets, seconds=seconds, workers=workers, profile=profile,
                        memory=memory, memory_seconds=memory_seconds, baselines=not no_baselines,
                        diagnostic=not no_diagnostic,
                        scapy_packets=scapy_packets, latency_samples=latency_samples, prefix=prefix, out=out_dir,
                        fastpath=fastpath_text, syn_packets=syn_packets, repeats=repeats,
                        xdp_mode=xdp_mode)
    try:
        report = run_bench(opts, progress=lambda line: click.echo(f"# {line}", err=True))
    except (BenchError, CommandError) as exc:
        raise click.ClickException(str(exc)) from None
    text = render_text(report)
    for path in write_outputs(report, out_dir, text):
        click.echo(f"# wrote {path}", err=True)
    if as_json:
        emit_json(report.as_dict())
    else:
        click.echo(text)


COMMANDS = [bench]
