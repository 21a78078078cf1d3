"""``pktlb run`` (the engine) and the commands that talk to it: ``stats``, ``flows``, ``backend``, ``reload``."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from pktlb.cli.common import emit_json, lab_option, load_config_or_exit, refuse_root_namespace
from pktlb.core.config import LbConfig
from pktlb.daemon.ctlsock import ControlClientError, request, worker_sockets
from pktlb.daemon.worker_stats import merge_worker_stats
from pktlb.lab.engines import EngineNotFound, find_engine, find_lab, lab_engine

DEFAULT_SOCKET = LbConfig.control_socket
socket_option = click.option("-s", "--socket", "socket_path", default=None,
                             help=f"Control socket of the engine (default: from -c CONFIG or --lab PREFIX, else "
                                  f"{DEFAULT_SOCKET} if an engine answers there, else the one lab engine running).")
config_option = click.option("-c", "--config", "config_path", default=None, type=click.Path(dir_okay=False),
                             help="Read the control socket path from this config.")


def _socket(socket_path: str | None, config_path: str | None, lab_prefix: str | None = None) -> str:
    """-s, else -c's lb.control_socket, else --lab's engine, else the engine found (``pktlb.lab.engines``)."""
    if socket_path:
        return socket_path
    if config_path:
        return load_config_or_exit(config_path).lb.control_socket
    try:
        return (lab_engine(lab_prefix) if lab_prefix is not None else find_engine()).socket
    except EngineNotFound as exc:
        raise click.ClickException(str(exc)) from None


def _ask(socket_path: str, payload: dict[str, Any]) -> Any:
    try:
        return request(socket_path, payload)
    except ControlClientError as exc:
        raise click.ClickException(str(exc)) from None


def _ask_all(socket_path: str, payload: dict[str, Any]) -> list[Any]:
    """Send a change to every worker (each holds its own snapshot); the first answer is worker 0's."""
    return [_ask(path, payload) for path in worker_sockets(socket_path)]


def _merged_stats(socket_path: str) -> dict[str, Any]:
    """Worker 0's stats with every worker's counters added up (one worker: returned as it is)."""
    return merge_worker_stats(_ask_all(socket_path, {"cmd": "stats"}))


@click.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="pktlb TOML config.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Forwarding processes sharing the interface through PACKET_FANOUT (a CBPF program).")
@click.option("--capture", "capture_dir", type=click.Path(file_okay=False),
              help="Write every frame the engine receives and sends to pcap files in this directory.")
@click.option("-s", "--socket", "socket_path", default=None, help="Control socket path (overrides lb.control_socket).")
@click.option("--no-health", is_flag=True, help="Do not run the configured health checks.")
@click.option("--allow-root-namespace", is_flag=True, help="Run in the host's network namespace (not a lab's).")
@click.option("--no-guard", is_flag=True,
              help="Do not install the nftables guard (table pktlb_guard: netdev ingress, or ip prerouting with "
                   "--fastpath tc) that keeps this namespace's kernel "
                   "from answering or forwarding VIP traffic; you keep it out of the way yourself.")
@click.option("--fastpath", type=click.Choice(["xdp", "tc", "off"]), default=None,
              help="Kernel fast path for established flows (eBPF at XDP or tc ingress; default: [lb] fastpath, "
                   "else off). One program per interface, its maps shared by all --workers. "
                   "Without clang/BPF the engine runs without it and says why.")
def run(config_path: str, workers: int, capture_dir: str | None, socket_path: str | None, no_health: bool,
        allow_root_namespace: bool, no_guard: bool, fastpath: str | None) -> None:
    """Run the forwarding engine in this network namespace (needs root).

    It installs an nftables table, netdev pktlb_guard, dropping at ingress what the engine handles
    (VIP traffic, NAT and full-NAT replies) so the kernel neither answers nor forwards it (with
    --fastpath tc: ip pktlb_guard at prerouting, after the engine's ETH_P_IP sockets); each change
    is logged and the table is removed on exit (or on the next start, after a SIGKILL).

    SIGTERM/SIGINT stop it cleanly; SIGHUP reloads CONFIG and applies the difference while the
    established flows keep their backends.
    """
    from pktlb.daemon.forwarder import Forwarder, StartupError
    from pktlb.daemon.workers import run_workers

    refuse_root_namespace("pktlb run", allow_root_namespace,
                          "e.g. `pktlb lab up` starts it in the lab's LB, or `ip netns exec pktlb-lb pktlb run -c ...`")
    load_config_or_exit(config_path)  # a clear error before any worker is forked
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)
    try:
        if workers == 1:
            Forwarder(config_path, capture_dir=capture_dir, control_socket=socket_path,
                      health=not no_health, guard=not no_guard, fastpath=fastpath).run()
        else:
            sys.exit(run_workers(config_path, workers, capture_dir=capture_dir, control_socket=socket_path,
                                 health=not no_health, guard=not no_guard, fastpath=fastpath))
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None


def _lab_haproxy_socket(lab_prefix: str | None) -> str | None:
    """The stats socket of the lab's HAProxy (an l7 lab with --engine haproxy), None for any other lab."""
    try:
        lab = find_lab(lab_prefix)
    except EngineNotFound:
        return None
    return str(lab.haproxy_socket) if lab.haproxy_socket.exists() else None


def _haproxy_stats(socket_path: str) -> dict[str, Any]:
    from pktlb.adapters.haproxy_stats import HaproxyStatsError, haproxy_stats

    try:
        return haproxy_stats(socket_path)
    except HaproxyStatsError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@socket_option
@config_option
@lab_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats(socket_path: str | None, config_path: str | None, lab_prefix: str | None, as_json: bool) -> None:
    """Per service and backend: state, weight, active flows, packets/bytes in and out, rates, drops by reason.

    Against `pktlb proxy`'s socket: per backend requests, responses by class, connections opened and
    reused, pooled connections; rejections by reason.  For an l7 lab with --engine haproxy: HAProxy's
    counters from its stats socket, in the same columns."""
    haproxy = None if socket_path or config_path else _lab_haproxy_socket(lab_prefix)
    if haproxy:
        data = _haproxy_stats(haproxy)
    else:
        data = _merged_stats(_socket(socket_path, config_path, lab_prefix))
    if as_json:
        emit_json(data)
        return
    if data.get("kind") == "haproxy":
        from pktlb.cli.proxy_text import render_haproxy_stats

        click.echo(render_haproxy_stats(data))
        return
    if data.get("kind") == "l7-proxy":
        from pktlb.cli.proxy_text import render_proxy_stats

        click.echo(render_proxy_stats(data))
        return
    from pktlb.reports.stats_text import render_stats

    click.echo(render_stats(data))


@click.command()
@socket_option
@config_option
@lab_option
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 10_000),
              help="List at most this many flows (per worker).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def flows(socket_path: str | None, config_path: str | None, lab_prefix: str | None, limit: int, as_json: bool) -> None:
    """The engine's flow table: client, VIP, backend, state, counters."""
    parts = _ask_all(_socket(socket_path, config_path, lab_prefix), {"cmd": "flows", "limit": limit})
    data = {"count": sum(p["count"] for p in parts), "listed": sum(p["listed"] for p in parts),
            "flows": [f for p in parts for f in p["flows"]]}
    if as_json:
        emit_json(data)
        return
    click.echo(f"{data['count']} flows ({data['listed']} listed)")
    click.echo(f"{'proto':<5} {'client':<22} {'vip':<20} {'backend':<8} {'state':<6} {'idle':>6} "
               f"{'pkts in':>8} {'pkts out':>8}  snat")
    for f in data["flows"]:
        click.echo(f"{f['proto']:<5} {f['client']:<22} {f['vip']:<20} {f['backend']:<8} {f['state']:<6} "
                   f"{f['idle']:>6} {f['packets_in']:>8} {f['packets_out']:>8}  {f.get('snat', '')}")


@click.group()
def backend() -> None:
    """Change backends of the running engine without a restart (existing flows keep their backend
    unless it is removed or down)."""


def _backend_cmd(action: str, extra: dict[str, Any] | None = None):
    def run_action(socket_path: str | None, config_path: str | None, lab_prefix: str | None, service: str, name: str,
                   as_json: bool, **kw: Any) -> None:
        payload = {"cmd": "backend", "action": action, "service": service, "backend": name, **kw}
        result = _ask_all(_socket(socket_path, config_path, lab_prefix), payload)[0]
        if as_json:
            emit_json(result)
        else:
            moved = "".join(f", {svc}: {n} maglev slots moved" for svc, n in result.get("ring_moved", {}).items())
            click.echo(f"snapshot {result['generation']}: {result['why']}{moved}")
    return run_action


def _register_backend(action: str, help_text: str, *options: Any) -> None:
    fn = _backend_cmd(action)
    for opt in reversed((socket_option, config_option, lab_option,
                         click.option("--service", default="web", show_default=True, help="Service name."),
                         click.argument("name"), *options,
                         click.option("--json", "as_json", is_flag=True, help="Machine-readable output."))):
        fn = opt(fn)
    backend.command(action, help=help_text)(fn)


_register_backend("add", "Add backend NAME (--address, --port, --weight) to a service.",
                  click.option("--address", required=True, help="Backend IPv4 address."),
                  click.option("--port", type=int, default=None, help="Backend port (default: the service port)."),
                  click.option("--weight", type=click.IntRange(0, 1000), default=1, show_default=True),
                  click.option("--mac", default=None, help="Backend MAC (default: neighbour table / ARP)."))
_register_backend("remove", "Remove backend NAME: its flows are rescheduled.")
_register_backend("drain", "Drain backend NAME: existing flows stay, no new ones.")
_register_backend("down", "Mark backend NAME down: no new flows, existing ones rescheduled (or dropped).")
_register_backend("up", "Mark backend NAME up again (administratively).")
_register_backend("weight", "Set backend NAME's weight.", click.argument("weight", type=click.IntRange(0, 1000)))


@click.command()
@socket_option
@config_option
@lab_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def reload(socket_path: str | None, config_path: str | None, lab_prefix: str | None, as_json: bool) -> None:
    """Reload the engine's config file (the same as sending it SIGHUP)."""
    results = _ask_all(_socket(socket_path, config_path, lab_prefix), {"cmd": "reload"})
    result = results[0]
    if as_json:
        emit_json(result)
    elif result.get("reloaded"):
        click.echo(f"snapshot {result['generation']}: {result['why']}")
        for worker, answer in enumerate(results):  # each worker has its own flow table
            where = f" (worker {worker})" if len(results) > 1 else ""
            for name, value in (answer.get("flows") or {}).items():
                shown = " -> ".join(map(str, value)) if isinstance(value, list) else value
                click.echo(f"flows{where}: {name} {shown}")
    else:
        raise click.ClickException(f"reload refused: {result.get('error')}")


COMMANDS = [run, stats, flows, backend, reload]
