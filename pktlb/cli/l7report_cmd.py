"""``pktlb l7-report``: TLS cost, persistence, cache and filtering of the L7 proxy, measured in the lab."""

from __future__ import annotations

from pathlib import Path

import click

from pktlb.cli.common import require_root, show_report


def _choices(value: str, allowed: tuple[str, ...], hint: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [v for v in items if v not in allowed]
    if unknown or not items:
        raise click.BadParameter(f"{', '.join(unknown) or 'nothing'}: expected some of {', '.join(allowed)}",
                                 param_hint=hint)
    return items


@click.command(name="l7-report")
@click.option("--sections", default="tls,persistence,cache,filter", show_default=True,
              help="Comma-separated: tls, persistence, cache, filter.")
@click.option("--engines", default="pktlb,haproxy", show_default=True, help="L7 proxies to measure: pktlb, haproxy.")
@click.option("--backends", type=click.IntRange(2, 8), default=3, show_default=True)
@click.option("--tls-requests", type=click.IntRange(10, 20000), default=300, show_default=True,
              help="Requests per TLS pattern (new handshake, resumed, keep-alive, plain).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--sessions", type=click.IntRange(1, 32), default=24, show_default=True,
              help="Client sessions that change address (the client namespace has 64 addresses).")
@click.option("--cache-requests", type=click.IntRange(10, 100000), default=1000, show_default=True)
@click.option("--urls", type=click.IntRange(1, 10000), default=20, show_default=True,
              help="Distinct URLs the cache workload repeats.")
@click.option("--flood", type=click.IntRange(10, 100000), default=2000, show_default=True,
              help="Requests the flooding client sends.")
@click.option("--rate", type=click.FloatRange(1, 10000), default=20.0, show_default=True,
              help="The filter's requests per second per client (burst: the same number).")
@click.option("--key-type", type=click.Choice(["ec", "rsa"]), default="ec", show_default=True,
              help="The lab certificates' keys: ECDSA P-256 or RSA 2048 (a full handshake signs with it).")
@click.option("--prefix", default=None, help="Lab prefix base (the labs are PREFIXa- and PREFIXb-); default: "
              "pktlb-l7r and 4 random hex digits.")
@click.option("--out", type=click.Path(file_okay=False), default="build/l7-report", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def l7_report(sections: str, engines: str, backends: int, tls_requests: int, concurrency: int, sessions: int,
              cache_requests: int, urls: int, flood: int, rate: float, key_type: str, prefix: str | None, out: str,
              as_json: bool) -> None:
    """What L7 balancing gives and costs, each as a number: LB CPU per request and latency for TLS
    terminated at the proxy (new handshakes, resumed sessions, keep-alive) beside TLS the backends
    terminate behind the L4 engine; sessions that keep or lose their backend when the client's address
    changes (L4 sh, L7 sh, L7 cookie) and when their backend goes down; cache hit ratio and backend
    requests saved; a flooding client held back while another is served.  pktlb proxy and HAProxy
    (from the same service definitions).  Builds its own labs (unique prefixes) and removes them.
    Needs root."""
    from pktlb.lab.topology import LabError
    from pktlb.reports.l7features.labs import report_prefix
    from pktlb.reports.l7features.render import markdown, write
    from pktlb.reports.l7features.run import ENGINES, SECTIONS, ReportOptions, run_report

    opts = ReportOptions(sections=_choices(sections, SECTIONS, "--sections"),
                         engines=_choices(engines, ENGINES, "--engines"), backends=backends,
                         tls_requests=tls_requests, concurrency=concurrency, sessions=sessions,
                         cache_requests=cache_requests, urls=urls, flood=flood, rate=rate, key_type=key_type,
                         prefix=prefix or report_prefix())
    require_root("l7-report")
    try:
        report = run_report(opts, progress=lambda m: click.echo(m, err=True))
    except LabError as exc:
        raise click.ClickException(str(exc)) from None
    paths = write(report, Path(out))
    show_report(report, paths, as_json, markdown)
    if report["errors"]:
        raise SystemExit(1)


COMMANDS = [l7_report]
