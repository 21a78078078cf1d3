"""Per-packet cost of a flow hit: the kernel fast path (BPF_PROG_TEST_RUN, median of single runs, XDP and tc) beside
the Python data path (``DataPath.handle`` in a loop), per mode, same snapshot, same frame.  Needs root
and ``make fastpath``.  Prints a Markdown table (the figures in docs/teaching.md come from it).

    .venv/bin/python scripts/fastpath_cost.py [--runs 20000]
"""

from __future__ import annotations

import argparse
import time

from pktlb.adapters.fastpath import FastPath
from pktlb.core.fastpath import encode
from pktlb.core.rewrite.registry import get_rewriter
from tests.frames import client_frame, datapath, tcp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000)
    args = parser.parse_args()
    fp = FastPath(4096)
    print("| mode | XDP program ns/packet | tc program ns/packet | Python engine.process ns/packet | Python / XDP |")
    print("|---|---|---|---|---|")
    for mode in ("dsr", "nat", "fullnat", "tunnel"):
        dp = datapath(mode, scheduler="maglev")
        syn = client_frame(tcp(flags="S"))
        dp.handle(bytearray(syn), 1.0)  # Python decides the flow (full-NAT's port too)
        ack = bytes(client_frame(tcp(flags="A"), payload=b"x" * 10))
        ids = encode.Ids()
        fp.apply(encode.encode_snapshot(dp.snapshot, dp.config.flows, ids))
        fp.clear("pktlb_flows")
        fp.apply(encode.encode_flows(dp.flows, dp.snapshot, ids, 1.0, time.monotonic_ns() - 10**9))
        fp.set_tunnel_id(get_rewriter("tunnel").next_id)
        ns = {}
        for hook in ("xdp", "tc"):
            # One run per call: with repeat > 1 the kernel runs the program again on the frame it already
            # rewrote (a punt after the first).  The duration is measured in the kernel around the program.
            runs = []
            for _ in range(args.runs):
                ret, _, took = fp.test_run(ack, hook)
                assert ret in (3, 7), f"{mode}: the program did not forward the flow hit ({hook} returned {ret})"
                runs.append(took)
            ns[hook] = sorted(runs)[len(runs) // 2]
        n = args.runs
        handle = dp.handle
        start = time.process_time()  # CPU time: wall time on a shared VM counts other jobs too
        for i in range(n):
            handle(bytearray(ack), 1.0 + i * 1e-6)
        py = (time.process_time() - start) / n * 1e9
        print(f"| {mode} | {ns['xdp']} | {ns['tc']} | {py:.0f} | {py / max(ns['xdp'], 1):.0f}x |")
    fp.close()


if __name__ == "__main__":
    main()
