"""A bounded HTTP load generator for the lab: requests at a set rate, in steps, latency per second.

Run in a client namespace as ``python -m pktlb.lab.loadgen --url http://198.19.0.100/ --load
20:30,60:40,10:30 --out load.jsonl``: 20 requests per second for 30 s, then 60/s for 40 s, then 10/s
for 30 s.  It is *open loop*: requests start on schedule whether or not earlier ones have been
answered (as independent users do), so an overloaded service shows up as growing latency, not as
a generator that politely slows down.  Each request is a new TCP connection (``Connection: close``),
so the load balancer sees one new flow per request.

Bounds: the phases end the run (SIGTERM or SIGINT end it early, the totals still written); at most ``--max-in-flight`` requests are open at once (an arrival
beyond that is not sent and counted as ``shed``); each request gives up after ``--timeout`` seconds
(counted as ``failed``).  Every second one JSON line goes to ``--out``: ``t`` (seconds since the
start), ``rate`` (the phase's requests per second), ``sent``, ``ok``, ``failed``, ``shed``,
``in_flight`` and ``p50_ms``/``p99_ms``/``max_ms`` over the requests answered in that second (null
when none were).  The last line is ``{"type": "end", ...}`` with the totals and the first errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlsplit

MAX_RATE = 5000.0  # requests per second
MAX_SECONDS = 3600.0  # per phase


@dataclass(frozen=True)
class Phase:
    rate: float  # requests per second
    seconds: float


def parse_load(text: str) -> list[Phase]:
    """``RATE:SECONDS[,RATE:SECONDS...]``; ValueError naming the part that is wrong."""
    phases = []
    for part in text.split(","):
        rate, sep, seconds = part.strip().partition(":")
        try:
            phase = Phase(float(rate), float(seconds))
        except ValueError:
            phase = None
        if not sep or phase is None or not (0 <= phase.rate <= MAX_RATE and 0 < phase.seconds <= MAX_SECONDS):
            raise ValueError(f"load {part.strip()!r}: expected RATE:SECONDS with a rate from 0 to {MAX_RATE:g} "
                             f"requests/s and 0 < seconds <= {MAX_SECONDS:g} (e.g. 20:30,60:40,10:30)")
        phases.append(phase)
    return phases


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (0 < q <= 100) of sorted values; None for none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Window:
    """The counts of one second."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    shed: int = 0
    latencies: list[float] = field(default_factory=list)

    def record(self, t: float, rate: float, in_flight: int) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1000, 2)

        return {"t": round(t, 3), "rate": rate, "sent": self.sent, "ok": self.ok, "failed": self.failed,
                "shed": self.shed, "in_flight": in_flight, "p50_ms": ms(percentile(lat, 50)),
                "p99_ms": ms(percentile(lat, 99)), "max_ms": ms(lat[-1] if lat else None)}


class LoadGenerator:
    def __init__(self, url: str, phases: Sequence[Phase], out: IO[str], *, max_in_flight: int = 256,
                 timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"url {url!r}: expected http://HOST[:PORT]/PATH")
        self.host, self.port = parts.hostname, parts.port or 80
        self.request = (f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
                        f"Host: {parts.netloc}\r\nConnection: close\r\n\r\n").encode()
        self.phases, self.out = list(phases), out
        self.max_in_flight, self.timeout = max_in_flight, timeout
        self.window = Window()
        self.totals = Window()
        self.in_flight = 0
        self.errors: list[str] = []
        self.stopped = False  # SIGTERM: send no more, wait for the answers in flight, write the totals

    def stop(self) -> None:
        self.stopped = True

    async def _one(self) -> None:
        start = time.monotonic()
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)
            writer.write(self.request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n"), self.timeout)
            await asyncio.wait_for(reader.read(), self.timeout - (time.monotonic() - start))
            status = head.split(b" ", 2)[1] if head.startswith(b"HTTP/") else b""
            if status != b"200":
                raise ValueError(f"status {status.decode(errors='replace') or head[:40]!r}")
            latency = time.monotonic() - start
            for w in (self.window, self.totals):
                w.ok += 1
                w.latencies.append(latency)
        except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
            for w in (self.window, self.totals):
                w.failed += 1
            if len(self.errors) < 10:
                self.errors.append(f"{time.monotonic() - self.t0:.1f}s {type(exc).__name__}: {exc}")
        finally:
            self.in_flight -= 1
            if writer is not None:
                writer.close()

    def _emit(self, rate: float) -> None:
        self.out.write(json.dumps(self.window.record(time.monotonic() - self.t0, rate, self.in_flight)) + "\n")
        self.out.flush()
        self.window = Window()

    async def run(self) -> dict[str, Any]:
        self.t0 = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        next_emit = self.t0 + 1.0
        phase_start = self.t0
        rate = 0.0
        for phase in self.phases:
            if self.stopped:
                break
            rate, sent = phase.rate, 0
            end = phase_start + phase.seconds
            while not self.stopped:
                now = time.monotonic()
                if now >= next_emit:
                    self._emit(rate)
                    next_emit += 1.0
                due = phase_start + sent / rate if rate else end
                if due >= end:
                    if now >= end:
                        break
                    await asyncio.sleep(min(end, next_emit) - now)
                    continue
                if now < due:
                    await asyncio.sleep(min(due, next_emit) - now)
                    continue
                sent += 1
                if self.in_flight >= self.max_in_flight:
                    self.window.shed += 1
                    self.totals.shed += 1
                    continue
                self.in_flight += 1
                self.window.sent += 1
                self.totals.sent += 1
                task = asyncio.ensure_future(self._one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            phase_start = end
        while tasks:  # the last answers (each bounded by the timeout)
            await asyncio.wait(set(tasks), timeout=max(0.0, next_emit - time.monotonic()))
            if time.monotonic() >= next_emit:
                self._emit(rate)
                next_emit += 1.0
        self._emit(rate)
        lat = sorted(self.totals.latencies)
        summary = {"type": "end", "seconds": round(time.monotonic() - self.t0, 3), "stopped": self.stopped,
               "sent": self.totals.sent,
               "ok": self.totals.ok, "failed": self.totals.failed, "shed": self.totals.shed,
               "p50_ms": _ms(percentile(lat, 50)), "p99_ms": _ms(percentile(lat, 99)), "errors": self.errors}
        self.out.write(json.dumps(summary) + "\n")
        self.out.flush()
        return summary


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http://HOST[:PORT]/PATH")
    parser.add_argument("--load", required=True, help="RATE:SECONDS[,RATE:SECONDS...]")
    parser.add_argument("--out", default="-", help="per-second JSON lines (default: stdout)")
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    args = parser.parse_args(argv)
    try:
        phases = parse_load(args.load)
        if not 1 <= args.max_in_flight <= 4096 or not 0 < args.timeout <= 60:
            raise ValueError("--max-in-flight must be 1..4096 and --timeout 0..60 s")
        out = sys.stdout if args.out == "-" else open(args.out, "a", encoding="utf-8")
        generator = LoadGenerator(args.url, phases, out, max_in_flight=args.max_in_flight, timeout=args.timeout)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    end = asyncio.run(_run_until_signal(generator))
    return 0 if end["failed"] == 0 else 1


async def _run_until_signal(generator: LoadGenerator) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, generator.stop)
    return await generator.run()


if __name__ == "__main__":
    sys.exit(main())


def start_in_lab(prefix: str, phases: Sequence[Phase], out_path: str, *, node: str = "client",
                 path: str = "/", max_in_flight: int = 256, timeout: float = 5.0, log: IO[Any] | None = None) -> Any:
    """Start the generator in a node of a running lab against its VIP (its errors to ``log``); the ``Popen``."""
    import subprocess

    from pktlb.lab.backends import running_lab
    from pktlb.lab.netns import Namespace

    _, recorded = running_lab(prefix)
    namespace = next((n["namespace"] for n in recorded["nodes"] if n["name"] == node), None)
    if namespace is None:
        raise ValueError(f"the lab {prefix!r} has no node {node!r}")
    url = f"http://{recorded['vip']}:{recorded['service_port']}{path}"
    load = ",".join(f"{p.rate:g}:{p.seconds:g}" for p in phases)
    return Namespace(namespace).popen([sys.executable, "-m", "pktlb.lab.loadgen", "--url", url, "--load", load,
                                       "--out", out_path, "--max-in-flight", str(max_in_flight),
                                       "--timeout", str(timeout)], stdout=subprocess.DEVNULL, stderr=log)
