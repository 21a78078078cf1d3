"""Helpers the subcommands share: loading config with clear errors, JSON output, privilege checks."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import click

from pktlb.adapters.configfile import load_config
from pktlb.core.config import Config, ConfigError

lab_option = click.option("--lab", "lab_prefix", default=None, metavar="PREFIX",
                          help="The engine of the lab with this prefix (`pktlb lab up --prefix`).")


def load_config_or_exit(path: str) -> Config:
    """Load and validate a config; on error print what is wrong (key, value, expected) and exit 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    except ValueError as exc:  # e.g. a scheduler refusing its parameters
        raise click.ClickException(f"{path}: {exc}") from None
    except OSError as exc:
        raise click.ClickException(f"{path}: {exc.strerror}") from None


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise click.ClickException(f"{what} needs root (raw sockets and network namespaces): run it with sudo")


def in_root_namespace() -> bool:
    """True when this process shares PID 1's network namespace (the host's, outside any lab)."""
    try:
        return os.stat("/proc/self/ns/net").st_ino == os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return False


def refuse_root_namespace(what: str, allow: bool, hint: str) -> None:
    """pktlb's raw-socket commands belong in a lab namespace: in the host's they would capture on, and
    send to, the real network.  ``allow`` is the explicit override (``--allow-root-namespace``)."""
    if not allow and in_root_namespace():
        raise click.ClickException(
            f"{what} runs in a network namespace, not the host's: {hint} "
            "(or pass --allow-root-namespace if you really mean this host's interfaces)")


def show_report(report: dict[str, Any], paths: dict[str, str], as_json: bool,
                markdown: Callable[[dict[str, Any]], str]) -> None:
    """A lab report's output: the JSON, or its Markdown (``markdown(report)``) and the files written."""
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(markdown(report))
        click.echo(f"written: {', '.join(paths.values())}")
