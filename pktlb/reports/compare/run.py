"""`pktlb compare`: the same bounded workload through every forwarding mode, measured side by side.

The runs (``plan.py``) one after the other, each a lab built, measured and removed (``mode_run.py``),
assembled into one report with the settings, the host and the lab's constants; then the invariants
checked and report.json, report.md and the charts written.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pktlb.lab.fastpath import hooks_to_measure
from pktlb.lab.topology import load_topology
from pktlb.reports.compare import workload as wl
from pktlb.reports.compare.charts import write_charts
from pktlb.reports.compare.mode_run import PROBE_SOURCES, ModeRun
from pktlb.reports.compare.plan import CompareSettings, Progress, compare_engines, unavailable
from pktlb.reports.compare.render import invariants, render_markdown

REPORT_VERSION = 1


def run_compare(settings: CompareSettings, progress: Progress) -> dict[str, Any]:
    """Run every mode with every engine in turn; the report (also written by the caller)."""
    data = load_topology()
    (settings.out / "captures").mkdir(parents=True, exist_ok=True)
    plan = [(mode, engine) for mode in settings.modes for engine in compare_engines(settings, data, mode)]
    runnable = [(m, e) for m, e in plan if unavailable(data, m, e, topology=settings.topology) is None]
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    for mode, engine in plan:
        reason = unavailable(data, mode, engine, topology=settings.topology)
        if reason:
            progress(f"[{mode}/{engine}] skipped: {reason}")
            runs.append({"mode": mode, "engine": engine, "available": False, "reason": reason, "errors": []})
            continue
        label = f"{mode}/{engine} {runnable.index((mode, engine)) + 1}/{len(runnable)}"
        runs.append(ModeRun(settings, mode, engine, label, progress).run(data))
    return {
        "version": REPORT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.monotonic() - started, 1),
        "settings": {"modes": list(settings.modes), "scheduler": settings.scheduler, "l7_scheduler": settings.l7_scheduler,
                     "backends": settings.backends, "keepalive_seconds": max(1, round(settings.duration / 2)),
                     "duration": None if settings.requests else settings.duration, "requests": settings.requests,
                     "connections": wl.CONNECTIONS, "download_bytes": wl.DOWNLOAD_BYTES,
                     "probe_sources": PROBE_SOURCES, "out": str(settings.out),
                     "fastpath": hooks_to_measure(settings.fastpath), "topology": settings.topology},
        "host": {"cpus": os.cpu_count(), "kernel": os.uname().release},
        "lab": {key: data["constants"][key] for key in ("vip", "service_port", "lb_address", "snat_address")},
        "runs": runs,
    }


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Check the invariants, then write report.json, report.md and the charts; their paths."""
    report["invariants"] = invariants(report)
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    paths.update({p.stem: p for p in write_charts(report, out)})
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["markdown"].write_text(render_markdown(report))
    return paths
