"""``timeline.png``: an auto-scaling run (or replay) as a student reads it, from its journal records.

Top: the metric per backend that the policy saw (after the EWMA) against the target, with the
tolerance band shaded, and the raw per-backend value for comparison.  Middle: the number of serving
backends as a step line, the ready ones (warm-up over) and the policy's desired count, between the
min and max bounds.  Bottom (only when samples carry it): p99 request latency.  Every scale-out
(green) and scale-in (orange) is a vertical line through all panels; removals after a drain are
marked on the backend panel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

DPI = 90
OUT_COLOUR, IN_COLOUR, REMOVED_COLOUR = "#2e8b57", "#e07b00", "#888888"


def _series(samples: list[dict[str, Any]], get: Any) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for s in samples:
        value = get(s)
        if value is not None:
            xs.append(s["time"])
            ys.append(value)
    return xs, ys


def _raw_per_backend(s: dict[str, Any]) -> float | None:
    return s["raw"] / s["backends"] if s.get("raw") is not None and s.get("backends") else None


def timeline_chart(records: list[dict[str, Any]], path: Path, *, title: str | None = None) -> None:
    start = next((r for r in records if r["type"] == "start"), {})
    samples = [r for r in records if r["type"] == "sample"]
    policy = start.get("policy") or {}
    target, tolerance = start.get("target"), policy.get("tolerance", 0.0)
    latency = any(s.get("p99_ms") is not None for s in samples)
    rows = 3 if latency else 2
    fig, axes = plt.subplots(rows, 1, figsize=(11, 2.2 * rows + 0.6), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2, 2][:rows]})
    metric_ax, count_ax = axes[0], axes[1]

    metric_ax.plot(*_series(samples, _raw_per_backend), color="#bbbbbb", lw=0.8, label="raw / backends")
    metric_ax.plot(*_series(samples, lambda s: (s.get("decision") or {}).get("per_backend")), color="#3b75af",
                   lw=1.6, label="per backend (smoothed, ready backends)")
    if target is not None:
        metric_ax.axhline(target, color="black", lw=1, ls="--", label=f"target {target:g}")
        if tolerance:
            metric_ax.axhspan(target * (1 - tolerance), target * (1 + tolerance), color="#dddddd", alpha=0.5,
                              label=f"tolerance +-{100 * tolerance:g} %")
    metric_ax.set_ylabel(f"{start.get('metric', 'metric')}\nper backend", fontsize=8)
    metric_ax.legend(fontsize=6, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))

    moved = _moves(records)
    count_ax.step(*_series(samples, lambda s: s["backends"] + moved.get(s["time"], 0)), where="post",
                  color="#3b75af", lw=1.6, label="serving backends")
    count_ax.step(*_series(samples, lambda s: s.get("ready")), where="post", color="#3b75af", lw=0.8, ls=":",
                  label="ready (warm-up over)")
    count_ax.step(*_series(samples, lambda s: (s.get("decision") or {}).get("stabilized")), where="post",
                  color="#999999", lw=0.8, ls="--", label="highest recommendation in the scale-in window")
    for bound, label in (("min_backends", "min / max"), ("max_backends", None)):
        if bound in policy:
            count_ax.axhline(policy[bound], color="#cc4444", lw=0.6, ls="-.", label=label)
    removed = [r for r in records if r["type"] == "removed"]
    if removed:
        count_ax.plot([r["time"] for r in removed], [_count_at(samples, r["time"]) for r in removed], "x",
                      color=REMOVED_COLOUR, label="removed after drain")
    counts = [s["backends"] for s in samples] + [policy.get("min_backends", 1), policy.get("max_backends", 1)]
    count_ax.set_ylim(min(counts) - 0.5, max(counts) + 0.8)
    count_ax.set_ylabel("backends", fontsize=8)
    count_ax.yaxis.get_major_locator().set_params(integer=True)
    count_ax.legend(fontsize=6, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))

    if latency:
        axes[2].plot(*_series(samples, lambda s: s.get("p99_ms")), color="#8e44ad", lw=1.2)
        axes[2].set_ylabel("p99 latency (ms)", fontsize=8)

    for r in records:
        if r["type"] in ("scale_out", "scale_in") and r.get("backends"):
            colour = OUT_COLOUR if r["type"] == "scale_out" else IN_COLOUR
            for ax in axes:
                ax.axvline(r["time"], color=colour, lw=0.9, alpha=0.8)
            sign = "+" if r["type"] == "scale_out" else "-"
            count_ax.annotate(f"{sign}{len(r['backends'])}", (r["time"], 1), xycoords=("data", "axes fraction"),
                              fontsize=7, color=colour, ha="left", va="top", xytext=(2, -2),
                              textcoords="offset points")
    for ax in axes:
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    axes[-1].set_xlabel("seconds since start", fontsize=8)
    label = title or (f"auto-scaling {start.get('service', '')}: {start.get('metric')} target {target:g} per backend"
                      if target is not None else "auto-scaling")
    if start.get("replay_of"):
        label += f" (replay of {Path(start['replay_of']).name})"
    fig.suptitle(label, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _moves(records: list[dict[str, Any]]) -> dict[float, int]:
    """Backends added (+) or put to drain (-) at each sample time: a sample counts the fleet before its
    decision, the chart shows it after."""
    moved: dict[float, int] = {}
    for r in records:
        if r["type"] in ("scale_out", "scale_in"):
            sign = 1 if r["type"] == "scale_out" else -1
            moved[r["time"]] = moved.get(r["time"], 0) + sign * len(r.get("backends") or [])
    return moved


def _count_at(samples: list[dict[str, Any]], time: float) -> float:
    before = [s for s in samples if s["time"] <= time]
    return before[-1]["backends"] if before else 0


__all__ = ["timeline_chart"]
