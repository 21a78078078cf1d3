"""What a ``pktlb bench`` run is asked to do, and how it starts the traffic generator.

``BenchOptions`` holds the run's settings (the CLI fills it).  ``GENERATOR`` is the module every
part of the bench runs in the client namespace for traffic, and ``flood_args`` its command line for
a bounded flood through the lab's VIP: the orchestrator (``run``) and the optional parts
(``drain``, ``lab_profile``, ``memory``) all start floods the same way, from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pktlb.lab.addressing import mac_for_ip
from pktlb.reports.bench.lab import BENCH_PORT, BenchLab

GENERATOR = "pktlb.reports.bench.benchgen"


@dataclass
class BenchOptions:
    """The settings of one ``pktlb bench`` run (the CLI's options)."""

    modes: list[str] = field(default_factory=lambda: ["nat", "fullnat", "tunnel", "dsr"])
    packets: int = 500_000
    seconds: float = 5.0
    workers: list[int] = field(default_factory=lambda: [1])
    flows: int = 64
    baselines: bool = True
    diagnostic: bool = True  # also the engine without RPS (PktlbRxOnGeneratorCore), in the NAT lab
    scapy_packets: int = 20_000
    scapy_rate: float = 10_000.0
    latency_samples: int = 200
    drain_frames: int = 16_000
    drain_repeats: int = 5
    paced: bool = True
    profile: bool = False
    memory: bool = False
    memory_seconds: float = 60.0
    prefix: str = ""
    out: str | None = None
    # Hooks the engine is measured at with its kernel fast path (pktlb run --fastpath), beside the rows
    # without it; None: every hook this pktlb has (lab/fastpath.py), [] or ["off"]: none.
    fastpath: list[str] | None = None
    syn_packets: int = 50_000  # SYNs of the new-flow flood (each a new flow); 0: no new-flow rate
    xdp_mode: str = "generic"  # how the engine's fast path attaches in the xdp rows (see run.py's method)
    repeats: int = 1  # floods and paced runs per row; the best one counts (highest pps, lowest CPU per packet)


SYN_FLOWS = 65536  # distinct SYNs the new-flow flood cycles through (more than it sends: each is new)
SYN_SOURCES = 128  # from 198.18.1.100 to .227, on the client's segment


def flood_args(lab: BenchLab, packets: int, seconds: float, flows: int, rate: float | None = None,
               first_sport: int = 10000, syn: bool = False) -> list[str]:
    """``GENERATOR flood``'s arguments: from the lab's client to its VIP on the bench port, bounded.

    ``syn``: TCP SYNs from SYN_SOURCES addresses, each a new flow, instead of UDP over ``flows`` flows."""
    client = lab.node("client")
    c = lab.constants
    sources, flows, first_sport = (SYN_SOURCES, SYN_FLOWS, 1024) if syn else (64, flows, first_sport)
    args = ["flood", "--ifname", "eth0", "--src-mac", client.interfaces[0].mac,
            "--dst-mac", mac_for_ip(c["router_client"]), "--src", "198.18.1.100", "--sources", str(sources),
            "--dst", lab.vip, "--dport", str(BENCH_PORT), "--flows", str(flows), "--first-sport", str(first_sport),
            "--packets", str(packets), "--seconds", str(seconds)]
    return args + (["--rate", str(rate)] if rate else []) + (["--syn"] if syn else [])
