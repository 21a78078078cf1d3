"""The chart of ``pktlb l7-report``'s TLS section: LB CPU per request by pattern, one bar group per LB.

matplotlib with the Agg backend (no display); a small PNG (``tls_cpu.png``) beside report.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

PATTERNS = (("plain", "plain HTTP, new connection", "#bbbbbb"), ("new", "TLS, new handshake", "#c0392b"),
            ("resumed", "TLS, resumed session", "#e67e22"), ("keepalive", "TLS, kept alive", "#3b75af"))
DPI = 90


def tls_chart(section: dict[str, Any], path: Path) -> Path | None:
    """Bars of LB CPU µs per request: for each LB (pktlb proxy, HAProxy, the L4 engine), each pattern."""
    rows = section.get("rows") or []
    lbs = list(dict.fromkeys((r["layer"], r["engine"]) for r in rows))
    if not lbs:
        return None
    names = {("L7", "pktlb"): "pktlb proxy\n(TLS ends at the LB)", ("L7", "haproxy"): "HAProxy\n(TLS ends at the LB)",
             ("L4 dsr", "pktlb"): "pktlb engine, dsr\n(backends end TLS)"}
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=DPI)
    width = 0.8 / len(PATTERNS)
    for k, (pattern, label, colour) in enumerate(PATTERNS):
        xs, ys = [], []
        for i, lb in enumerate(lbs):
            row = next((r for r in rows if (r["layer"], r["engine"]) == lb and r["pattern"] == pattern), None)
            if row is not None and row.get("lb_cpu_us_per_request") is not None:
                xs.append(i + (k - (len(PATTERNS) - 1) / 2) * width)
                ys.append(row["lb_cpu_us_per_request"])
        bars = ax.bar(xs, ys, width, label=label, color=colour)
        ax.bar_label(bars, fmt="%.0f", fontsize=6, padding=1)
    ax.set_xticks(range(len(lbs)), [names.get(lb, f"{lb[0]} {lb[1]}") for lb in lbs], fontsize=8)
    ax.set_ylabel("LB CPU per request (µs)", fontsize=8)
    ax.set_title("What TLS costs the balancer", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
