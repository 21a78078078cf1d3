"""``pktlb announce`` (an LB's announcement supervisor, and asking it: status, drain, resume) and
``pktlb nhsync`` (the router's resilient next-hop groups, from BIRD's routes)."""

from __future__ import annotations

import logging
import sys

import click

from pktlb.cli.common import emit_json


@click.group()
def announce() -> None:
    """Announce an LB's VIPs by BGP (through its BIRD) while its engine is healthy.

    `announce run` polls the engine's control socket and enables BIRD's static protocol `announce`
    while the engine answers and every VIP has a healthy backend; it withdraws on `announce drain`,
    on SIGTERM (then exits) and when no backend is healthy.  See netns/README.md (LB tier).
    """


@announce.command("run")
@click.option("--engine-socket", required=True, metavar="PATH", help="The engine's control socket.")
@click.option("--bird-socket", required=True, metavar="PATH", help="The LB's BIRD control socket (bird -s).")
@click.option("--control", "control_socket", required=True, metavar="PATH",
              help="This supervisor's own control socket (status, drain, resume).")
@click.option("--vip", "vips", multiple=True, required=True, metavar="ADDR",
              help="A VIP the speaker announces (repeatable); each needs a healthy backend.")
@click.option("--interval", type=float, default=0.2, show_default=True, help="Seconds between polls of the engine.")
@click.option("--rise", type=int, default=2, show_default=True, help="Good polls in a row before announcing.")
@click.option("--fall", type=int, default=1, show_default=True, help="Bad polls in a row before withdrawing.")
@click.option("--journal", metavar="PATH", help="Append one JSON line per change (for `pktlb tier-report`).")
@click.option("--ready-file", metavar="PATH", help="Written once the control socket listens.")
def run_cmd(engine_socket: str, bird_socket: str, control_socket: str, vips: tuple[str, ...], interval: float,
            rise: int, fall: int, journal: str | None, ready_file: str | None) -> None:
    """Run the supervisor until SIGTERM/SIGINT (it withdraws before it exits)."""
    import ipaddress

    from pktlb.daemon.announce.supervisor import Announcer, AnnounceSettings
    from pktlb.daemon.ctlsock import SocketInUse

    for vip in vips:
        try:
            ipaddress.IPv4Address(vip)
        except ValueError:
            raise click.BadParameter(f"{vip!r} is not an IPv4 address", param_hint="--vip") from None
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        settings = AnnounceSettings(engine_socket, bird_socket, control_socket, vips, interval=interval, rise=rise,
                                    fall=fall, journal=journal, ready_file=ready_file)
        code = Announcer(settings).run()
    except (ValueError, SocketInUse, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


def _ask(control_socket: str, cmd: str, as_json: bool) -> None:
    from pktlb.daemon.ctlsock import ControlClientError, request

    try:
        result = request(control_socket, {"cmd": cmd}, timeout=3.0)
    except ControlClientError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json(result)
        return
    state = "announced" if result["announced"] else "withdrawn"
    click.echo(f"{state} ({result['reason']}); drained: {'yes' if result['drained'] else 'no'}; "
               f"BIRD protocol up: {result['bird']['protocol_up']}"
               + (f" ({result['bird']['error']})" if result["bird"]["error"] else ""))


_control = click.option("--control", "control_socket", required=True, metavar="PATH",
                        help="The supervisor's control socket.")
_json = click.option("--json", "as_json", is_flag=True, help="Print the supervisor's answer as JSON.")


@announce.command("status")
@_control
@_json
def status_cmd(control_socket: str, as_json: bool) -> None:
    """What the supervisor announces and why."""
    _ask(control_socket, "status", as_json)


@announce.command("drain")
@_control
@_json
def drain_cmd(control_socket: str, as_json: bool) -> None:
    """Withdraw the VIPs and keep them withdrawn until `resume` (the engine keeps running)."""
    _ask(control_socket, "drain", as_json)


@announce.command("resume")
@_control
@_json
def resume_cmd(control_socket: str, as_json: bool) -> None:
    """Undo a drain: announce again once the engine is healthy (after `--rise` good polls)."""
    _ask(control_socket, "resume", as_json)



@click.command()
@click.option("--table", type=click.IntRange(1, 2**31 - 1), default=200, show_default=True,
              help="The kernel table BIRD installs its merged BGP routes into.")
@click.option("--dev", default="eth0", show_default=True, help="The interface the next hops are on.")
@click.option("--buckets", type=click.IntRange(2, 4096), default=128, show_default=True,
              help="Buckets of each resilient group.")
@click.option("--ready-file", metavar="PATH", help="Written after the first sync.")
def nhsync(table: int, dev: str, buckets: int, ready_file: str | None) -> None:
    """Mirror a kernel table's multipath routes into resilient next-hop groups (router, --ecmp resilient).

    For each prefix in TABLE: one next-hop object per gateway, one `type resilient` group, and a
    main-table route `PREFIX nhid GROUP`.  Removing a gateway then moves only its own flows.
    Runs until SIGTERM and removes its routes and groups on the way out.
    """
    from pktlb.daemon.announce.nhsync import NexthopSync

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    sys.exit(NexthopSync(table, dev, ready_file=ready_file, buckets=buckets).run())


COMMANDS = [announce, nhsync]
