"""What TLS costs the balancer: CPU per request and latency, when it terminates TLS and when it never sees it.

The same client workload (``client.py tls``), in the client namespace, against:

- ``pktlb proxy`` terminating TLS on VIP:443 (backends in plain HTTP), and HAProxy doing the same from
  the same service definition; each with a new full handshake per request, a resumed session per
  request (new TCP connection, abbreviated handshake), and one kept-alive connection per worker
  (one handshake for many requests); plain HTTP on VIP:80 as the baseline; and once re-encrypted
  toward backends that terminate TLS themselves (``backend = "tls"``);
- the packet engine in DSR mode forwarding VIP:443 to backends that terminate TLS themselves with the
  VIP's certificate: the LB only ever carries ciphertext (and, in DSR, never sees the answers).

What the LB exposes: during 20 more requests the LB's interface is captured (tcpdump) and the frames
carrying a request line in clear are counted: with TLS ended at the proxy and plain HTTP behind it,
every request crosses the LB's wire readable; re-encrypted, none; through L4, none (the proxy process
itself holds the key and every request in clear either way at L7).

CPU per request is the LB process's utime + stime over the run (/proc/PID/stat) divided by the
requests answered: the proxy's or HAProxy's, or the packet engine's.  The client is Python, so the
absolute latencies include its own handshake work; compare the rows with each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pktlb.adapters.pcap import read_pcap
from pktlb.reports.l7features.labs import TLS_PORT, Lab, add_l4_tls_service, l7_service, proxy_data, tls_table
from pktlb.reports.l7features.servers import LabProcess, Proxy, ReportError, client_json, cpu_seconds

PATTERNS = ("plain", "plain-keepalive", "new", "resumed", "keepalive")
BACKEND_TLS_PORT = 8443  # backends' own HTTPS in the L7 lab (the re-encryption row)
REENCRYPT_PORT = 4443  # the proxy's service that encrypts again toward them


def measure(lab: Lab, pid: int, pattern: str, requests: int, concurrency: int, port: int,
            stats: Callable[[], dict[str, Any] | None] | None = None, service: str = "") -> dict[str, Any]:
    """One workload against VIP:``port``, with the CPU the process ``pid`` spent meanwhile."""
    args = ["tls", "--host", lab.vip, "--port", str(port), "--pattern", pattern, "--requests", str(requests),
            "--concurrency", str(concurrency), "--cafile", str(lab.pki.ca)]
    before_stats = stats() if stats else None
    before = cpu_seconds(pid)
    result = client_json(lab.ns("client"), args)
    used = cpu_seconds(pid) - before
    result["lb_cpu_s"] = round(used, 3)
    result["lb_cpu_us_per_request"] = round(used / result["requests"] * 1e6, 1) if result["requests"] else None
    if stats and before_stats:
        after = stats() or {}
        result["handshakes"] = _handshakes(after, service)
        for key, value in _handshakes(before_stats, service).items():
            result["handshakes"][key] -= value
    return result


def plaintext_on_the_wire(lab: Lab, port: int, requests: int, label: str) -> dict[str, Any]:
    """``requests`` HTTPS requests to VIP:``port`` while the LB's interface is captured: how many frames
    on the LB's wire carry a request in clear (its request line), i.e. what anyone on that wire can read."""
    pcap = lab.workdir / f"wire-{label}.pcap"
    argv = ["tcpdump", "-i", "eth0", "--immediate-mode", "-U", "-s", "0", "-c", "20000", "-w", str(pcap), "tcp"]
    capture = LabProcess(lab.ns("lb"), argv, lab.workdir / f"wire-{label}.log")
    try:
        deadline = time.monotonic() + 10
        while "listening on" not in capture.tail():
            if not capture.alive() or time.monotonic() > deadline:
                raise ReportError(f"tcpdump did not start: {capture.tail()}")
            time.sleep(0.05)  # tcpdump says on stderr when it listens
        result = client_json(lab.ns("client"), ["tls", "--host", lab.vip, "--port", str(port), "--pattern", "new",
                                                "--requests", str(requests), "--concurrency", "1",
                                                "--cafile", str(lab.pki.ca)])
    finally:
        capture.stop()
    frames = readable = 0
    for _, frame in read_pcap(str(pcap)):
        frames += 1
        readable += b"GET / HTTP/1.1" in frame
    return {"requests": result["requests"], "frames": frames, "frames_with_a_readable_request": readable}


def _handshakes(stats: dict[str, Any], service: str) -> dict[str, int]:
    row = next((s for s in stats.get("services", []) if s.get("name") == service), None)
    counters = (row or {}).get("counters", {})
    return {"full": counters.get("tls_full", 0), "resumed": counters.get("tls_resumed", 0)}


def l7_tls_rows(lab: Lab, engine: str, requests: int, concurrency: int) -> list[dict[str, Any]]:
    """Every pattern through one proxy (``engine``: pktlb or haproxy) terminating TLS."""
    data = proxy_data(
        l7_service(lab, "web", lab.port),
        l7_service(lab, "web-tls", TLS_PORT, l7={"tls": tls_table(lab)}),
        l7_service(lab, "web-reencrypt", REENCRYPT_PORT, backend_port=BACKEND_TLS_PORT,
                   health={"checks": ["tcp"], "interval": 1.0, "timeout": 1.0},
                   l7={"tls": tls_table(lab, backend="tls", backend_ca=str(lab.pki.ca))}))
    rows = []
    with Proxy(engine, lab.ns("lb"), lab.workdir, f"tls-{engine}", data) as proxy:
        stats = proxy.stats if engine == "pktlb" else None
        for pattern in PATTERNS:
            port, service = (lab.port, "web") if pattern.startswith("plain") else (TLS_PORT, "web-tls")
            row = measure(lab, proxy.pid, pattern, requests, concurrency, port, stats, service)
            rows.append({"layer": "L7", "engine": engine, "where_tls_ends": "LB" if port == TLS_PORT else "nowhere",
                         **row})
        row = measure(lab, proxy.pid, "new", requests, concurrency, REENCRYPT_PORT, stats, "web-reencrypt")
        rows.append({"layer": "L7", "engine": engine, "where_tls_ends": "LB, then again at the backends",
                     **row, "pattern": "new, re-encrypted"})
        if engine == "pktlb":
            new = next(r for r in rows if r["pattern"] == "new")
            new["wire"] = plaintext_on_the_wire(lab, TLS_PORT, 20, "l7-plain-backends")
            rows[-1]["wire"] = plaintext_on_the_wire(lab, REENCRYPT_PORT, 20, "l7-reencrypted")
    return rows


def l4_tls_rows(lab: Lab, requests: int, concurrency: int) -> list[dict[str, Any]]:
    """The same patterns through the packet engine (DSR) to backends that hold the certificate themselves."""
    lab.https_backends(TLS_PORT, lab.pki.vip_cert, lab.pki.vip_key)
    add_l4_tls_service(lab)
    pid = lab.service_pid("lb/engine")
    rows = []
    for pattern in PATTERNS:
        port = lab.port if pattern.startswith("plain") else TLS_PORT
        row = measure(lab, pid, pattern, requests, concurrency, port)
        rows.append({"layer": "L4 dsr", "engine": "pktlb", "where_tls_ends": "backends" if port == TLS_PORT
                     else "nowhere", **row})
    next(r for r in rows if r["pattern"] == "new")["wire"] = plaintext_on_the_wire(lab, TLS_PORT, 20, "l4")
    return rows


def tls_facts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The numbers the teaching text quotes: how much more CPU a full handshake costs than a kept-alive request."""
    def cpu(layer: str, engine: str, pattern: str) -> float | None:
        row = next((r for r in rows if r["layer"] == layer and r["engine"] == engine and r["pattern"] == pattern), None)
        return row["lb_cpu_us_per_request"] if row else None

    facts: dict[str, Any] = {}
    for layer, engine in (("L7", "pktlb"), ("L7", "haproxy"), ("L4 dsr", "pktlb")):
        new, resumed, kept, plain = (cpu(layer, engine, p) for p in ("new", "resumed", "keepalive", "plain"))
        key = f"{layer} {engine}"
        facts[key] = {"new_over_plain": _ratio(new, plain), "resumed_over_plain": _ratio(resumed, plain),
                      "new_over_keepalive": _ratio(new, kept), "resumed_over_new": _ratio(resumed, new)}
    return facts


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None
