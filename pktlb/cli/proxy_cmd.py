"""``pktlb proxy``: the L7 HTTP/1.1 reverse proxy for the config's ``mode = "l7"`` services."""

from __future__ import annotations

import logging

import click

from pktlb.cli.common import load_config_or_exit


@click.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="pktlb TOML config (its services with mode = \"l7\" are served).")
@click.option("-s", "--socket", "socket_path", default=None, help="Control socket path (overrides lb.control_socket).")
@click.option("--no-health", is_flag=True, help="Do not run the configured health checks.")
def proxy(config_path: str, socket_path: str | None, no_health: bool) -> None:
    """Run the L7 reverse proxy: per-request balancing, routing on Host and path, pooled backend connections.

    It listens on each L7 service's vip:port (an ordinary socket: no root needed for ports above
    1023), answers `pktlb stats` and `pktlb backend ...` on the control socket, and stops cleanly
    on SIGTERM/SIGINT.
    """
    from pktlb.daemon.proxy.server import StartupError, run_proxy

    load_config_or_exit(config_path)  # the usual clear error for a bad file, before anything starts
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)
    try:
        run_proxy(config_path, control_socket=socket_path, health=not no_health)
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None


COMMANDS = [proxy]
