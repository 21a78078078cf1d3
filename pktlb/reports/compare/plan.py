"""Which runs `pktlb compare` makes: its settings, the engines each mode is measured with (pktlb's own,
the same with its kernel fast path at each hook, the kernel's nftables baseline), and why a lab cannot
run one of them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pktlb.core.config import MODES
from pktlb.lab.fastpath import hooks_to_measure
from pktlb.lab.topology import LabError, LabOptions, check_options, engine_section, mode_default

ENGINES = ("pktlb", "kernel")
FASTPATH_ENGINE = "pktlb-{hook}"  # the engine with its kernel fast path at a hook, beside "pktlb" without it
DEFAULT_PREFIX = "pktlb-cmp-"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class CompareSettings:
    modes: tuple[str, ...] = MODES
    scheduler: str = "maglev"
    backends: int = 3
    duration: float = 5.0
    requests: int | None = None  # a request count instead of a duration (ab instead of wrk)
    out: Path = Path("out/compare")
    prefix: str = DEFAULT_PREFIX
    topology: str = "one-arm"  # the lab layout every run uses (netns/lab.toml [topology.*])
    l7_scheduler: str = "rr"  # mode l7's scheduler: per request (a connection hash would pin a connection)
    fastpath: list[str] | None = None  # hooks to compare the packet engine at with its fast path; None: auto


def compare_engines(settings: CompareSettings, data: dict[str, Any], mode: str) -> tuple[str, ...]:
    """The mode's engines; in a packet mode, pktlb's engine is followed by the same with its fast path at each
    hook asked for (or available)."""
    engines = tuple(mode_default(data, mode, "compare_engines", ENGINES))
    if "pktlb" not in engines or mode_default(data, mode, "layer", 4) != 4:
        return engines
    at = engines.index("pktlb") + 1
    fast = tuple(FASTPATH_ENGINE.format(hook=hook) for hook in hooks_to_measure(settings.fastpath))
    return (*engines[:at], *fast, *engines[at:])


def lab_engine(engine: str) -> tuple[str, str]:
    """The lab's engine and fast path behind a compare engine name: "pktlb-xdp" is ("pktlb", "xdp")."""
    base, _, hook = engine.partition("-")
    return (base, hook) if base == "pktlb" and hook else (engine, "off")


def unavailable(data: dict[str, Any], mode: str, engine: str, has_binary: Callable[[str], Any] = shutil.which,
                topology: str = "one-arm") -> str | None:
    """Why the lab cannot run this engine in this mode (the lab's own refusal, or its program is not
    installed: HAProxy), None if it can."""
    base, hook = lab_engine(engine)
    try:
        check_options(LabOptions(mode=mode, engine=base, fastpath=hook, topology=topology), data)
    except LabError as exc:
        return str(exc)
    engine = base
    service = engine_section(data, engine, mode).get("service")
    program = data["service"].get(service, {}).get("requires") if service else None
    if program and not has_binary(program):
        return f"--engine {engine} cannot do mode {mode}: {program} is not installed (`make deps` installs it)"
    return None
