"""`pktlb compare`: every forwarding mode on the same workload, with a report, charts and captures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from pktlb.cli.common import require_root
from pktlb.lab.fastpath import parse_hooks
from pktlb.lab.topology import LAB_MODES, TOPOLOGIES


def _modes(_ctx: Any, _param: Any, value: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in value.split(",") if m.strip())
    unknown = [m for m in modes if m not in LAB_MODES]
    if unknown or not modes:
        raise click.BadParameter(f"{', '.join(unknown) or 'nothing'}: expected a comma-separated list of "
                                 f"{', '.join(LAB_MODES)}")
    return tuple(dict.fromkeys(modes))


def _fastpath(_ctx: Any, _param: Any, value: str) -> list[str] | None:
    try:
        return parse_hooks(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _interrupt_handler(owner: int) -> Any:
    """SIGTERM unwinds like Ctrl-C in this process, so the current lab is torn down.

    Only in this process: pyroute2 forks helpers (netns access) that inherit the handler and are
    ended with SIGTERM; such a child must just exit, never run our cleanup (it would remove the lab).
    """
    def handler(_signum: int, _frame: Any) -> None:
        if os.getpid() != owner:
            os._exit(143)
        raise KeyboardInterrupt
    return handler


@click.command()
@click.option("--modes", default=",".join(LAB_MODES), show_default=True, callback=_modes,
              help="Comma-separated forwarding modes to compare; l7: an HTTP proxy (pktlb proxy and HAProxy).")
@click.option("--scheduler", default="maglev", show_default=True, help="Scheduler of the engine (and kernel baseline).")
@click.option("--l7-scheduler", default="rr", show_default=True,
              help="Scheduler of the proxies in mode l7 (per request; HAProxy gets its nearest balance algorithm).")
@click.option("--backends", type=click.IntRange(1, 64), default=3, show_default=True, help="Backends per lab.")
@click.option("--duration", type=click.FloatRange(1, 300), default=5.0, show_default=True,
              help="Seconds of HTTP load (wrk) per mode and engine, and of each iperf3 run.")
@click.option("--requests", type=click.IntRange(10, 1_000_000), default=None,
              help="A request count for the HTTP load instead of a duration (ab, apache2-utils); iperf3 keeps 5 s.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report directory [default: out/compare-<timestamp>].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (progress goes to stderr).")
@click.option("--prefix", default="pktlb-cmp-", show_default=True, help="Namespace prefix of the labs it builds.")
@click.option("--fastpath", "fastpath_hooks", default="auto", show_default=True, callback=_fastpath,
              help="Also run the packet engine with its kernel fast path at these hooks (xdp, tc, comma-separated; "
                   "engine pktlb-HOOK in the report); auto: the first hook this pktlb has; off: none.")
@click.option("--topology", type=click.Choice(TOPOLOGIES), default="one-arm", show_default=True,
              help="Lab layout: the LB beside the backends (one-arm) or a director between client and server "
                   "segments, the backends' gateway (two-arm).")
def compare(modes: tuple[str, ...], scheduler: str, l7_scheduler: str, backends: int, duration: float, requests: int | None,
            out_dir: Path | None, as_json: bool, prefix: str, fastpath_hooks: list[str] | None, topology: str) -> None:
    """Build the lab for each mode in turn, run the same bounded workload through the pktlb engine and
    the kernel baseline (where the kernel can do the mode), tear it down, and report per mode:
    requests/s and latency, throughput, LB packets, bytes and CPU per request, what the backend saw,
    header overhead and MTU, the sysctls and routes the mode needed, and the spread over backends.
    Mode l7 puts an HTTP proxy (pktlb proxy, and HAProxy as the baseline) in the same tables, with what
    tells L4 from L7: backend connections per request, the client's address or X-Forwarded-For, and
    how 4 requests on one kept-alive connection spread, with and without client keep-alive.

    Writes report.md, report.json, three PNG charts and per-mode pcaps (client, LB, backend) into --out.
    """
    from pktlb.core.sched.registry import scheduler_names
    from pktlb.reports.compare.plan import CompareSettings
    from pktlb.reports.compare.render import render_text
    from pktlb.reports.compare.run import run_compare, write_report

    ctx = click.get_current_context()
    if requests is not None and ctx.get_parameter_source("duration") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("give either --duration or --requests, not both")
    for hint, name in (("--scheduler", scheduler), ("--l7-scheduler", l7_scheduler)):
        if name not in scheduler_names():
            raise click.BadParameter(f"{name!r}: expected one of {', '.join(scheduler_names())}", param_hint=hint)
    require_root("pktlb compare")
    needed = ["curl", "tcpdump", "ip", "ab" if requests else "wrk"]
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        raise click.ClickException(f"missing programs: {', '.join(missing)} (`make deps` installs them)")
    out = out_dir or Path("out") / time.strftime("compare-%Y%m%d-%H%M%S")
    settings = CompareSettings(modes=modes, scheduler=scheduler, backends=backends, duration=duration,
                               requests=requests, out=out, prefix=prefix, l7_scheduler=l7_scheduler,
                               fastpath=fastpath_hooks, topology=topology)

    def progress(text: str) -> None:
        click.echo(f"{time.strftime('%H:%M:%S')} {text}", err=True)

    previous = signal.signal(signal.SIGTERM, _interrupt_handler(os.getpid()))
    try:
        report = run_compare(settings, progress)
    except KeyboardInterrupt:
        click.echo("interrupted: the lab of the current mode was torn down", err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    paths = write_report(report, out)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render_text(report))
        click.echo(f"report:   {paths['markdown']}\njson:     {paths['json']}")
        charts = [str(p) for key, p in paths.items() if key not in ("json", "markdown")]
        click.echo(f"charts:   {', '.join(charts) or 'none (nothing was measured)'}")
        click.echo(f"captures: {out / 'captures'} (<mode>-client.pcap, <mode>-lb.pcap, <mode>-backend.pcap)")
    broken = [c for c in report["invariants"] if not c["holds"]]
    if broken:
        sys.exit(1)


COMMANDS = [compare]
