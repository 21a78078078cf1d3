"""One config, two servers: the packet engine (``pktlb run``) serves the L4 services, ``pktlb proxy`` the L7 ones."""

from __future__ import annotations

from dataclasses import replace

from pktlb.core.config import Config


def engine_part(config: Config) -> tuple[Config, tuple[str, ...]]:
    """The config the packet engine runs (its L7 services left out) and the names of those left out."""
    kept = tuple(s for s in config.services if s.l7 is None)
    return replace(config, services=kept), tuple(s.name for s in config.services if s.l7 is not None)


def proxy_part(config: Config) -> tuple[Config, tuple[str, ...]]:
    """The config the L7 proxy runs (only its ``mode = "l7"`` services) and the names of the others."""
    kept = tuple(s for s in config.services if s.l7 is not None)
    return replace(config, services=kept), tuple(s.name for s in config.services if s.l7 is None)
