"""Reading a config file: the I/O half of ``pktlb.core.config`` (which parses and validates text)."""

from __future__ import annotations

from pktlb.core.config import Config, parse_config


def load_config(path: str) -> Config:
    """Read and validate a TOML config; OSError if unreadable, ConfigError naming the bad key."""
    with open(path, "rb") as fh:
        raw = fh.read()
    return parse_config(raw.decode("utf-8", errors="replace"))
