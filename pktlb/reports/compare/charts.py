"""PNG charts of a `pktlb compare` report (matplotlib, Agg backend: no display needed).

One bar group per mode, one bar per engine (pktlb's own, the kernel baseline where it can do the
mode; in mode l7, pktlb proxy and HAProxy).  Small figures, so the files stay a few tens of kilobytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

ENGINE_COLOURS = {"pktlb": "#3b75af", "pktlb-xdp": "#2e8b57", "pktlb-tc": "#8fbc8f", "kernel": "#aaaaaa",
                  "haproxy": "#5aa469"}
IPERF_SHADES = {"pktlb": ("#3b75af", "#9cc3e6"), "pktlb-xdp": ("#2e8b57", "#a8d5ba"), "pktlb-tc": ("#6b8e23", "#c5d99c"),
                "kernel": ("#777777", "#cccccc")}
DPI = 90


def _runs(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in report["runs"] if r.get("available") and not r.get("errors") and "http" in r]


def _grouped(ax: Any, report: dict[str, Any], series: list[tuple[str, str, str, Any]], ylabel: str,
             fmt: str = "%.0f") -> None:
    """Bars grouped by mode: one bar per series (label, colour, engine, value(run)); values on top."""
    modes = list(report["settings"]["modes"])
    runs = _runs(report)
    shown = [s for s in series if any(r["engine"] == s[2] and s[3](r) is not None for r in runs)]
    width = 0.8 / max(len(shown), 1)
    for k, (label, colour, engine, value) in enumerate(shown):
        xs, ys = [], []
        for i, mode in enumerate(modes):
            run = next((r for r in runs if r["mode"] == mode and r["engine"] == engine), None)
            if run is not None and value(run) is not None:
                xs.append(i + (k - (len(shown) - 1) / 2) * width)
                ys.append(value(run))
        bars = ax.bar(xs, ys, width, label=label, color=colour)
        ax.bar_label(bars, fmt=fmt, fontsize=6, padding=1)
    ax.set_xticks(range(len(modes)), modes, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.margins(y=0.18)
    if shown:
        ax.legend(fontsize=6, frameon=False)


def _per_engine(value: Any) -> list[tuple[str, str, str, Any]]:
    return [(engine, colour, engine, value) for engine, colour in ENGINE_COLOURS.items()]


def _iperf(direction: str) -> Any:
    return lambda r: (r.get("iperf3") or {}).get(direction, {}).get("megabytes_per_second")


def throughput_chart(report: dict[str, Any], path: Path) -> None:
    fig, (rate, download, iperf) = plt.subplots(1, 3, figsize=(10, 3.2))
    _grouped(rate, report, _per_engine(lambda r: r["http"]["requests_per_second"]), "requests/s")
    rate.set_title("HTTP requests/s (new connection each)", fontsize=8)
    _grouped(download, report, _per_engine(lambda r: r["throughput"]["megabytes_per_second"]), "MB/s")
    download.set_title(f"HTTP download of {report['settings']['download_bytes'] >> 20} MiB", fontsize=8)
    series = [(f"{engine} {direction}", shade, engine, _iperf(direction))
              for engine, shades in IPERF_SHADES.items()
              for direction, shade in zip(("upload", "download"), shades, strict=True)]
    _grouped(iperf, report, series, "MB/s")
    iperf.set_title("iperf3: client to backend (upload), -R (download)", fontsize=8)
    _save(fig, path)


def latency_chart(report: dict[str, Any], path: Path) -> None:
    runs = _runs(report)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    labels = [f"{r['mode']}\n{r['engine']}" for r in runs]
    width = 0.27
    for k, (pct, colour) in enumerate((("p50", "#7fb3d5"), ("p90", "#2e86c1"), ("p99", "#1b4f72"))):
        xs = [i + (k - 1) * width for i in range(len(runs))]
        bars = ax.bar(xs, [r["http"]["latency_ms"][pct] for r in runs], width, label=pct, color=colour)
        ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
    ax.set_xticks(range(len(runs)), labels, fontsize=8)
    ax.set_ylabel("latency (ms)")
    ax.set_title("HTTP latency percentiles", fontsize=9)
    ax.margins(y=0.15)
    ax.legend(fontsize=7, frameon=False)
    _save(fig, path)


def lb_packets_chart(report: dict[str, Any], path: Path) -> None:
    runs = _runs(report)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    labels = [f"{r['mode']}\n{r['engine']}" for r in runs]
    ins = [r["lb"]["packets_in_per_request"] or 0 for r in runs]
    outs = [r["lb"]["packets_out_per_request"] or 0 for r in runs]
    xs = list(range(len(runs)))
    ax.bar(xs, ins, 0.6, label="client to backend", color="#3b75af")
    bars = ax.bar(xs, outs, 0.6, bottom=ins, label="replies through the LB", color="#e08a3c")
    ax.bar_label(bars, labels=[f"{i:.1f} + {o:.1f}" for i, o in zip(ins, outs, strict=True)], fontsize=7, padding=1)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("packets per request")
    ax.set_title("Packets the LB handled per request (one TCP connection each)", fontsize=9)
    ax.margins(y=0.15)
    ax.legend(fontsize=7, frameon=False)
    _save(fig, path)


def _conns(kind: str) -> Any:
    return lambda r: (r.get("backend_connections") or {}).get(kind, {}).get("per_request")


def l4_l7_chart(report: dict[str, Any], path: Path) -> None:
    """Backend connections per request (close / keep-alive clients), requests/s with and without keep-alive."""
    fig, (conns, rates) = plt.subplots(1, 2, figsize=(10, 3.2))
    series = [(f"{engine} {kind}", shade, engine, _conns(kind))
              for engine, shades in (("pktlb", ("#3b75af", "#9cc3e6")), ("kernel", ("#777777", "#cccccc")),
                                     ("haproxy", ("#3d7f4a", "#a6d5ae")))
              for kind, shade in zip(("close", "keepalive"), shades, strict=True)]
    _grouped(conns, report, series, "backend connections per request", fmt="%.2f")
    conns.set_title("Backend connections per request (close: a new client connection each)", fontsize=8)
    rate = [(f"{engine} {kind}", shade, engine, value)
            for engine, shades in (("pktlb", ("#3b75af", "#9cc3e6")), ("kernel", ("#777777", "#cccccc")),
                                   ("haproxy", ("#3d7f4a", "#a6d5ae")))
            for kind, shade, value in zip(("close", "keep-alive"), shades,
                                          (lambda r: r["http"]["requests_per_second"],
                                           lambda r: (r.get("http_keepalive") or {}).get("requests_per_second")),
                                          strict=True)]
    _grouped(rates, report, rate, "requests/s")
    rates.set_title("HTTP requests/s without and with client keep-alive", fontsize=8)
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def write_charts(report: dict[str, Any], out: Path) -> list[Path]:
    """The four charts of a report, written into out; their paths (none if nothing was measured)."""
    if not _runs(report):
        return []
    paths = [out / "throughput.png", out / "latency.png", out / "lb_packets_per_request.png", out / "l4_l7.png"]
    for chart, path in zip((throughput_chart, latency_chart, lb_packets_chart, l4_l7_chart), paths, strict=True):
        chart(report, path)
    return paths
