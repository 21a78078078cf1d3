"""``pktlb l7-report``: builds the labs, runs each section, tears the labs down, returns one report dict.

    report = run_report(ReportOptions(sections=("tls", "persistence")), progress=print)

Sections that need the L4 lab (TLS through DSR, persistence with ``sh``) share one; the L7 sections
share another, in which each measurement starts its own proxy.  A section that fails is reported with
its error and the others still run; both labs are removed in every case.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pktlb.lab.topology import LabError
from pktlb.reports.l7features.labs import Lab, build_lab, report_prefix
from pktlb.reports.l7features.sections import cache_rows, filter_rows, persistence_l4, persistence_l7
from pktlb.reports.l7features.servers import ReportError
from pktlb.reports.l7features.tls import BACKEND_TLS_PORT, l4_tls_rows, l7_tls_rows, tls_facts

SECTIONS = ("tls", "persistence", "cache", "filter")
ENGINES = ("pktlb", "haproxy")


@dataclass(frozen=True)
class ReportOptions:
    sections: tuple[str, ...] = SECTIONS
    engines: tuple[str, ...] = ENGINES
    backends: int = 3
    tls_requests: int = 300
    concurrency: int = 4
    sessions: int = 24
    cache_requests: int = 1000
    urls: int = 20
    flood: int = 2000
    paced: int = 40
    rate: float = 20.0
    key_type: str = "ec"  # the lab certificates' keys: ec (P-256) or rsa (2048, dearer full handshakes)
    prefix: str = field(default_factory=report_prefix)  # the labs are <prefix>a- (L7) and <prefix>b- (L4)


def run_report(opts: ReportOptions, progress: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    started = time.time()
    report: dict[str, Any] = {"options": opts.__dict__ | {"sections": list(opts.sections),
                                                          "engines": list(opts.engines)},
                              "started": started, "errors": {},
                              "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    needs_l4 = bool({"tls", "persistence"} & set(opts.sections))
    needs_l7 = True
    l4 = l7 = None
    try:
        if needs_l7:
            progress("building the L7 lab (mode l7, no proxy: each measurement starts its own)")
            l7 = build_lab("l7", "none", "rr", opts.backends, opts.prefix, "a", key_type=opts.key_type)
        if needs_l4:
            progress("building the L4 lab (mode dsr, pktlb engine, scheduler sh)")
            l4 = build_lab("dsr", "pktlb", "sh", opts.backends, opts.prefix, "b", key_type=opts.key_type)
        for section in opts.sections:
            progress(f"section {section}")
            try:
                report[section] = SECTION_RUNNERS[section](opts, l7, l4, progress)
            except (ReportError, LabError, OSError, KeyError, ValueError) as exc:
                report["errors"][section] = f"{exc.__class__.__name__}: {exc}"
                progress(f"section {section} failed: {exc}")
    finally:
        for lab in (l4, l7):
            if lab is not None:
                progress(f"removing lab {lab.prefix}")
                lab.close()
    report["seconds"] = round(time.time() - started, 1)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return report


def _tls(opts: ReportOptions, l7: Lab | None, l4: Lab | None, progress: Callable[[str], None]) -> dict[str, Any]:
    assert l7 is not None and l4 is not None
    rows = []
    l7.https_backends(BACKEND_TLS_PORT, l7.pki.backend_cert, l7.pki.backend_key)
    for engine in opts.engines:
        progress(f"  TLS through {engine} (L7)")
        rows += l7_tls_rows(l7, engine, opts.tls_requests, opts.concurrency)
    progress("  TLS through the packet engine (L4 dsr), backends terminating it")
    rows += l4_tls_rows(l4, opts.tls_requests, opts.concurrency)
    return {"rows": rows, "facts": tls_facts(rows)}


def _persistence(opts: ReportOptions, l7: Lab | None, l4: Lab | None,
                 progress: Callable[[str], None]) -> dict[str, Any]:
    assert l7 is not None and l4 is not None
    progress("  L4 sh, the client moving between addresses")
    rows = [persistence_l4(l4, opts.sessions)]
    for engine in opts.engines:
        progress(f"  L7 ({engine}): sh and cookie, the client moving between addresses")
        rows += persistence_l7(l7, engine, opts.sessions)
    return {"rows": rows}


def _cache(opts: ReportOptions, l7: Lab | None, l4: Lab | None, progress: Callable[[str], None]) -> dict[str, Any]:
    assert l7 is not None
    rows = []
    for engine in opts.engines:
        progress(f"  repeated URLs through {engine}, without and with its cache")
        rows += cache_rows(l7, engine, opts.cache_requests, opts.urls)
    return {"rows": rows}


def _filter(opts: ReportOptions, l7: Lab | None, l4: Lab | None, progress: Callable[[str], None]) -> dict[str, Any]:
    assert l7 is not None
    rows = []
    for engine in opts.engines:
        progress(f"  one client flooding, one paced, through {engine} with a rate limit")
        rows.append(filter_rows(l7, engine, opts.flood, opts.paced, opts.rate))
    return {"rows": rows}


SECTION_RUNNERS = {"tls": _tls, "persistence": _persistence, "cache": _cache, "filter": _filter}
