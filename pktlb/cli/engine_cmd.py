"""``pktlb run`` (the engine) and the commands that talk to it: ``stats``, ``flows``, ``backend``, ``reload``."""

from __future__ import annotations

import glob
import logging
import sys
from typing import Any

import click

from pktlb.cli.common import emit_json, load_config_or_exit, refuse_root_namespace
from pktlb.core.config import LbConfig
from pktlb.daemon.ctlsock import ControlClientError, request

DEFAULT_SOCKET = LbConfig.control_socket
socket_option = click.option("-s", "--socket", "socket_path", default=None,
                             help=f"Control socket of the engine (default: from -c CONFIG, else {DEFAULT_SOCKET}).")
config_option = click.option("-c", "--config", "config_path", default=None, type=click.Path(dir_okay=False),
                             help="Read the control socket path from this config.")


def _socket(socket_path: str | None, config_path: str | None) -> str:
    if socket_path:
        return socket_path
    if config_path:
        return load_config_or_exit(config_path).lb.control_socket
    return DEFAULT_SOCKET


def _ask(socket_path: str, payload: dict[str, Any]) -> Any:
    try:
        return request(socket_path, payload)
    except ControlClientError as exc:
        raise click.ClickException(str(exc)) from None


def _worker_sockets(socket_path: str) -> list[str]:
    """Worker 0's socket and, with ``pktlb run --workers N``, the others' (``<socket>.w<i>``)."""
    others = sorted(glob.glob(glob.escape(socket_path) + ".w*"), key=lambda p: int(p.rsplit(".w", 1)[1] or 0))
    return [socket_path] + [p for p in others if p.rsplit(".w", 1)[1].isdigit()]


def _ask_all(socket_path: str, payload: dict[str, Any]) -> list[Any]:
    """Send a change to every worker (each holds its own snapshot); the first answer is worker 0's."""
    return [_ask(path, payload) for path in _worker_sockets(socket_path)]


def _merged_stats(socket_path: str) -> dict[str, Any]:
    """Worker 0's stats with every worker's counters added up (one worker: returned as it is)."""
    parts = _ask_all(socket_path, {"cmd": "stats"})
    merged = parts[0]
    if len(parts) == 1:
        return merged
    merged["workers"] = len(parts)
    for other in parts[1:]:
        for key in ("received", "forwarded", "replied", "dropped"):
            merged["totals"][key] += other["totals"][key]
        for reason, n in other["totals"]["drops"].items():
            merged["totals"]["drops"][reason] = merged["totals"]["drops"].get(reason, 0) + n
        for key in ("entries", "max_entries", "inserted", "evicted", "expired"):  # each worker has its own table
            merged["flows"][key] += other["flows"][key]
        port, other_port = merged.get("port"), other.get("port") or {}
        for key in ("rx", "tx", "rx_truncated", "rx_partial", "rx_gso", "kernel_drops"):
            if port is not None and key in port:
                port[key] += other_port.get(key, 0)
        for svc, other_svc in zip(merged["services"], other["services"], strict=False):
            rows = {b["name"]: b for b in other_svc["backends"]}
            for be in svc["backends"]:
                for key in ("active_flows", "packets_in", "bytes_in", "packets_out", "bytes_out", "new_flows",
                            "pps_in", "bps_in", "pps_out", "bps_out"):
                    if key in be and be["name"] in rows:
                        be[key] += rows[be["name"]].get(key, 0)
    return merged


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
def run(config_path: str, workers: int, capture_dir: str | None, socket_path: str | None, no_health: bool,
        allow_root_namespace: bool) -> None:
    """Run the forwarding engine in this network namespace (needs root).

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
                      health=not no_health).run()
        else:
            sys.exit(run_workers(config_path, workers, capture_dir=capture_dir, control_socket=socket_path,
                                 health=not no_health))
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@socket_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats(socket_path: str | None, config_path: str | None, as_json: bool) -> None:
    """Per service and backend: state, weight, active flows, packets/bytes in and out, rates, drops by reason.

    Against `pktlb proxy`'s socket: per backend requests, responses by class, connections opened and
    reused, pooled connections; rejections by reason."""
    data = _merged_stats(_socket(socket_path, config_path))
    if as_json:
        emit_json(data)
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
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 10_000),
              help="List at most this many flows (per worker).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def flows(socket_path: str | None, config_path: str | None, limit: int, as_json: bool) -> None:
    """The engine's flow table: client, VIP, backend, state, counters."""
    parts = _ask_all(_socket(socket_path, config_path), {"cmd": "flows", "limit": limit})
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
    def run_action(socket_path: str | None, config_path: str | None, service: str, name: str, as_json: bool,
                   **kw: Any) -> None:
        payload = {"cmd": "backend", "action": action, "service": service, "backend": name, **kw}
        result = _ask_all(_socket(socket_path, config_path), payload)[0]
        if as_json:
            emit_json(result)
        else:
            moved = "".join(f", {svc}: {n} maglev slots moved" for svc, n in result.get("ring_moved", {}).items())
            click.echo(f"snapshot {result['generation']}: {result['why']}{moved}")
    return run_action


def _register_backend(action: str, help_text: str, *options: Any) -> None:
    fn = _backend_cmd(action)
    for opt in reversed((socket_option, config_option,
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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def reload(socket_path: str | None, config_path: str | None, as_json: bool) -> None:
    """Reload the engine's config file (the same as sending it SIGHUP)."""
    results = _ask_all(_socket(socket_path, config_path), {"cmd": "reload"})
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
