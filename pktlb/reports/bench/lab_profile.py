"""``pktlb bench --profile`` in the lab: stage costs per mode, I/O costs on the LB's interface, and
pyinstrument profiles of the real engine under a flood and of the pure data-path loop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pktlb.reports.bench.lab import GEN_CPU, LB_CPU, BenchLab, changed
from pktlb.reports.bench.options import GENERATOR, flood_args
from pktlb.reports.bench.profile import hot_loop_profile, stage_costs, top_entries
from pktlb.reports.bench.variants import PktlbVariant, set_forwarding

PROFILE_SECONDS = 3.0
IO_RATE = 300_000.0


def _flood(lab: BenchLab, seconds: float, rate: float | None = None) -> subprocess.Popen[bytes]:
    packets = int((rate or 400_000) * seconds)
    return lab.popen("client", [sys.executable, "-m", GENERATOR, *flood_args(lab, packets, seconds, 64, rate)],
                     cpu=GEN_CPU, stdout=subprocess.DEVNULL)


def io_in_lab(lab: BenchLab, seconds: float = 2.0) -> dict[str, Any]:
    """recv_batch/send_batch cost per frame on the LB's eth0 (CPU 1) while the generator floods."""
    undo: list[tuple[Any, ...]] = []
    with changed(undo):
        set_forwarding(lab, 0, undo)
        gen = _flood(lab, seconds + 1.0, IO_RATE)
        try:
            mac = lab.backend_nodes[0].interfaces[0].mac
            return lab.python("lb", "pktlb.reports.bench.profile", ["io", "--seconds", str(seconds), "--backend-mac", mac],
                              cpu=LB_CPU, timeout=seconds + 30)
        finally:
            gen.wait(timeout=seconds + 30)


def engine_profile(lab: BenchLab, out_dir: str | None, seconds: float = PROFILE_SECONDS) -> dict[str, Any]:
    """The engine (NAT) run under pyinstrument during a flood: where the real hot loop spends its time."""
    from pyinstrument.renderers import ConsoleRenderer
    from pyinstrument.session import Session

    session_file = lab.paths.file("engine.pyisession")
    wrapper = [sys.executable, "-m", "pyinstrument", "-i", "0.0005", "-r", "pyisession", "-o", str(session_file)]
    variant = PktlbVariant("nat", wrapper=wrapper)
    undo: list[tuple[Any, ...]] = []
    with changed(undo):
        variant.start(lab, undo)
        try:
            _flood(lab, seconds).wait(timeout=seconds + 30)
            time.sleep(0.2)
        finally:
            variant.stop(lab, signal.SIGINT)
    if not session_file.exists():
        return {"error": "pyinstrument wrote no session"}
    session = Session.load(str(session_file))
    result: dict[str, Any] = {"mode": "nat", "top": top_entries(session)}
    if out_dir:
        path = Path(out_dir) / "profile-engine-nat.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(ConsoleRenderer(unicode=False, color=False, show_all=True).render(session))
        result["file"] = str(path)
    return result


def lab_profile(lab: BenchLab, opts: Any, progress: Any) -> dict[str, Any]:
    profile: dict[str, Any] = {"stages": []}
    for mode in opts.modes:
        progress(f"profile: stage costs, {mode}")
        profile["stages"].append(stage_costs(mode))
    progress("profile: recv_batch/send_batch on the LB's eth0 under a flood")
    profile["io"] = io_in_lab(lab)
    progress("profile: the engine under pyinstrument during a flood")
    profile["engine"] = engine_profile(lab, opts.out)
    progress("profile: the pure data-path loop under pyinstrument")
    profile["datapath"] = hot_loop_profile("nat", PROFILE_SECONDS, opts.out)
    return profile
