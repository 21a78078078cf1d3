"""``pktlb dashboard``: Prometheus /metrics and a live page for one or several running engines."""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import TYPE_CHECKING

import click

from pktlb.lab.paths import BadPrefix, LabPaths
from pktlb.lab.topology import DEFAULT_PREFIX

if TYPE_CHECKING:
    from pktlb.daemon.dashboard.sources import Source


def lab_control_socket(prefix: str) -> str:
    """The control socket of the engine a lab runs in its LB (the lab writes lb.control_socket there)."""
    return str(LabPaths(prefix).control_socket)


def _sources(labs: tuple[str, ...], sockets: tuple[str, ...]) -> list[Source]:
    from pktlb.daemon.dashboard.sources import Source, make_sources

    try:
        from_labs = [Source(prefix, lab_control_socket(prefix)) for prefix in labs]
    except BadPrefix as exc:
        raise click.ClickException(str(exc).replace("--prefix", "--lab", 1)) from None
    try:
        from_sockets = make_sources(list(sockets))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    names = [s.name for s in from_labs + from_sockets]
    if len(set(names)) != len(names):
        raise click.ClickException(f"two sources share a name ({', '.join(names)}): name them with -s NAME=PATH")
    return from_labs + from_sockets


@click.command()
@click.option("--lab", "labs", multiple=True, metavar="PREFIX",
              help=f"Poll the engine of the lab with this prefix (repeatable; default {DEFAULT_PREFIX} "
                   "when no -s is given).")
@click.option("-s", "--socket", "sockets", multiple=True, metavar="[NAME=]PATH",
              help="Poll the engine (or proxy) with this control socket (repeatable); NAME is its `lb` label.")
@click.option("--listen", default="127.0.0.1:9180", show_default=True, metavar="ADDR:PORT",
              help="Where to serve: loopback or a lab address (198.18.0.0/15, 2001:2::/48) only; port 0 picks one.")
@click.option("--interval", type=click.FloatRange(0.2, 60), default=1.0, show_default=True,
              help="Seconds between two polls of each source.")
@click.option("--json", "as_json", is_flag=True, help="Poll every source once, print what the page would show, exit.")
def dashboard(labs: tuple[str, ...], sockets: tuple[str, ...], listen: str, interval: float, as_json: bool) -> None:
    """Serve /metrics (Prometheus text format) and a live stats page for running engines.

    A separate process: it asks each engine for its stats over the control socket once per
    INTERVAL (every worker of a `--workers N` engine) and never changes anything (read-only).
    It listens only on 127.0.0.1, ::1 or a lab address; for a lab address run it inside the lab,
    e.g. `pktlb lab exec client -- pktlb dashboard --listen 198.18.1.10:9180`.
    """
    from pktlb.daemon.dashboard.listen import ListenRefused, parse_listen, url_for
    from pktlb.daemon.dashboard.poller import DashboardState, Poller
    from pktlb.daemon.dashboard.sources import poll

    sources = _sources(labs or (() if sockets else (DEFAULT_PREFIX,)), sockets)
    if as_json:
        state = DashboardState(sources, interval)
        for source in sources:
            state.record(poll(source))
        click.echo(json.dumps(state.view(), indent=2, default=str))
        return
    try:
        host, port = parse_listen(listen)
    except ListenRefused as exc:
        raise click.ClickException(str(exc)) from None
    from pktlb.daemon.dashboard.server import DashboardServer

    state = DashboardState(sources, interval)
    try:
        server = DashboardServer(host, port, state)
    except OSError as exc:
        hint = " (a lab address exists only inside the lab's namespaces: run it with `ip netns exec`)" \
            if exc.errno == 99 else ""
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    poller = Poller(state)
    poller.start()
    url = url_for(server.host, server.port)
    click.echo(f"pktlb dashboard: {url}  (metrics: {url}metrics), polling "
               + ", ".join(f"{s.name} ({s.socket})" for s in sources))
    sys.stdout.flush()
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        if not stop.is_set():
            stop.set()
            threading.Thread(target=server.shutdown, daemon=True).start()  # shutdown() waits for serve_forever

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        poller.stop()
        server.server_close()


COMMANDS = [dashboard]
