"""`pktlb lab backend add|remove`: backend hosts in and out of a running lab (and its engine)."""

from __future__ import annotations

import json
import os
import sys

import click

from pktlb.lab.topology import DEFAULT_PREFIX, LabError


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        _fail(f"lab backend {what} needs root (network namespaces)")


PREFIX_OPTION = click.option("--prefix", default=DEFAULT_PREFIX, show_default=True,
                             help="Name prefix of the lab's namespaces (one lab per prefix).")


@click.group(name="backend")
def lab_backend() -> None:
    """Add a backend host to a running lab, or remove one (with its namespace and services)."""


@lab_backend.command(name="add")
@PREFIX_OPTION
@click.option("--name", default=None, help="The backend's name, beN (default: the lowest free N).")
@click.option("--standby", is_flag=True, help="Create the host only; do not add it to the engine.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def add(prefix: str, name: str | None, standby: bool, as_json: bool) -> None:
    """Create a backend namespace wired as `lab up` wires one for the lab's mode, start its services
    (httpd with the lab's --service-time/--max-concurrent, iperf3, a decapsulator in tunnel mode) and
    add it to every service of the lab's pktlb engine."""
    from pktlb.lab.scaling import add_backend

    _need_root("add")
    try:
        result = add_backend(prefix, name, engine=not standby)
    except LabError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    where = (f"in the engine's services {', '.join(result['engine_services'])}" if result["engine_services"]
             else "not in any engine")
    click.echo(f"backend {result['backend']} added: {result['address']} in netns {result['namespace']}, "
               f"services {', '.join(result['services'])}; {where}")


@lab_backend.command(name="remove")
@PREFIX_OPTION
@click.option("--drain-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds the drained backend may keep its flows before it is removed anyway.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("name")
def remove(prefix: str, drain_timeout: float, as_json: bool, name: str) -> None:
    """Drain NAME in the engine (no new flows), wait until its flows end or the drain timeout, remove
    it from the engine, then stop its services and delete its namespace."""
    from pktlb.lab.scaling import remove_backend

    _need_root("remove")
    try:
        result = remove_backend(prefix, name, drain_timeout=drain_timeout,
                                progress=None if as_json else click.echo)
    except LabError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    cut = f", {result['flows_cut']} flows cut at the drain timeout" if result["flows_cut"] else ""
    engine = (f"drained and removed from {', '.join(result['engine_services'])} in {result['drain_s']:.1f} s{cut}; "
              if result["engine_services"] else "")
    click.echo(f"backend {name} removed: {engine}namespace {result['host']['namespace']} deleted")


COMMANDS = [lab_backend]
