"""`pktlb lab up|down|status|exec`, `pktlb doctor` and `pktlb decap` (the lab's own daemon)."""

from __future__ import annotations

import json
import os
import sys

import click

from pktlb.cli.lab_backend_cmd import lab_backend
from pktlb.core.config import MODES
from pktlb.lab.topology import (
    DECAP_CHOICES,
    DEFAULT_PREFIX,
    ENGINES,
    LAB_MODES,
    TOPOLOGIES,
    LabError,
    LabOptions,
)

PREFIX_OPTION = click.option("--prefix", default=DEFAULT_PREFIX, show_default=True,
                             help="Name prefix of the lab's namespaces (one lab per prefix).")


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group()
def lab() -> None:
    """Build, inspect and remove the network-namespace lab (see netns/README.md)."""


@lab.command()
@click.option("--mode", type=click.Choice(LAB_MODES), required=True,
              help="Forwarding mode the lab is set up for; l7: an HTTP proxy on the LB owns the VIP.")
@click.option("--backends", type=click.IntRange(1, 64), default=3, show_default=True, help="Number of backends.")
@click.option("--clients", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Number of client namespaces (client, client2, ...).")
@click.option("--scheduler", default=None,
              help="Scheduler written into the engine config [default: maglev; rr in mode l7, per request].")
@PREFIX_OPTION
@click.option("--engine", type=click.Choice(ENGINES), default="pktlb", show_default=True,
              help="pktlb: run `pktlb run` in the LB (`pktlb proxy` in mode l7); kernel: nftables baseline (DNAT "
                   "for nat, fullnat; a netdev MAC rewrite for dsr); haproxy: HAProxy as the L7 baseline (mode l7); "
                   "none: no LB.")
@click.option("--no-engine", is_flag=True, help="Alias of --engine none.")
@click.option("--decap", type=click.Choice(DECAP_CHOICES), default="auto", show_default=True,
              help="Tunnel mode: kernel ipip (tunl0), user-space `pktlb decap`, or auto (kernel where it has ipip).")
@click.option("--lbs", type=int, default=1, show_default=True,
              help="LBs: 1 is the single-LB lab; 2 to 8 build the LB tier (lb1..lbN announcing the VIP by BGP "
                   "to a BIRD router that spreads flows over them with ECMP).")
@click.option("--ecmp", type=click.Choice(["multipath", "resilient"]), default="multipath", show_default=True,
              help="LB tier: the router's ordinary multipath route, or a kernel resilient next-hop group.")
@click.option("--bfd", is_flag=True, help="LB tier: BFD on the BGP sessions (100 ms x 3) besides the 3 s hold timer.")
@click.option("--service-time", type=click.FloatRange(0, 60_000), default=0.0, metavar="MS",
              help="Backend capacity: milliseconds each request holds one of the backend's slots (0: none).")
@click.option("--max-concurrent", type=click.IntRange(0, 1024), default=0, metavar="N",
              help="Backend capacity: requests each backend serves at once, the others queue (0: unlimited); "
                   "one backend then answers at most N / service time requests per second.")
@click.option("--topology", type=click.Choice(TOPOLOGIES), default="one-arm", show_default=True,
              help="one-arm: the LB beside the backends on the server segment; two-arm: a director with one "
                   "interface on the client segment and one on the server segment, the backends' gateway.")
@click.option("--tls", is_flag=True, help="HTTPS on the VIP's port 443 too, with a throwaway CA made now: the proxy "
              "ends TLS (mode l7) or the backends do (L4 modes, the LB carries ciphertext).")
@click.option("--fastpath", type=click.Choice(["off", "xdp", "tc"]), default="off", show_default=True,
              help="The pktlb engine's kernel fast path for established flows ([lb] fastpath in its config).")
@click.option("--dry-run", is_flag=True, help="Print the commands the lab would run; change nothing.")
@click.option("--verbose-steps", is_flag=True, help="Print each step as it is applied.")
def up(mode: str, backends: int, clients: int, scheduler: str | None, prefix: str, engine: str, no_engine: bool,
       decap: str, lbs: int, ecmp: str, bfd: bool, service_time: float, max_concurrent: int, topology: str, tls: bool,
       fastpath: str, dry_run: bool, verbose_steps: bool) -> None:
    """Build the lab (or reuse an identical one that is already up)."""
    from pktlb.core.sched.registry import scheduler_names
    from pktlb.lab import manage
    from pktlb.lab.topology import load_topology, mode_default

    scheduler = scheduler or mode_default(load_topology(), mode, "scheduler", "maglev")
    if scheduler not in scheduler_names():
        _fail(f"unknown scheduler {scheduler!r}: expected one of {', '.join(scheduler_names())}")
    options = LabOptions(mode=mode, backends=backends, clients=clients, scheduler=scheduler, prefix=prefix,
                         engine="none" if no_engine else engine, decap=decap, lbs=lbs, ecmp=ecmp, bfd=bfd,
                         service_time=service_time, max_concurrent=max_concurrent, topology=topology, tls=tls,
                         fastpath=fastpath)
    try:
        if dry_run:
            click.echo(manage.dry_run(options), nl=False)
            return
        progress = (lambda step: click.echo(f"+ {step.command()}")) if verbose_steps else None
        result = manage.lab_up(options, progress=progress)
    except LabError as exc:
        _fail(str(exc))
    plan = result.plan
    if result.reused:
        click.echo(f"lab {prefix!r} is already up with these options: reusing it (`pktlb lab status` shows it)")
        return
    c = plan.constants
    click.echo(f"lab {prefix!r} up in {result.seconds:.1f} s ({result.steps} steps): mode {mode}, engine "
               f"{options.engine}, VIP {c['vip']}:{c['service_port']}/tcp, {backends} backends, {clients} clients"
               + (f", decapsulation {plan.decap_kind}" if plan.decap_kind else "")
               + (f", {lbs} LBs behind the BGP router ({ecmp}{', BFD' if bfd else ''})" if lbs > 1 else "")
               + (f", backend capacity {service_time:g} ms x {max_concurrent or 'unlimited'}" if service_time
                  or max_concurrent else ""))
    click.echo(f"try: pktlb lab exec client -- curl -s http://{c['vip']}/   |   pktlb lab status   |   pktlb lab down"
               + ("" if prefix == DEFAULT_PREFIX else f" --prefix {prefix}"))
    if plan.layer == 7 and options.engine != "none":
        click.echo(f"L7: pktlb lab exec client -- curl -s -H 'Host: api.lab' http://{c['vip']}/   (content routing; "
                   f"/static/ goes to be{backends})   |   pktlb stats --lab {prefix}")
    if tls:
        click.echo(f"TLS: pktlb lab exec client -- curl -s --cacert {plan.statedir}/tls/ca.pem "
                   f"https://{c['vip']}/   (the CA exists only in this lab)")
    if options.engine == "pktlb":
        click.echo(f"watch: pktlb dashboard --lab {prefix}   (then open http://127.0.0.1:9180/ ; /metrics for Prometheus)")
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if result.engine_problem:
        _fail(f"the lab is up but the engine is not running: {result.engine_problem}", code=3)


@lab.command()
@PREFIX_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
def down(prefix: str, as_json: bool) -> None:
    """Remove every namespace, process and file of the lab (idempotent, works after a crash)."""
    from pktlb.lab.manage import lab_down

    if os.geteuid() != 0:
        _fail("lab down needs root")
    try:
        report = lab_down(prefix)
    except LabError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif report["namespaces_removed"] or report["stopped_pids"] or report["statedir_removed"]:
        click.echo(f"lab {prefix!r} removed: {len(report['namespaces_removed'])} namespaces, "
                   f"{len(report['stopped_pids'])} processes stopped")
    else:
        click.echo(f"nothing to remove for prefix {prefix!r}")
    if report["errors"]:
        _fail("could not remove: " + "; ".join(report["errors"]))


@lab.command(name="drain-lb")
@PREFIX_OPTION
@click.option("--resume", is_flag=True, help="Undo a drain: announce again once the engine is healthy.")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for the router to stop (or start) using the LB.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("lb")
def drain_lb(prefix: str, resume: bool, timeout: float, as_json: bool, lb: str) -> None:
    """Withdraw one LB of the tier from the router (its engine keeps running) and wait until the
    router no longer sends it new flows; with --resume, announce it again."""
    from pktlb.lab.tier.drain import DrainError
    from pktlb.lab.tier.drain import drain_lb as do_drain

    try:
        result = do_drain(prefix, lb, resume=resume, timeout=timeout)
    except (DrainError, LabError) as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        verb = "resumed" if resume else "drained"
        click.echo(f"{lb} {verb}: the router's next hops for the VIP are now {', '.join(result['next_hops']) or 'none'} "
                   f"({result['seconds']:.2f} s); the engine is {'running' if result['engine_running'] else 'NOT running'}")


@lab.command()
@PREFIX_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(prefix: str, as_json: bool) -> None:
    """Mode, VIP, port, and every node's namespace, interfaces, addresses, MACs and services."""
    from pktlb.lab.status import lab_status, render_status

    report = lab_status(prefix)
    click.echo(json.dumps(report, indent=2) if as_json else render_status(report), nl=as_json)
    if not report.get("up"):
        sys.exit(1)


@lab.command(name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@PREFIX_OPTION
@click.option("--timeout", type=float, default=None, help="Kill the command after this many seconds (exit 124).")
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
def exec_(prefix: str, timeout: float | None, node: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in a lab node (client, router, lb, be1, ...): pktlb lab exec be1 -- ip addr."""
    from pktlb.lab.manage import exec_argv, lab_exec

    if command and command[0] == "--":  # `lab exec NODE -- CMD`: click keeps the "--" after a positional
        command = command[1:]
    try:
        if timeout is None:
            argv = exec_argv(prefix, node, list(command))
            os.execvp(argv[0], argv)
        sys.exit(lab_exec(prefix, node, list(command), timeout=timeout))
    except LabError as exc:
        _fail(str(exc))


@click.command()
@PREFIX_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable findings.")
@click.option("--host", "host_role", type=click.Choice(["backend", "lb", "client", "router"]), default=None,
              help="Check this (root-namespace) host as a lab role instead of a lab.")
@click.option("--mode", type=click.Choice(MODES), default=None, help="With --host: the mode to check for.")
@click.option("--vip", default="198.19.0.100", show_default=True, help="With --host: the VIP.")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Check this namespace (any, not only a lab's) for CONFIG's services: what would break each "
                   "mode here (a VIP on this stack, routes and neighbours to the backends, forwarding without "
                   "the guard, checksum offload on veth, SNAT ports).")
@click.option("--backend", "as_backend", is_flag=True,
              help="With -c: this namespace is a backend of CONFIG's services (VIP on lo, arp_ignore/announce, "
                   "rp_filter, the route back through the director).")
@click.option("--netns", default=None, help="With -c: check this named network namespace instead of the current one.")
def doctor(prefix: str, as_json: bool, host_role: str | None, mode: str | None, vip: str, config_path: str | None,
           as_backend: bool, netns: str | None) -> None:
    """Check a lab (or this host, or any namespace with -c) for the known traps; one line per finding with its fix."""
    from pktlb.core.packet.addr import ip_to_int
    from pktlb.lab.doctor import diagnose, diagnose_namespace, render_findings

    try:
        ip_to_int(vip)
    except ValueError:
        _fail(f"--vip {vip!r}: expected an IPv4 address like 198.19.0.100", 2)
    if (as_backend or netns) and not config_path:
        _fail("--backend and --netns check a namespace for a config's services: give -c CONFIG", 2)

    try:
        if config_path:
            from pktlb.adapters.netlink import NetlinkUnavailable
            from pktlb.cli.common import load_config_or_exit

            try:
                findings = diagnose_namespace(load_config_or_exit(config_path), "backend" if as_backend else "director",
                                              netns)
            except NetlinkUnavailable as exc:
                _fail(str(exc))
        else:
            findings = diagnose(prefix, host_role=host_role, host_mode=mode, host_vip=vip)
    except LabError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps([f.as_dict() for f in findings], indent=2))
    else:
        click.echo(render_findings(findings), nl=False)
    if any(f.level == "fail" for f in findings):
        sys.exit(1)


@click.command()
@click.option("--address", required=True, help="This backend's own address: outer packets to any other are dropped.")
@click.option("--tun", "tun_name", default="pktlbtun0", show_default=True, help="TUN device the inner packets go to.")
@click.option("--stats-file", default=None, help="JSON counters, rewritten every second and on exit.")
@click.option("--ready-file", default=None, help="Created once the sockets are open.")
@click.option("--duration", type=float, default=None, help="Exit after this many seconds (default: until SIGTERM).")
@click.option("--max-packets", type=int, default=None, help="Exit after receiving this many packets.")
@click.option("--allow-root-namespace", is_flag=True, help="Run in the host's network namespace (not a lab's).")
def decap(address: str, tun_name: str, stats_file: str | None, ready_file: str | None, duration: float | None,
          max_packets: int | None, allow_root_namespace: bool) -> None:
    """User-space IP-in-IP decapsulator: raw socket for protocol 4 -> TUN device (kernels without ipip)."""
    from pktlb.cli.common import refuse_root_namespace
    from pktlb.daemon.decap import Decapsulator

    refuse_root_namespace("pktlb decap", allow_root_namespace, "the lab starts it in each tunnel-mode backend")

    stats = Decapsulator(address, tun_name, stats_file).run(ready_file=ready_file, duration=duration,
                                                             max_packets=max_packets)
    click.echo(json.dumps(stats.as_dict()))


lab.add_command(lab_backend)  # `pktlb lab backend add|remove` (pktlb/cli/lab_backend_cmd.py)

COMMANDS = [lab, doctor, decap]
