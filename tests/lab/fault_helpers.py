"""Helpers for the flood, fault and soak lab tests: traffic generators and engine observations.

Three generators run *inside* a lab namespace as ``python -m tests.lab.fault_helpers ...`` (started
by ``start_in_node``), each bounded in packets or requests and in seconds:

* ``flood``: crafted IPv4 packets (TCP SYN or UDP) sent through a raw socket at a fixed rate.
  Sources and source ports are random but drawn from a range inside 198.18.0.0/15 (hping3's
  ``--rand-source`` would use the whole IPv4 space), so the lab's addressing rules hold.
* ``download``: one HTTP download read at a steady rate through a small receive window, so it is
  really in flight for its whole length; prints its size, SHA-256 and error.
* ``requests``: HTTP GETs to the VIP, one new connection each, rotating over source addresses;
  one JSON line per request (start, end, ok, backend or error) on stdout.

The rest runs in the test process: the engine's PID, RSS and descriptors, its config rewritten
(health timers, flow-table limits, backend set), backend links cut at the switch, and bounded
waits on the engine's view of backend health.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from pktlb.core.checksum import checksum

REPO = Path(__file__).resolve().parents[2]
FLOOD_SOURCES = "198.18.64.0/18"  # spoofed flood sources: inside the lab's /15, used by no lab node
ENGINE_SERVICE = "lb/engine"


# ---- generators (run inside a namespace) --------------------------------------------------------

def craft_packets(proto: str, dst: str, dport: int, sources: str, count: int, seed: int) -> list[bytes]:
    """``count`` IPv4 packets (TCP SYN or 18-byte UDP) from random sources/ports in ``sources``."""
    rng = random.Random(seed)
    net = ipaddress.ip_network(sources)
    base, size = int(net.network_address), net.num_addresses
    dst_raw = socket.inet_aton(dst)
    packets = []
    for _ in range(count):
        src_raw = struct.pack("!I", base + rng.randrange(1, size - 1))
        sport = rng.randrange(1024, 65536)
        if proto == "syn":
            l4 = struct.pack("!HHIIBBHHH", sport, dport, rng.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
            number = 6
        else:
            l4 = struct.pack("!HHHH", sport, dport, 18, 0) + b"pktlb-flood"[:10]
            number = 17
        pseudo = src_raw + dst_raw + struct.pack("!BBH", 0, number, len(l4))
        check = checksum(pseudo + l4)
        offset = 16 if proto == "syn" else 6
        l4 = l4[:offset] + struct.pack("!H", check) + l4[offset + 2:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), rng.getrandbits(16), 0, 64, number, 0,
                         src_raw, dst_raw)
        packets.append(ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:] + l4)
    return packets


def run_flood(args: argparse.Namespace) -> int:
    packets = craft_packets(args.proto, args.dst, args.dport, args.sources, args.count, args.seed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL implied
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    dest = (args.dst, 0)
    sent = errors = 0
    start = time.monotonic()
    deadline = start + args.max_seconds
    burst = max(1, args.rate // 200)  # paced in bursts every 5 ms
    for i in range(0, len(packets), burst):
        now = time.monotonic()
        if now > deadline:
            break
        due = start + i / args.rate
        if due > now:
            time.sleep(due - now)
        for packet in packets[i:i + burst]:
            try:
                sock.sendto(packet, dest)
                sent += 1
            except OSError:
                errors += 1  # ENOBUFS under load: the packet is lost, as on a real wire
    elapsed = time.monotonic() - start
    print(json.dumps({"sent": sent, "errors": errors, "seconds": round(elapsed, 3),
                      "pps": round(sent / elapsed) if elapsed else 0}))
    return 0


def run_requests(args: argparse.Namespace) -> int:
    import http.client

    first, last = (int(ipaddress.ip_address(a)) for a in args.sources.split("-"))
    sources = [str(ipaddress.ip_address(n)) for n in range(first, last + 1)]
    stop = time.monotonic() + args.duration
    stopping = False

    def on_term(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    i = 0
    while time.monotonic() < stop and not stopping and i < args.max_requests:
        src = sources[i % len(sources)]
        i += 1
        t0 = time.monotonic()
        row: dict[str, Any] = {"i": i, "src": src, "start": t0}
        conn = http.client.HTTPConnection(args.vip, args.port, timeout=args.timeout, source_address=(src, 0))
        try:
            conn.request("GET", "/")
            answer = conn.getresponse()
            body = answer.read()
            row["ok"] = answer.status == 200
            row["backend"] = json.loads(body).get("backend") if row["ok"] else None
            row["sport"] = conn.sock.getsockname()[1] if conn.sock else None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            row["ok"], row["error"] = False, f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        row["end"] = time.monotonic()
        print(json.dumps(row), flush=True)
        pause = args.interval - (row["end"] - t0)
        if pause > 0:
            time.sleep(pause)
    return 0


def run_download(args: argparse.Namespace) -> int:
    """GET /bytes?n=N read at a steady ``rate`` through a small receive buffer, so the transfer is
    really spread over N / rate seconds (curl's --limit-rate reads in bursts and lets the kernel buffer
    megabytes ahead).  Prints {bytes, sha256, seconds, error, local}."""
    import hashlib

    digest, body, error = hashlib.sha256(), 0, ""
    start = time.monotonic()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # before connect: caps the window
    sock.settimeout(args.stall)
    local = ""
    try:
        sock.bind((args.source, args.sport))
        sock.connect((args.vip, 80))
        local = "{}:{}".format(*sock.getsockname())
        sock.sendall(f"GET /bytes?n={args.n} HTTP/1.1\r\nHost: {args.vip}\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed before the headers ended")
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        digest.update(rest)
        body = len(rest)
        step = max(1024, int(args.rate / 20))  # one read every 50 ms
        while body < args.n:
            if time.monotonic() - start > args.timeout:
                raise TimeoutError(f"not done after {args.timeout} s")
            chunk = sock.recv(min(step, args.n - body))
            if not chunk:
                raise ConnectionError(f"closed after {body} of {args.n} bytes")
            digest.update(chunk)
            body += len(chunk)
            due = start + body / args.rate
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()
    print(json.dumps({"bytes": body, "sha256": digest.hexdigest(), "seconds": round(time.monotonic() - start, 3),
                      "error": error, "local": local}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.fault_helpers")
    sub = parser.add_subparsers(dest="what", required=True)
    flood = sub.add_parser("flood", help="send a bounded flood of crafted packets")
    flood.add_argument("--proto", choices=["syn", "udp"], required=True)
    flood.add_argument("--dst", required=True)
    flood.add_argument("--dport", type=int, required=True)
    flood.add_argument("--sources", default=FLOOD_SOURCES)
    flood.add_argument("--count", type=int, required=True)
    flood.add_argument("--rate", type=int, required=True, help="packets per second")
    flood.add_argument("--max-seconds", type=float, default=30.0)
    flood.add_argument("--seed", type=int, default=1)
    reqs = sub.add_parser("requests", help="HTTP GETs to the VIP, one connection each, for a while")
    reqs.add_argument("--vip", required=True)
    reqs.add_argument("--port", type=int, default=80)
    reqs.add_argument("--sources", default="198.18.1.100-198.18.1.163")
    reqs.add_argument("--duration", type=float, required=True)
    reqs.add_argument("--max-requests", type=int, default=100_000)
    reqs.add_argument("--interval", type=float, default=0.05, help="seconds from one request's start to the next")
    reqs.add_argument("--timeout", type=float, default=3.0)
    down = sub.add_parser("download", help="a paced download of /bytes?n=N with a small receive window")
    down.add_argument("--vip", required=True)
    down.add_argument("--n", type=int, required=True)
    down.add_argument("--rate", type=int, required=True, help="bytes per second")
    down.add_argument("--source", default="0.0.0.0")
    down.add_argument("--sport", type=int, default=0)
    down.add_argument("--stall", type=float, default=12.0, help="give up after this many seconds without data")
    down.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    return {"flood": run_flood, "requests": run_requests, "download": run_download}[args.what](args)


# ---- in the test process --------------------------------------------------------------------------

def start_in_node(lab: Any, node: str, *argv: str) -> subprocess.Popen[str]:
    """Start a generator of this module inside a lab node; collect it with ``finish``.  Its stdout goes
    to an unlinked temporary file, not a pipe: a pipe nobody reads fills up and stalls the generator."""
    out = tempfile.TemporaryFile("w+")
    proc = lab.popen(node, [sys.executable, "-m", "tests.lab.fault_helpers", *argv], cwd=REPO, stdout=out,
                     stderr=subprocess.PIPE, text=True)
    proc.output_file = out  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen[str], timeout: float) -> str:
    """Wait (bounded) for a generator; terminate it if it overruns.  Its stdout."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        _, err = proc.communicate(timeout=5)
    if proc.returncode not in (0, -signal.SIGTERM):
        raise AssertionError(f"generator exited {proc.returncode}: {err.strip()[-500:]}")
    out = proc.output_file  # type: ignore[attr-defined]
    out.seek(0)
    text = out.read()
    out.close()
    return text


def stop(proc: subprocess.Popen[str] | None) -> None:
    """Cleanup for a finally: block (the process is ours, killed by its own PID)."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=5)
    out = getattr(proc, "output_file", None)
    if out is not None and not out.closed:
        out.close()


def request_rows(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def engine_pid(lab: Any) -> int:
    record = lab.services()[ENGINE_SERVICE]
    assert record["state"] == "running" and record["pid"], record
    return int(record["pid"])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def iface_rx_packets(lab: Any, node: str, ifname: str = "eth0") -> int:
    done = lab.run(node, ["cat", f"/sys/class/net/{ifname}/statistics/rx_packets"], check=True)
    return int(done.stdout)


# ---- the engine's config file ---------------------------------------------------------------------

def engine_config(lab: Any) -> dict[str, Any]:
    return tomllib.loads(lab.paths.config.read_text())


def write_engine_config(lab: Any, data: dict[str, Any]) -> None:
    """Write the config (validated by the engine's own parser first) where the engine reads it."""
    from pktlb.core.config import parse_config

    text = tomli_w.dumps(data)
    parse_config(text)
    path = lab.paths.config
    tmp = path.with_name(".pktlb.toml.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def web_service(data: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in data["service"] if s["name"] == "web")


def fast_health(data: dict[str, Any], interval: float = 0.5, timeout: float = 0.5, rise: int = 2,
                fall: int = 2) -> float:
    """Faster ICMP checks on the web service; returns the detection bound interval * fall + timeout."""
    web_service(data)["health"] = {"checks": ["icmp"], "interval": interval, "timeout": timeout, "rise": rise,
                                   "fall": fall}
    return interval * fall + timeout


def reload_by_signal(lab: Any, ask: Any, timeout: float = 5.0) -> dict[str, Any]:
    """SIGHUP the engine and wait (bounded) until its snapshot generation says it reloaded."""
    before = ask(lab, {"cmd": "stats"})["generation"]
    os.kill(engine_pid(lab), signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = ask(lab, {"cmd": "stats"})
        reloads = [c for c in stats["changes"] if c["generation"] > before and "config reloaded" in c["why"]]
        if reloads:
            return reloads[-1]
        time.sleep(0.05)
    raise AssertionError("the engine did not reload after SIGHUP")


# ---- backend links and health ---------------------------------------------------------------------

def set_backend_link(lab: Any, backend: str, up: bool) -> float:
    """Cut (or restore) a backend's cable at the switch: its bridge port goes down, the backend's eth0
    loses carrier but keeps its addresses and routes.  Returns the monotonic time of the change."""
    lab.run("sw", ["ip", "link", "set", f"s-{backend}", "up" if up else "down"], check=True)
    return time.monotonic()


def backend_state(lab: Any, ask: Any, backend: str, service: str = "web") -> str:
    stats = ask(lab, {"cmd": "stats"})
    svc = next(s for s in stats["services"] if s["name"] == service)
    return next(be["state"] for be in svc["backends"] if be["name"] == backend)


def await_backend_state(lab: Any, ask: Any, backend: str, state: str, timeout: float,
                        every: float = 0.02) -> float:
    """Poll (every ``every`` s, bounded) until the engine says ``backend`` is ``state``; the monotonic time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if backend_state(lab, ask, backend) == state:
            return time.monotonic()
        time.sleep(every)
    raise AssertionError(f"{backend} not {state} after {timeout} s")


def await_backend_decision(lab: Any, ask: Any, backend: str, state: str, timeout: float,
                           every: float = 0.02, service: str = "web") -> tuple[float, float]:
    """Poll (every ``every`` s, bounded) until the engine says ``backend`` is ``state`` (its health made it
    so): (the test's time.monotonic() when it saw that, the engine's time.monotonic() when its health
    check decided it, ``health.since_monotonic``).  Both are CLOCK_MONOTONIC, one clock for every process
    and namespace, so a time from a cut to the decision leaves out the polling and the control socket."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = ask(lab, {"cmd": "stats"})
        row = next(be for be in next(s for s in stats["services"] if s["name"] == service)["backends"]
                   if be["name"] == backend)
        if row["state"] == state:
            seen, health = time.monotonic(), row["health"] or {}
            assert health.get("state") == state and health.get("since_monotonic") is not None, \
                f"{backend} is {state}, but not by its health checks: {health}"
            return seen, health["since_monotonic"]
        time.sleep(every)
    raise AssertionError(f"{backend} not {state} after {timeout} s")


if __name__ == "__main__":
    sys.exit(main())
