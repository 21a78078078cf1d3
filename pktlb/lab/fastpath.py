"""Whether this pktlb has the engine's kernel fast path, and at which hooks, for the lab and the reports.

``pktlb run --fastpath xdp|tc|off`` (and ``[lb] fastpath`` in the config) forward established flows in
an eBPF program (issue 15).  The lab (``pktlb lab up --fastpath``), ``pktlb bench`` and ``pktlb compare``
measure the engine with and without it; they ask here first, so a pktlb without it says so plainly
instead of failing on an unknown config key.  Whether the kernel can run the program is the engine's
own answer at start-up (``pktlb stats``: ``fastpath.hook`` and ``fastpath.reason``), read by whoever
started it.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from pktlb.adapters.fastpath import object_path
from pktlb.core import config as core_config

HOOKS = ("xdp", "tc")  # where the program can run: before the packet socket (XDP) or after it (tc ingress)
OFF = "off"


def fastpath_hooks() -> tuple[str, ...]:
    """The hooks this pktlb's engine accepts (``pktlb run --fastpath``); () when it has no fast path."""
    if "fastpath" not in {f.name for f in fields(core_config.LbConfig)}:
        return ()
    declared = getattr(core_config, "FASTPATH_HOOKS", HOOKS)
    return tuple(hook for hook in HOOKS if hook in declared)


def missing_reason(hook: str) -> str | None:
    """Why ``hook`` cannot be asked for here (None: it can; the engine may still turn it off, and say why)."""
    if hook == OFF:
        return None
    if hook not in HOOKS:
        return f"unknown fast-path hook {hook!r}: expected one of {', '.join((*HOOKS, OFF))}"
    if hook not in fastpath_hooks():
        return "this pktlb has no kernel fast path (pktlb run --fastpath) yet"
    return None


def parse_hooks(text: str | None) -> list[str] | None:
    """A CLI's ``--fastpath`` value: "auto" or None (None: every hook available), "off" ([]), or "xdp,tc".

    ValueError names a bad value."""
    if text is None or text.strip() == "auto":
        return None
    hooks = [h.strip() for h in text.split(",") if h.strip()]
    if hooks == [OFF]:
        return []
    for hook in hooks:
        if hook not in HOOKS:
            raise ValueError(f"--fastpath: got {hook!r}, expected auto, off or a list of {', '.join(HOOKS)}")
    return hooks


def hooks_to_measure(asked: list[str] | None) -> list[str]:
    """The fast-path rows to measure: ``asked`` (None: the first hook this pktlb has, if any)."""
    if asked is None:
        return list(fastpath_hooks()[:1])
    return [h for h in asked if h != OFF]


def pass_object() -> Path:
    """The XDP_PASS program (``make fastpath`` builds it beside the fast path) that a veth peer of an
    interface with the XDP fast path must run: a veth hands XDP_TX frames only to a peer with XDP."""
    return object_path().with_name("pass.bpf.o")
