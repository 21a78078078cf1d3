"""Rewriters: what each forwarding mode does to a packet.  A small interface and a registry."""

from pktlb.core.rewrite.base import REGISTRY, Rewriter, get_rewriter

__all__ = ["REGISTRY", "Rewriter", "get_rewriter"]
