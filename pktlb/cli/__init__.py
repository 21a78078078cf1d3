"""The ``pktlb`` command line (click): one group, one module per subcommand family.

``COMMANDS`` maps each subcommand to the module that defines it (in that module's ``COMMANDS``
list).  Modules are imported only when their command runs, so the engine and the decapsulator
start without loading scapy or matplotlib, which only the reports need.
"""

from __future__ import annotations

import importlib
import logging

import click

from pktlb import __version__

COMMANDS = {
    "replay": "pktlb.cli.replay_cmd",
    "run": "pktlb.cli.engine_cmd",
    "proxy": "pktlb.cli.proxy_cmd",
    "stats": "pktlb.cli.engine_cmd",
    "flows": "pktlb.cli.engine_cmd",
    "backend": "pktlb.cli.engine_cmd",
    "reload": "pktlb.cli.engine_cmd",
    "ring": "pktlb.cli.sched_cmd",
    "simulate": "pktlb.cli.sched_cmd",
    "probe": "pktlb.cli.probe_cmd",
    "lab": "pktlb.cli.lab_cmd",
    "doctor": "pktlb.cli.lab_cmd",
    "decap": "pktlb.cli.lab_cmd",
    "compare": "pktlb.cli.compare_cmd",
    "explain": "pktlb.cli.explain_cmd",
    "bench": "pktlb.cli.bench_cmd",
    "autoscale": "pktlb.cli.autoscale_cmd",
    "dashboard": "pktlb.cli.dashboard_cmd",
    "announce": "pktlb.cli.announce_cmd",
    "nhsync": "pktlb.cli.announce_cmd",
    "tier-report": "pktlb.cli.tier_cmd",
    "l7-report": "pktlb.cli.l7report_cmd",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        return next(c for c in importlib.import_module(module).COMMANDS if c.name == cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pktlb")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """pktlb: a teaching-grade L4 load balancer (NAT, full-NAT, IP-in-IP tunnel, DSR) on raw sockets."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
