"""``pktlb l7-report`` as text (Markdown tables) and files (report.md, report.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells[1:]]
    return lines


def _ms(lat: dict[str, Any] | None) -> str:
    if not lat or lat.get("p50") is None:
        return "-"
    return f"{lat['p50']:.2f} / {lat['p99']:.2f}"


def tls_lines(section: dict[str, Any]) -> list[str]:
    rows = []
    for r in section["rows"]:
        hs = r.get("handshakes")
        rows.append([r["layer"], r["engine"], r["pattern"], r["where_tls_ends"], r["requests"], r["errors"],
                     r["requests_per_s"], _ms(r["latency_ms"]), r["lb_cpu_us_per_request"],
                     f"{hs['full']} / {hs['resumed']}" if hs else "-"])
    lines = ["## TLS: what decrypting costs the balancer", ""]
    lines += _table(["layer", "engine", "pattern", "TLS ends at", "ok", "errors", "req/s", "p50 / p99 ms",
                     "LB CPU us/req", "handshakes full / resumed"], rows)
    wired = [r for r in section["rows"] if r.get("wire")]
    if wired:
        lines += ["", "Requests readable on the LB's wire (tcpdump on its interface during 20 HTTPS requests):", ""]
        lines += _table(["layer", "engine", "TLS ends at", "requests", "frames captured", "frames with a request in clear"],
                        [[r["layer"], r["engine"], r["where_tls_ends"], r["wire"]["requests"], r["wire"]["frames"],
                          r["wire"]["frames_with_a_readable_request"]] for r in wired])
    lines += ["", "Ratios of LB CPU per request (new handshake, resumed session, against plain HTTP and keep-alive):", ""]
    facts = section.get("facts", {})
    lines += _table(["LB", "new / plain", "resumed / plain", "new / keep-alive", "resumed / new"],
                    [[k, v["new_over_plain"], v["resumed_over_plain"], v["new_over_keepalive"], v["resumed_over_new"]]
                     for k, v in facts.items()])
    return lines


def persistence_lines(section: dict[str, Any]) -> list[str]:
    lines = ["## Persistence when the client's address changes", ""]
    lines += _table(["layer", "engine", "persistence", "sessions", "moved to another backend", "kept"],
                    [[r["layer"], r["engine"], r["persistence"], r["sessions"], f"{r['moved']} ({r['moved_share']:.0%})",
                      r["kept"]] for r in section["rows"]])
    for r in section["rows"]:
        for key, how in (("backend_down", "taken down by the operator"),
                         ("backend_failed", "cut off (link down) and found down by the health checks after {t} s")):
            down = r.get(key)
            if down:
                what = how.format(t=down.get("detected_after_s"))
                lines += ["", f"Cookie sessions with {down['backend']} {what}: {down['sessions_on_it']} were on it, "
                              f"{down['moved']} moved (new cookie), {down['others_kept']} others kept their backend, "
                              f"{down['failed']} failed."]
    return lines


def cache_lines(section: dict[str, Any]) -> list[str]:
    lines = ["## Cache: repeated URLs", ""]
    lines += _table(["engine", "cache", "requests", "URLs", "backend requests", "saved", "hit ratio", "errors",
                     "hit p50 / p99 ms", "miss p50 / p99 ms"],
                    [[r["engine"], "on" if r["cache"] else "off", r["requests"], r["urls"], r["backend_requests"],
                      r["backend_requests_saved"], r["hit_ratio"], r["errors"], _ms(r["hit_latency_ms"]),
                      _ms(r["miss_latency_ms"])] for r in section["rows"]])
    return lines


def filter_lines(section: dict[str, Any]) -> list[str]:
    lines = ["## Filtering: one client floods, another is paced", ""]
    rows = []
    for r in section["rows"]:
        for who in ("flood", "paced"):
            statuses = ", ".join(f"{k}: {v}" for k, v in r[who]["statuses"].items())
            rows.append([r["engine"], f"{r['rate']:g}/s burst {r['burst']}", who, r[who]["requests"], statuses,
                         _ms(r[who]["ok_latency_ms"]), r["backend_requests"] if who == "flood" else "",
                         str(r["backends_saw_only_admitted"]) if who == "flood" else ""])
    lines += _table(["engine", "limit per client", "client", "requests", "answers", "ok p50 / p99 ms",
                     "backend requests", "backends saw only admitted"], rows)
    return lines


RENDERERS = {"tls": tls_lines, "persistence": persistence_lines, "cache": cache_lines, "filter": filter_lines}


def markdown(report: dict[str, Any]) -> str:
    lines = ["# L7 features, measured (pktlb l7-report)", ""]
    for name, render in RENDERERS.items():
        if name in report:
            lines += render(report[name]) + [""]
    for name, error in report.get("errors", {}).items():
        lines.append(f"Section {name} failed: {error}")
    load = report.get("load_average_before")
    lines.append(f"({report.get('seconds', 0)} s; labs built and removed by the report"
                 + (f"; load average before {load[0]}, after {report['load_average_after'][0]}: the client, the LB and "
                    "the backends share this machine's CPUs, so compare rows with each other" if load else "") + ")")
    return "\n".join(lines)


def write(report: dict[str, Any], out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": str(out / "report.md"), "json": str(out / "report.json")}
    Path(paths["markdown"]).write_text(markdown(report) + "\n")
    Path(paths["json"]).write_text(json.dumps(report, indent=2) + "\n")
    if "tls" in report:
        from pktlb.reports.l7features.charts import tls_chart  # matplotlib only when there is a chart to draw
        chart = tls_chart(report["tls"], out / "tls_cpu.png")
        if chart is not None:
            paths["tls_chart"] = str(chart)
    return paths
