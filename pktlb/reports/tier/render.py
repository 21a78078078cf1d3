"""The tier report as Markdown, JSON and a timeline chart (matplotlib, Agg)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WHAT = {"engine-killed": "engine SIGKILLed (announce sees the control socket refuse, withdraws)",
        "speaker-killed": "BIRD SIGKILLed on the LB (its TCP session closes)",
        "frozen": "every process of the LB SIGSTOPped (only the hold timer / BFD notices)",
        "link-cut": "the LB's link set down (silent: hold timer / BFD)"}


def markdown(report: dict[str, Any]) -> str:
    o = report["options"]
    lines = [f"# LB tier: {o['lbs']} LBs, mode {o['mode']}" + (", BFD 100 ms x 3" if o["bfd"] else ", hold 3 s"),
             "", "## Spread of new flows over the LBs", ""]
    spread = report["spread"]
    total = sum(spread["new_flows_per_lb"].values()) or 1
    lines += ["| LB | new flows | share |", "|---|---|---|"]
    lines += [f"| {lb} | {n} | {100 * n / total:.0f}% |" for lb, n in spread["new_flows_per_lb"].items()]
    lines += ["", f"{spread['ok']}/{spread['requests']} requests answered.", "",
              f"## Failover (victim lb{o['victim']}; a request stream of {o['rate']:.0f}/s, a new connection each)",
              "", "| failure | time until the router stops using the LB | failed requests | requests | all LBs routed again, after the stream |",
              "|---|---|---|---|---|"]
    for f in report["failures"]:
        withdraw = f"{f['withdraw_s'] * 1000:.0f} ms" if f["withdraw_s"] is not None else "never"
        back = f"{f['back_in_s']:.1f} s" if f["back_in_s"] is not None else "not back"
        lines.append(f"| {f['kind']}: {WHAT[f['kind']]} | {withdraw} | {f['failed']} | {f['requests']} | {back} |")
    lines += ["", "## Flows moved when lb1 left", "",
              "| router ECMP | survivor flows moved (ip route get) | held connections moved between survivors | "
              "of those broken | held connections broken |", "|---|---|---|---|---|"]
    for m in report["moves"]:
        lines.append(f"| {m['ecmp']} | {m['moved']}/{m['on_survivors']} ({100 * m['moved_fraction']:.1f}%) | "
                     f"{m['held_moved_between_survivors']}/{m['held']} | {m['held_moved_broken']} | "
                     f"{m['held_broken']} |")
    return "\n".join(lines) + "\n"


def timeline_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    failures = report["failures"]
    fig, axes = plt.subplots(len(failures), 1, figsize=(9, 1.6 * len(failures) + 0.6), sharex=True, squeeze=False)
    for ax, f in zip(axes[:, 0], failures, strict=True):
        ok = [r["t"] for r in f["timeline"] if r["ok"]]
        bad = [r["t"] for r in f["timeline"] if not r["ok"]]
        ax.scatter(ok, [1] * len(ok), s=8, marker="|", color="tab:green", label="answered")
        ax.scatter(bad, [0] * len(bad), s=24, marker="x", color="tab:red", label="failed")
        ax.axvline(0, color="black", lw=1)
        if f["withdraw_s"] is not None:
            ax.axvspan(0, f["withdraw_s"], color="tab:orange", alpha=0.25, label="until withdrawn")
        ax.set_yticks([0, 1], ["failed", "ok"])
        ax.set_ylim(-0.6, 1.6)
        ax.set_title(f"{f['kind']}: withdrawn after "
                     + (f"{f['withdraw_s'] * 1000:.0f} ms" if f["withdraw_s"] is not None else "never")
                     + f", {f['failed']} failed", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("seconds since the failure (requests by start time)")
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: dict[str, Any], out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "tier.json", "markdown": out / "tier.md", "chart": out / "tier-timeline.png"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["markdown"].write_text(markdown(report) + f"\n![timeline]({paths['chart'].name})\n")
    timeline_chart(report, paths["chart"])
    return {k: str(v) for k, v in paths.items()}
