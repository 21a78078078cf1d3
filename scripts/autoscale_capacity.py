#!/usr/bin/env python3
"""Scale-out, measured: the same offered HTTP load against 1, 2, ... N backends of a lab with a capacity.

    pktlb lab up --mode nat --backends 1 --service-time 50 --max-concurrent 2 --prefix cap-
    .venv/bin/python scripts/autoscale_capacity.py --prefix cap- --rate 150 --seconds 8 --max 4
    pktlb lab down --prefix cap-

Before each row the lab gets one more backend (`pktlb lab backend add`'s code: a namespace, httpd
with the lab's capacity, into the engine); then ``pktlb.lab.loadgen`` offers ``--rate`` new
connections per second for ``--seconds`` from the lab's client (open loop: requests start on
schedule, whether or not the earlier ones were answered).  Per row: answers per second while the
load was offered, p50/p99 latency of every request (a backlog built during the window is answered
after it, and counts), failed requests.  The backends this script added are drained and removed at
the end.  Bounded: rows x (seconds + backlog, at most --timeout) seconds.  Root, a lab that is up.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from pktlb.lab.backends import backend_names, running_lab
from pktlb.lab.loadgen import Phase, start_in_lab
from pktlb.lab.scaling import add_backend, remove_backend
from pktlb.lab.topology import LabError


def one_row(prefix: str, backends: int, rate: float, seconds: float, timeout: float, workdir: Path) -> dict:
    out = workdir / f"load-{backends}.jsonl"
    with open(workdir / "load.log", "ab") as log:
        proc = start_in_lab(prefix, [Phase(rate, seconds)], str(out), max_in_flight=4096, timeout=timeout, log=log)
    proc.wait(timeout=seconds + timeout + 30)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    end = lines[-1]
    during = [r for r in lines[:-1] if r["t"] <= seconds + 0.5]
    return {"backends": backends, "offered_per_s": rate, "answers_per_s": round(sum(r["ok"] for r in during) / seconds, 1),
            "sent": end["sent"], "ok": end["ok"], "failed": end["failed"], "p50_ms": end["p50_ms"],
            "p99_ms": end["p99_ms"], "seconds_to_last_answer": end["seconds"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--rate", type=float, default=150.0, help="offered requests per second")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of load per row")
    parser.add_argument("--max", type=int, default=4, help="rows: 1 to this many backends")
    parser.add_argument("--timeout", type=float, default=40.0, help="seconds a request may wait for its answer")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        _, recorded = running_lab(args.prefix)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    options = recorded["options"]
    start = backend_names(recorded)
    if len(start) != 1:
        print(f"error: the lab has {len(start)} backends; start it with --backends 1", file=sys.stderr)
        return 1
    added: list[str] = []
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="pktlb-capacity-") as tmp:
            for n in range(1, args.max + 1):
                if n > 1:
                    added.append(add_backend(args.prefix)["backend"])  # serving at once (state up)
                rows.append(one_row(args.prefix, n, args.rate, args.seconds, args.timeout, Path(tmp)))
                print(json.dumps(rows[-1]), file=sys.stderr)
    finally:
        for name in reversed(added):
            remove_backend(args.prefix, name, drain_timeout=15)
    if args.json:
        print(json.dumps({"capacity": {"service_time_ms": options.get("service_time"),
                                       "max_concurrent": options.get("max_concurrent")}, "rows": rows}, indent=2))
        return 0
    print(f"backend capacity {options.get('service_time')} ms x {options.get('max_concurrent')}; offered "
          f"{args.rate:g} new connections/s for {args.seconds:g} s\n")
    print("| backends | answers/s | p50 | p99 | failed |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backends']} | {r['answers_per_s']:.0f} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | "
              f"{r['failed']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
