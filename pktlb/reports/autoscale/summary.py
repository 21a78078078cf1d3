"""What an auto-scaling run did, from its journal: the actions in order and a few figures (text or JSON)."""

from __future__ import annotations

from typing import Any

from pktlb.core.policy.autoscale import REASONS


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    start = next((r for r in records if r["type"] == "start"), {})
    samples = [r for r in records if r["type"] == "sample"]
    counts = [s["backends"] for s in samples]
    tolerance = (start.get("policy") or {}).get("tolerance", 0.0)
    ratios = [s["decision"]["ratio"] for s in samples if (s.get("decision") or {}).get("ratio") is not None]
    actions = [{"time": r["time"], "action": r["type"], "backends": r["backends"], "reason": r["reason"],
                "meaning": REASONS.get(r["reason"], ""), "took_s": r.get("took_s")}
               for r in records if r["type"] in ("scale_out", "scale_in") and r.get("backends")]
    return {
        "metric": start.get("metric"), "target": start.get("target"), "service": start.get("service"),
        "replay_of": start.get("replay_of"),
        "duration_s": samples[-1]["time"] if samples else 0.0, "samples": len(samples),
        "backends": {"start": len(start.get("backends", [])), "min": min(counts, default=None),
                     "max": max(counts, default=None), "end": counts[-1] if counts else None},
        "within_tolerance": round(sum(abs(r - 1) <= tolerance + 1e-9 for r in ratios) / len(ratios), 3)
        if ratios else None,
        "actions": actions,
        "removed": [{k: r.get(k) for k in ("time", "backend", "why", "after_s", "flows_left")}
                    for r in records if r["type"] == "removed"],
        "errors": [{k: r.get(k) for k in ("time", "what", "error")} for r in records if r["type"] == "error"],
    }


def render_summary(summary: dict[str, Any]) -> str:
    s = summary
    b = s["backends"]
    head = f"{s['metric']} target {s['target']:g} per backend" if s["target"] is not None else str(s["metric"])
    if s.get("replay_of"):
        head += f" (replay of {s['replay_of']})"
    within = f"{100 * s['within_tolerance']:.0f} %" if s["within_tolerance"] is not None else "-"
    lines = [head, f"{s['samples']} samples over {s['duration_s']:.0f} s; backends {b['start']} at the start, "
                   f"{b['min']}-{b['max']} during the run, {b['end']} at the end; within the tolerance band "
                   f"{within} of the time", ""]
    if not s["actions"]:
        lines.append("no scaling action")
    for a in s["actions"]:
        sign = "+" if a["action"] == "scale_out" else "-"
        lines.append(f"{a['time']:8.1f} s  {a['action']:<9} {sign}{len(a['backends'])} "
                     f"({', '.join(a['backends'])}): {a['meaning'] or a['reason']}"
                     + (f" [added in {a['took_s']:.1f} s]" if a.get("took_s") else ""))
    for r in s["removed"]:
        lines.append(f"{r['time']:8.1f} s  removed   {r['backend']} after a {r['after_s']:.1f} s drain ({r['why']}"
                     f"{', ' + str(r['flows_left']) + ' flows cut' if r['why'] != 'drained' else ''})")
    for e in s["errors"]:
        lines.append(f"{e['time']:8.1f} s  error     {e['what']}: {e['error']}")
    return "\n".join(lines)


__all__ = ["summarize", "render_summary"]
