"""Bounded workloads run inside lab namespaces, and the parsers of what the tools print.

* HTTP load: ``wrk`` for a fixed duration, or ``ab`` (apache2-utils) for a fixed request count
  (wrk cannot stop after N requests).  Both open a new TCP connection for every request, so each
  request makes the load balancer schedule a flow and carry a whole handshake and teardown.
* Throughput: a timed HTTP download with curl (every engine), and ``iperf3`` both ways where the
  lab's load balancer has a VIP service on the iperf3 port.
* Probes: sequential curl requests from chosen source addresses, each answered with the JSON of
  the backend that served it (``pktlb.lab.httpd``).
* Captures: tcpdump in a namespace, started and stopped around a workload.

Every command runs with ``ip netns exec`` (``pktlb.lab.netns``) and a timeout; nothing here runs in the root namespace's
network except the ``ip`` process that enters the lab namespace.
"""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pktlb.lab.netns import Namespace

WRK_THREADS = 2
CONNECTIONS = 16
DOWNLOAD_BYTES = 32 << 20
DOWNLOAD_MAX_SECONDS = 30.0
PROBE_MAX_SECONDS = 3.0  # per curl request of a probe
CAPTURE_START_TIMEOUT = 5.0


class WorkloadError(RuntimeError):
    """A workload tool failed or printed something we cannot read; the message says which and why."""


# ---- HTTP load ----------------------------------------------------------------------------------

@dataclass
class HttpResult:
    tool: str
    command: str
    requests: int
    seconds: float
    requests_per_second: float
    latency_ms: dict[str, float]  # "p50", "p90", "p99"
    errors: int  # connect/write/timeout errors and non-2xx answers (not the closes after each answer)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _number_with_unit(text: str, units: dict[str, float]) -> float:
    match = re.fullmatch(r"([\d.]+)([a-z]+)", text.strip())
    if not match or match.group(2) not in units:
        raise WorkloadError(f"cannot read the quantity {text!r}")
    return float(match.group(1)) * units[match.group(2)]


def parse_wrk(text: str, command: str = "wrk") -> HttpResult:
    """Read wrk's --latency output (latency distribution 50/75/90/99, totals, socket errors)."""
    percentiles = {f"p{m.group(1)}": _number_with_unit(m.group(2), _UNIT_MS)
                   for m in re.finditer(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", text, re.M)}
    totals = re.search(r"^\s*(\d+) requests in (\S+),", text, re.M)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not totals or not rate or not {"p50", "p90", "p99"} <= percentiles.keys():
        raise WorkloadError(f"cannot read wrk's output:\n{text.strip()[-600:]}")
    errors = 0
    sockets = re.search(r"Socket errors: connect (\d+), read \d+, write (\d+), timeout (\d+)", text)
    if sockets:  # read errors are the server closing after each answer (Connection: close): expected
        errors += sum(int(g) for g in sockets.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors += int(non2xx.group(1)) if non2xx else 0
    return HttpResult("wrk", command, int(totals.group(1)), _number_with_unit(totals.group(2), _UNIT_S),
                      float(rate.group(1)), {k: percentiles[k] for k in ("p50", "p90", "p99")}, errors)


def run_wrk(namespace: str, url: str, duration: float, *, keepalive: bool = False) -> HttpResult:
    """wrk for duration seconds: a new connection per request, or (keepalive) CONNECTIONS kept-alive ones."""
    seconds = max(1, round(duration))
    argv = ["wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    argv += [url] if keepalive else ["-H", "Connection: close", url]
    done = Namespace(namespace).run(argv, timeout=seconds + 30, check=False)
    if done.returncode != 0:
        raise WorkloadError(f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout, " ".join(argv))


def parse_ab(text: str, percentiles_csv: str, command: str = "ab") -> HttpResult:
    """Read ab's summary and its -e CSV (the time within which each percentage was served, in ms)."""
    def field_of(label: str) -> str:
        match = re.search(rf"^{re.escape(label)}:\s+([\d.]+)", text, re.M)
        if not match:
            raise WorkloadError(f"cannot find {label!r} in ab's output:\n{text.strip()[-600:]}")
        return match.group(1)

    table = {}
    for line in percentiles_csv.splitlines()[1:]:
        pct, _, ms = line.partition(",")
        if pct.strip().isdigit():
            table[int(pct)] = float(ms)
    if not {50, 90, 99} <= table.keys():
        raise WorkloadError("ab wrote no percentile table (-e)")
    errors = 0
    failed = re.search(r"^Failed requests:\s+(\d+)(?:\s*\n\s*\(Connect: (\d+), Receive: (\d+), Length: (\d+), "
                       r"Exceptions: (\d+)\))?", text, re.M)
    if failed:  # Length failures only mean the JSON answer's length varies (backend name, port): not errors
        errors += int(failed.group(1)) - int(failed.group(4) or 0)
    non2xx = re.search(r"^Non-2xx responses:\s+(\d+)", text, re.M)
    errors += int(non2xx.group(1)) if non2xx else 0
    return HttpResult("ab", command, int(field_of("Complete requests")), float(field_of("Time taken for tests")),
                      float(field_of("Requests per second")),
                      {"p50": table[50], "p90": table[90], "p99": table[99]}, errors)


def run_ab(namespace: str, url: str, requests: int, workdir: Path) -> HttpResult:
    csv_path = workdir / "ab-percentiles.csv"
    argv = ["ab", "-q", "-n", str(requests), "-c", str(min(CONNECTIONS, requests)), "-s", "10",
            "-e", str(csv_path), url]
    done = Namespace(namespace).run(argv, timeout=60 + requests / 50, check=False)
    if done.returncode != 0:
        raise WorkloadError(f"ab exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    try:
        return parse_ab(done.stdout, csv_path.read_text(), " ".join(argv))
    finally:
        csv_path.unlink(missing_ok=True)


# ---- throughput ---------------------------------------------------------------------------------

@dataclass
class ThroughputResult:
    tool: str  # "iperf3" or "http-download"
    command: str
    bytes: int
    seconds: float
    megabytes_per_second: float  # 10^6 bytes per second
    complete: bool
    retried_after: list[str] = field(default_factory=list)  # errors of earlier attempts (iperf3)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_download(namespace: str, vip: str, port: int, nbytes: int = DOWNLOAD_BYTES) -> ThroughputResult:
    """One HTTP download of nbytes through the VIP, timed by curl (bounded by DOWNLOAD_MAX_SECONDS)."""
    argv = ["curl", "-sS", "-o", "/dev/null", "--max-time", str(DOWNLOAD_MAX_SECONDS),
            "-w", "%{http_code} %{size_download} %{time_total}", f"http://{vip}:{port}/bytes?n={nbytes}"]
    done = Namespace(namespace).run(argv, timeout=DOWNLOAD_MAX_SECONDS + 10, check=False)
    try:
        code, size, seconds = done.stdout.split()
        size_i, seconds_f = int(size), float(seconds)
    except ValueError:
        raise WorkloadError(f"curl download failed ({done.returncode}): {done.stderr.strip()}") from None
    if code != "200" or size_i == 0:
        raise WorkloadError(f"curl download got HTTP {code} and {size_i} bytes: {done.stderr.strip()}")
    return ThroughputResult("http-download", " ".join(argv), size_i, seconds_f,
                            size_i / seconds_f / 1e6 if seconds_f else 0.0, size_i == nbytes)


def parse_iperf3(text: str, command: str = "iperf3") -> ThroughputResult:
    try:
        data = json.loads(text)
    except ValueError:
        raise WorkloadError(f"iperf3 printed no JSON: {text.strip()[-300:]}") from None
    if data.get("error"):
        raise WorkloadError(f"iperf3: {data['error']}")
    try:
        received = data["end"]["sum_received"]
    except KeyError:
        raise WorkloadError("iperf3's JSON has no end.sum_received") from None
    return ThroughputResult("iperf3", command, int(received["bytes"]), float(received["seconds"]),
                            float(received["bits_per_second"]) / 8e6, True)


def run_iperf3(namespace: str, vip: str, port: int, duration: float, *, reverse: bool = False,
               attempts: int = 4) -> ThroughputResult:
    """iperf3 from the client to the VIP; reverse (-R): the backend sends, the client receives.

    An iperf3 server runs one test at a time and can still be closing the previous one ("busy"),
    and a new connection can be refused right after a load run: such failures are retried after a
    second, at most `attempts` times, and the result lists them.
    """
    seconds = max(1, round(duration))
    argv = ["iperf3", "-c", vip, "-p", str(port), "-t", str(seconds), "-J", "--connect-timeout", "3000"]
    argv += ["-R"] if reverse else []
    failures: list[str] = []
    for attempt in range(1, attempts + 1):
        done = Namespace(namespace).run(argv, timeout=seconds + 15, check=False)
        try:
            result = parse_iperf3(done.stdout, " ".join(argv))
            result.retried_after = failures
            return result
        except WorkloadError as exc:
            failures.append(str(exc))
            if not any(word in str(exc) for word in ("busy", "unable to connect")) or attempt == attempts:
                raise WorkloadError("; then ".join(failures)) from None
        time.sleep(1.0)  # nothing to await: the server tells no one when it is free again
    raise AssertionError("unreachable")


# ---- probes -------------------------------------------------------------------------------------

_PROBE_LOOP = ('url=$1; shift; for src in "$@"; do '
               'curl -sS --max-time {t} --interface "$src" "$url" || echo "{{\\"error\\": \\"$src\\"}}"; done')


def probe_requests(namespace: str, url: str, sources: list[str]) -> list[dict[str, Any]]:
    """One request (a new connection) from each source address, in order; the answers' JSON."""
    script = _PROBE_LOOP.format(t=PROBE_MAX_SECONDS)
    done = Namespace(namespace).run(["sh", "-c", script, "probe", url, *sources],
                  timeout=len(sources) * (PROBE_MAX_SECONDS + 0.5) + 10, check=False)
    answers = []
    for line in done.stdout.splitlines():
        if line.strip():
            try:
                answers.append(json.loads(line))
            except ValueError:
                answers.append({"error": line.strip()[:200]})
    return answers


def curl_json(namespace: str, url: str, *, headers: list[str] | None = None) -> dict[str, Any]:
    argv = ["curl", "-sS", "--max-time", str(PROBE_MAX_SECONDS)]
    for header in headers or []:
        argv += ["-H", header]
    done = Namespace(namespace).run([*argv, url], timeout=PROBE_MAX_SECONDS + 5, check=False)
    if done.returncode != 0:
        raise WorkloadError(f"curl {url} failed ({done.returncode}): {done.stderr.strip()}")
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise WorkloadError(f"curl {url}: not JSON: {done.stdout.strip()[:200]}") from None


def await_vip(namespace: str, url: str, *, timeout: float, successes: int = 3) -> float:
    """Poll the VIP until `successes` requests in a row are answered; the seconds it took."""
    started = time.monotonic()
    row = 0
    last_error = "no answer"
    while time.monotonic() - started < timeout:
        done = Namespace(namespace).run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1", url],
                      timeout=5, check=False)
        if done.stdout.strip() == "200":
            row += 1
            if row >= successes:
                return time.monotonic() - started
        else:
            row, last_error = 0, done.stderr.strip() or f"HTTP {done.stdout.strip()}"
            time.sleep(0.1)  # a lab still settling: nothing to await but the next try
    raise WorkloadError(f"the VIP did not answer within {timeout:.0f} s ({last_error})")


def path_mtu(namespace: str, destination: str) -> int | None:
    """The path MTU the namespace's kernel learned for destination (route cache), None if none."""
    done = Namespace(namespace).run(["ip", "-o", "route", "get", destination], timeout=5, check=False)
    match = re.search(r"\bmtu (\d+)", done.stdout)
    return int(match.group(1)) if match else None


# ---- captures -----------------------------------------------------------------------------------

@dataclass
class Capture:
    """tcpdump writing a pcap in a namespace; start() returns once it listens, stop() ends it."""

    namespace: str
    ifname: str
    path: Path
    bpf: str
    max_packets: int = 2000
    inbound_only: bool = False
    proc: subprocess.Popen[str] | None = field(default=None, repr=False)
    summary: str = ""

    def start(self) -> Capture:
        argv = ["tcpdump", "-p", "-n", "-U", "--immediate-mode", "-Z", "root",
                "-i", self.ifname, "-c", str(self.max_packets), "-w", str(self.path)]
        argv += (["-Q", "in"] if self.inbound_only else []) + self.bpf.split()
        self.proc = Namespace(self.namespace).popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stderr = self.proc.stderr
        if stderr is None:  # not with stderr=PIPE; said for the type checker
            raise WorkloadError(f"tcpdump in {self.namespace}: no stderr pipe")
        deadline = time.monotonic() + CAPTURE_START_TIMEOUT
        seen = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([stderr], [], [], deadline - time.monotonic())
            line = stderr.readline() if ready else ""
            seen += line
            if "listening on" in line:
                return self
            if ready and not line:  # tcpdump exited
                break
        self.stop()
        raise WorkloadError(f"tcpdump in {self.namespace} did not start: {seen.strip() or 'no output'}")

    def stop(self) -> None:
        """SIGINT (tcpdump flushes and exits), SIGKILL if it has not exited 5 s later."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=5)
        self.summary = " ".join(ln.strip() for ln in (err or "").splitlines() if "packets" in ln)
        self.proc = None
