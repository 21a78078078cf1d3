"""The ``pktlb`` command line (click): one group, one module per subcommand family.

Each module in ``COMMAND_MODULES`` exposes ``COMMANDS``, a list of click commands or groups.
"""

from __future__ import annotations

import importlib
import logging

import click

from pktlb import __version__

COMMAND_MODULES = [
    "pktlb.cli.replay_cmd",
    "pktlb.cli.engine_cmd",
    "pktlb.cli.sched_cmd",
    "pktlb.cli.probe_cmd",
    "pktlb.cli.lab_cmd",
    "pktlb.cli.compare_cmd",
    "pktlb.cli.explain_cmd",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pktlb")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """pktlb: a teaching-grade L4 load balancer (NAT, full-NAT, IP-in-IP tunnel, DSR) on raw sockets."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")


for _name in COMMAND_MODULES:
    for _cmd in importlib.import_module(_name).COMMANDS:
        main.add_command(_cmd)
