"""``pktlb tier-report``: build the LB tier in the lab, measure failover and flow moves, write a report."""

from __future__ import annotations

from pathlib import Path

import click

from pktlb.cli.common import require_root, show_report


@click.command(name="tier-report")
@click.option("--mode", type=click.Choice(["dsr", "tunnel", "nat", "fullnat"]), default="dsr", show_default=True)
@click.option("--lbs", type=click.IntRange(2, 8), default=3, show_default=True, help="LBs in the tier.")
@click.option("--rate", type=click.FloatRange(1, 200), default=40.0, show_default=True,
              help="Requests per second in the stream that runs through each failure.")
@click.option("--duration", type=click.FloatRange(4, 30), default=7.0, show_default=True,
              help="Seconds of each stream (the failure comes 2 s in).")
@click.option("--bfd", is_flag=True, help="BFD on the BGP sessions (100 ms x 3).")
@click.option("--flows", type=click.IntRange(50, 5000), default=600, show_default=True,
              help="Client 5-tuples whose route is compared before and after an LB leaves.")
@click.option("--held", type=click.IntRange(1, 300), default=60, show_default=True,
              help="Keep-alive connections held through the drain.")
@click.option("--failures", default=",".join(("engine-killed", "speaker-killed", "frozen", "link-cut")),
              show_default=True, help="Comma-separated failure kinds to measure.")
@click.option("--out", type=click.Path(file_okay=False), default="build/tier", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def tier_report(mode: str, lbs: int, rate: float, duration: float, bfd: bool, flows: int, held: int, failures: str,
                out: str, as_json: bool) -> None:
    """Spread of flows over the LBs; per failure kind (engine killed, speaker killed, LB frozen, link
    cut) the time until the router stops using the LB and the requests that failed; the share of
    flows on surviving LBs that moved when one LB left, with multipath and with a resilient group.
    Builds its own labs (a unique prefix) and removes them.  Needs root and BIRD."""
    from pktlb.lab.topology import LabError
    from pktlb.reports.tier.render import markdown, write
    from pktlb.reports.tier.run import FAILURES, TierReportOptions, run_report

    require_root("tier-report")
    kinds = tuple(k.strip() for k in failures.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAILURES]
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)}: expected some of {', '.join(FAILURES)}",
                                 param_hint="--failures")
    opts = TierReportOptions(mode=mode, lbs=lbs, rate=rate, duration=duration, bfd=bfd, flows=flows, held=held,
                             failures=kinds)
    try:
        report = run_report(opts, progress=lambda m: click.echo(m, err=True))
    except LabError as exc:
        raise click.ClickException(str(exc)) from None
    paths = write(report, Path(out))
    show_report(report, paths, as_json, markdown)


COMMANDS = [tier_report]
