"""The rewriter registry: the one module that imports every forwarding mode, keyed by the name config and CLI use.

A new mode is a ``base.Rewriter`` subclass with its ``traits`` in its own module, listed here.
"""

from __future__ import annotations

from pktlb.core.rewrite.base import Rewriter
from pktlb.core.rewrite.dsr import DsrRewriter
from pktlb.core.rewrite.fullnat import FullNatRewriter
from pktlb.core.rewrite.nat import NatRewriter
from pktlb.core.rewrite.traits import NO_TRAITS, ModeTraits
from pktlb.core.rewrite.tunnel import TunnelRewriter

REGISTRY: dict[str, Rewriter] = {rw.name: rw for rw in (NatRewriter(), FullNatRewriter(), TunnelRewriter(), DsrRewriter())}
MODES: tuple[str, ...] = tuple(REGISTRY)  # nat, fullnat, tunnel, dsr: the packet modes, in the order reports show them


def get_rewriter(name: str) -> Rewriter:
    """The rewriter of a packet mode; ValueError naming the choices for another word."""
    if name not in REGISTRY:
        raise ValueError(f"unknown mode {name!r}: expected one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def traits_of(mode: str | None) -> ModeTraits:
    """The traits of a packet mode; every trait off for anything else (``l7``, an unknown or missing mode)."""
    rw = REGISTRY.get(mode) if mode else None
    return rw.traits if rw is not None else NO_TRAITS
