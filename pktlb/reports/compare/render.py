"""`pktlb compare` output: the invariants a report must satisfy, the terminal tables and report.md.

The invariants are what each mode is known to do to a packet; a report whose numbers break one
says that the lab or the engine misbehaved, not that the mode differs.
"""

from __future__ import annotations

import os
import textwrap
from typing import Any

from pktlb.core.rewrite.registry import traits_of

CHARTS = {"throughput.png": "Requests per second and throughput by mode",
          "latency.png": "HTTP latency percentiles by mode",
          "lb_packets_per_request.png": "Packets the LB handled per request, by direction",
          "l4_l7.png": "Backend connections per request, and requests/s with and without client keep-alive"}


def measured(run: dict[str, Any]) -> bool:
    return bool(run.get("available")) and not run.get("errors") and "http" in run


def invariants(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each known property of a mode, checked against the run's numbers."""
    lab = report["lab"]
    checks: list[dict[str, Any]] = []

    def check(run: dict[str, Any], what: str, holds: bool, detail: str) -> None:
        checks.append({"mode": run["mode"], "engine": run["engine"], "check": what, "holds": holds, "detail": detail})

    for run in report["runs"]:
        if not run.get("available"):
            continue
        if not measured(run):
            check(run, "the run completed", False, "; ".join(run.get("errors", [])) or "incomplete")
            continue
        _connection_checks(run, report, check)
        if run.get("layer", 4) == 7:
            _proxy_checks(run, lab, check)
            _spread_check(run, report, check)
            continue
        out = run["lb"]["packets_out_per_request"]
        traits = traits_of(run["mode"])
        if not traits.replies_via_lb:
            check(run, "no reply packet passes the LB", out == 0, f"{out} reply packets per request at the LB")
        else:
            check(run, "replies pass the LB", bool(out), f"{out} reply packets per request at the LB")
        expected = traits.encap_overhead
        overhead = run.get("header_overhead_bytes")
        check(run, f"{expected} bytes of header overhead per packet", overhead == expected, f"measured {overhead}")
        source = lab["snat_address"] if traits.needs_snat else run["request"]["client_address"]
        saw = run["request"]["backend_saw"]
        check(run, f"the backend saw {source}", saw == source, f"it saw {saw}")
        mtu = run["mtu"]
        check(run, "the inner MTU is the link MTU less the overhead", mtu["inner"] == mtu["lb_link"] - expected,
              f"link {mtu['lb_link']}, inner {mtu['inner']}")
        _spread_check(run, report, check)
    return checks


def _spread_check(run: dict[str, Any], report: dict[str, Any], check: Any) -> None:
    spread = run["spread"]["probe"]
    if report["settings"]["backends"] * 8 <= run["probe"]["requests"]:  # enough requests to reach them all
        check(run, "every backend served some requests", len(spread) == report["settings"]["backends"],
              ", ".join(f"{k} {v}" for k, v in spread.items()))


def _proxy_checks(run: dict[str, Any], lab: dict[str, Any], check: Any) -> None:
    """What an L7 proxy is known to do: the backend sees the proxy, and the client in X-Forwarded-For."""
    saw = run["request"]["backend_saw"]
    check(run, f"the backend saw the proxy ({lab['lb_address']})", saw == lab["lb_address"], f"it saw {saw}")
    learned = run.get("learned") or {}
    client = run["request"]["client_address"]
    check(run, f"X-Forwarded-For carries the client ({client})", learned.get("x_forwarded_for") == client,
          f"X-Forwarded-For: {learned.get('x_forwarded_for')}")


def _connection_checks(run: dict[str, Any], report: dict[str, Any], check: Any) -> None:
    """Backend connections per request (a new client connection each) and 4 requests on one connection."""
    proxy = run.get("layer", 4) == 7
    close = (run.get("backend_connections") or {}).get("close", {}).get("per_request")
    if close is not None:
        if proxy:
            check(run, "far fewer backend connections than requests (pooling)", close < 0.5,
                  f"{close:.3f} backend connections per request")
        else:
            check(run, "one backend connection per request", 0.9 <= close <= 1.1,
                  f"{close:.3f} backend connections per request")
    one = run.get("one_connection")
    if one and report["settings"]["backends"] > 1:
        spread = f"backends {' '.join(str(b) for b in one['backends'])} on {one['client_connections']} client connection(s)"
        if proxy:
            check(run, "4 requests on one client connection are balanced one by one", one["distinct_backends"] > 1, spread)
        else:
            check(run, "4 requests on one client connection reach one backend", one["distinct_backends"] == 1, spread)

def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def iperf_mbps(run: dict[str, Any], direction: str) -> float | None:
    return (run.get("iperf3") or {}).get(direction, {}).get("megabytes_per_second")


def _row_perf(run: dict[str, Any]) -> list[str]:
    h, lb, t = run["http"], run["lb"], run["throughput"]
    lat = h["latency_ms"]
    return [run["mode"], run["engine"], f"{h['requests_per_second']:.0f}",
            f"{lat['p50']:.1f} / {lat['p90']:.1f} / {lat['p99']:.1f}", f"{t['megabytes_per_second']:.1f}",
            f"{_fmt(iperf_mbps(run, 'upload'))} / {_fmt(iperf_mbps(run, 'download'))}",
            f"{_fmt(lb['packets_in_per_request'])} / {_fmt(lb['packets_out_per_request'])}",
            f"{_fmt(lb['bytes_in_per_request'], 0)} / {_fmt(lb['bytes_out_per_request'], 0)}",
            _fmt(lb.get("cpu_us_per_request"), 0)]


PERF_HEAD = ["mode", "engine", "req/s", "p50 / p90 / p99 ms", "dl MB/s", "iperf3 up / down MB/s",
             "LB pkts/req in / out", "LB bytes/req in / out", "LB CPU us/req"]
PACKET_HEAD = ["mode", "engine", "backend saw", "overhead B/pkt", "inner MTU", "client PMTU", "spread (probe)"]


def _row_packet(run: dict[str, Any], lab: dict[str, Any]) -> list[str]:
    saw = run["request"]["backend_saw"]
    who = ("client" if saw == run["request"]["client_address"] else "LB SNAT" if saw == lab["snat_address"]
           else "proxy" if saw == lab.get("lb_address") else "?")
    mtu = run["mtu"]
    return [run["mode"], run["engine"], f"{saw} ({who})", _fmt(run.get("header_overhead_bytes")),
            str(mtu["inner"]), _fmt(mtu["client_path_mtu"]),
            " ".join(f"{k}:{v}" for k, v in run["spread"]["probe"].items())]


def _note_row(run: dict[str, Any]) -> list[str]:
    """A short row (mode, engine, note) for a run without figures."""
    if not run.get("available"):  # the lab's refusal without its "--engine X cannot do mode Y:" and advice
        reason = run["reason"].split(": ", 1)[-1].split("; use ")[0]
        return [run["mode"], run["engine"], "not available: " + reason]
    return [run["mode"], run["engine"], "FAILED: " + ("; ".join(run.get("errors", [])) or "incomplete")[:300]]


def _text_table(head: list[str], rows: list[list[str]]) -> str:
    full = [r for r in rows if len(r) == len(head)]
    widths = [max(len(r[i]) for r in [head, *full]) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(head)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return "\n".join(lines)


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [cell.replace("|", "\\|") for cell in row] + [""] * (len(head) - len(row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


CONN_HEAD = ["mode", "engine", "backend saw", "X-Forwarded-For", "backend conns/req close / keep-alive",
             "4 reqs on 1 conn", "keep-alive req/s", "keep-alive p50 / p99 ms", "LB CPU us/req close / keep-alive"]


def _row_connections(run: dict[str, Any], lab: dict[str, Any]) -> list[str]:
    """What tells L4 from L7: who the backend saw, its connections per request, 4 requests on one connection."""
    conns = run.get("backend_connections") or {}
    keep = run.get("http_keepalive") or {}
    one = run.get("one_connection") or {}
    learned = run.get("learned") or {}
    saw = run["request"]["backend_saw"]
    who = ("client" if saw == run["request"]["client_address"] else "LB SNAT" if saw == lab["snat_address"]
           else "proxy" if saw == lab.get("lb_address") else "?")
    lat = keep.get("latency_ms") or {}
    return [run["mode"], run["engine"], f"{saw} ({who})", learned.get("x_forwarded_for") or "-",
            f"{_fmt(conns.get('close', {}).get('per_request'), 3)} / {_fmt(conns.get('keepalive', {}).get('per_request'), 3)}",
            " ".join(str(b) for b in one.get("backends", [])) or "n/a",
            _fmt(keep.get("requests_per_second"), 0),
            f"{_fmt(lat.get('p50'))} / {_fmt(lat.get('p99'))}",
            f"{_fmt(run['lb'].get('cpu_us_per_request'), 0)} / {_fmt(keep.get('cpu_us_per_request'), 0)}"]


def _tables(report: dict[str, Any]) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    perf, packet, conns = [], [], []
    for run in report["runs"]:
        if measured(run):
            perf.append(_row_perf(run))
            packet.append(_row_packet(run, report["lab"]))
            conns.append(_row_connections(run, report["lab"]))
        else:
            perf.append(_note_row(run))
            if run["engine"] == "pktlb":
                packet.append(_note_row(run))
    return perf, packet, conns


def _method_lines(report: dict[str, Any]) -> list[str]:
    s = report["settings"]
    load = f"ab -n {s['requests']}" if s["requests"] else f"wrk {s['duration']:g} s"
    iperf = [f"{r['mode']}/{r['engine']}" for r in report["runs"] if measured(r) and iperf_mbps(r, "upload")]
    return [f"HTTP load: {load}, {s['connections']} connections, GET / with a new TCP connection per request.",
            f"dl: one timed HTTP download of {s['download_bytes'] >> 20} MiB through the VIP (curl).",
            "iperf3: a TCP run each way through the VIP (up: client to backend, always through the LB; down: -R, "
            "the backend sends, through the LB only in nat and fullnat); measured for "
            + (", ".join(iperf) or "no run") + " (n/a: the lab's load balancer has no VIP service on the iperf3 port).",
            f"LB packets and bytes per request: {s['probe_sources']} sequential requests from as many source "
            "addresses; pktlb engine counters (a capture on the LB for the kernel baseline: nftables DNAT in nat and "
            "fullnat, a netdev ingress MAC rewrite in dsr). "
            "in = client-to-backend direction, out = replies that came back through the LB. "
            "pktlb-HOOK: the engine with its kernel fast path; its counters include what the kernel forwarded "
            "(read after a read-back tick that began after the run, once they held still past a tick), while a "
            "capture on the LB sees only the frames "
            "XDP passes up.",
            "LB CPU per request: the engine process's utime+stime over the load run; n/a for the kernel, "
            "whose forwarding runs in softirq context on whatever CPU the packet arrives (and so for what the "
            "fast path forwards: pktlb-HOOK's figure is the engine process's share only).",
            "Backend connections per request: the TCP connections the backends accepted (PassiveOpens in their "
            "namespaces) over a load run, divided by the responses (not wrk's socket errors); for a proxy, the "
            "connections it says it opened (its stats; the backends also accept its HTTP health checks, about one "
            "per backend per second, kept apart in report.json); close = a new client connection per request, "
            f"keep-alive = wrk {s.get('keepalive_seconds', 'n/a')} s over {s['connections']} kept-alive client "
            "connections.",
            "4 reqs on 1 conn: one curl with four URLs (one client connection): the backend of each answer.",
            f"Mode l7: an HTTP proxy owns the VIP (pktlb proxy, or HAProxy configured from the same service "
            f"definition), scheduler {s.get('l7_scheduler', 'rr')} per request; it has no packet counters, so its LB "
            "packets come from a capture on the LB's eth0 (in: frames to port 80, the clients' requests; out: "
            "frames from port 80 reaching the LB, the backends' answers over its pooled connections).",
            f"Machine: {report['host']['cpus']} CPUs, Linux {report['host']['kernel']}; the client, the LB and the "
            "backends share them, so the figures compare modes with each other, not with production load balancers."]


def render_text(report: dict[str, Any]) -> str:
    perf, packet, conns = _tables(report)
    checks = report["invariants"]
    failed = [c for c in checks if not c["holds"]]
    lines = ["Performance (same workload for every mode)", _text_table(PERF_HEAD, perf), "",
             "What each mode does to a packet", _text_table(PACKET_HEAD, packet), "",
             "Connections, keep-alive and what the backend learns (L4 vs L7)", _text_table(CONN_HEAD, conns), "",
             "What each mode needed (beyond the common lab)"]
    for run in report["runs"]:
        if run.get("requirements") and run["engine"] == "pktlb":
            lines.append(f"  {run['mode']}:")
            for part in requirements_text(run["requirements"]).split("; "):
                lines.append(textwrap.fill(part, width=110, initial_indent="    ", subsequent_indent="      ",
                                           break_on_hyphens=False))
    lines += [f"  warning {r['mode']}/{r['engine']}: {w}" for r in report["runs"] for w in r.get("warnings", [])]
    lines += ["", f"Invariants: {len(checks) - len(failed)}/{len(checks)} hold"]
    lines += [f"  BROKEN {c['mode']}/{c['engine']}: {c['check']} ({c['detail']})" for c in failed]
    return "\n".join(lines) + "\n"


def requirements_text(requirements: dict[str, Any]) -> str:
    parts = []
    for role, spec in requirements.items():
        items = [f"route {r}" for r in spec.get("routes", [])] + [f"address {a}" for a in spec.get("addresses", [])]
        items += [f"{k}={v}" for k, v in spec.get("sysctls", {}).items()]
        items += [f"ethtool {dev} {v}" for dev, v in spec.get("offloads", {}).items()]
        items += [str(spec["decap"])] if spec.get("decap") else []
        items += ["the kernel's nftables load balancer (kernel_lb)"] if spec.get("kernel_lb") else []
        items += ["ingress guard dropping VIP traffic for the kernel"] if spec.get("guard") else []
        parts.append(f"{role}: " + ", ".join(items))
    return "; ".join(parts)


def render_markdown(report: dict[str, Any]) -> str:
    out_dir = report["settings"]["out"]
    perf, packet, conns = _tables(report)
    out = ["# pktlb compare: the forwarding modes side by side", "",
           f"Run {report['created']}, {report['seconds']} s; modes {', '.join(report['settings']['modes'])}, "
           f"scheduler {report['settings']['scheduler']}, {report['settings']['backends']} backends.", ""]
    out += [f"- {line}" for line in _method_lines(report)]
    out += ["", "## Performance", "", _md_table(PERF_HEAD, perf), ""]
    out += [f"![{title}]({name})\n" for name, title in CHARTS.items()]
    out += ["## What each mode does to a packet", "", _md_table(PACKET_HEAD, packet), "",
            "Overhead is measured on the LB's capture: the IP length of each forwarded packet less that of the "
            "packet it received. Client PMTU is what the client's kernel learned after a request with a "
            "4000-byte header (n/a: nothing lowered it below the link MTU).", "",
            "## Connections, keep-alive and what the backend learns (L4 vs L7)", "", _md_table(CONN_HEAD, conns), "",
            "An L4 balancer forwards the client's own connection: one backend connection per client connection, "
            "one backend for all its requests, and the backend sees the client (or the SNAT address in fullnat). "
            "A proxy ends the client's connection, picks a backend per request and reuses its own connections: "
            "the backend sees the proxy, and the client only in X-Forwarded-For.", "",
            "## What each mode needed", ""]
    for run in report["runs"]:
        if run["engine"] == "pktlb" and run.get("requirements"):
            out.append(f"- **{run['mode']}** ({run.get('summary', '')}):")
            for role, spec in run["requirements"].items():
                out.append(f"  - {role}: {requirements_text({role: spec}).split(': ', 1)[1]}")
    unavailable = [r for r in report["runs"] if not r.get("available")]
    if unavailable:
        out += ["", "## Not measured", ""] + [f"- {r['mode']} with the {r['engine']} engine: {r['reason']}"
                                              for r in unavailable]
    out += ["", "## Captures (open in Wireshark)", "",
            "One request (GET / from the client's own address) seen at the client, at the LB and at the backend "
            "that served it:", ""]
    for run in report["runs"]:
        cap = run.get("captures")
        if cap:
            files = ", ".join(f"[{place}]({os.path.relpath(cap[place], out_dir)})" for place in ("client", "lb", "backend"))
            out.append(f"- {run['mode']}/{run['engine']}: {files} (backend {cap['backend_node']}; frames "
                       + ", ".join(f"{k} {v}" for k, v in cap["frames"].items()) + ")")
    checks = report["invariants"]
    out += ["", "## Invariants", "", f"{sum(c['holds'] for c in checks)}/{len(checks)} hold.", "",
            _md_table(["mode", "engine", "check", "holds", "detail"],
                      [[c["mode"], c["engine"], c["check"], "yes" if c["holds"] else "**NO**", c["detail"]]
                       for c in checks])]
    return "\n".join(out) + "\n"
