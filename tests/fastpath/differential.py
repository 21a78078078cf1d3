"""A pytest plugin that runs every frame the Python data path sees through the kernel fast path too.

Loaded with ``-p tests.fastpath.differential`` into a run of the golden, fuzz and property tests
(tests/fastpath/test_differential.py starts that run).  Before each ``DataPath.handle`` the program's
maps are filled from the same snapshot and flow table (``pktlb.core.fastpath.encode``), the frame runs
through the XDP and the tc program with BPF_PROG_TEST_RUN, then through ``engine.process``, and the
results are compared:

  * the program forwarded: Python must forward exactly one frame with exactly the same bytes;
  * the program punted: fine (Python decides), counted by reason; but a *plain* frame of an
    established flow (Python forwards it on a flow hit; no SYN/FIN/RST, options, fragment, padding or
    TTL <= 1; its backend up) must never be punted;
  * the program never drops.

The tests themselves run unchanged.  A summary goes to $PKTLB_DIFF_OUT (JSON).
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import time
from collections import Counter

from pktlb.adapters import libbpf
from pktlb.adapters.fastpath import FastPath
from pktlb.core import datapath as datapath_module
from pktlb.core import decision as d
from pktlb.core.fastpath import encode
from pktlb.core.fastpath import layout as L
from pktlb.core.rewrite.registry import get_rewriter
from pktlb.core.snapshot import DOWN

FORWARDED = {"xdp": {libbpf.XDP_TX, libbpf.XDP_REDIRECT}, "tc": {libbpf.TC_ACT_REDIRECT}}
PUNTED = {"xdp": {libbpf.XDP_PASS}, "tc": {libbpf.TC_ACT_OK}}
MAX_EXAMPLES = 20
MAX_XDP_FRAME = 3000  # a page minus XDP's headroom and tailroom: bigger frames never reach an XDP program


class Differential:
    def __init__(self, hooks: tuple[str, ...] = ("xdp", "tc")) -> None:
        self.fp = FastPath(4096, hooks)
        self.hooks = hooks
        self.snap = None
        self.ids = encode.Ids()
        self.written: dict[str, dict[bytes, bytes | None]] = {}
        self.offset, self.offset_at, self.offset_now = 0, -10.0, -1.0
        self.last_counters = self.fp.counters()
        self.real = datapath_module.process
        self.tally: Counter[str] = Counter()
        self.punts: Counter[str] = Counter()
        self.mismatches: list[dict] = []
        self.plain_punted: list[dict] = []

    def install(self) -> None:
        datapath_module.process = self.process

    def _push(self, snap, flows, now: float) -> None:
        """Make the maps equal the snapshot and the live flows, writing only what changed."""
        if snap is not self.snap:
            self.ids = encode.Ids()
            self.fp.apply(encode.encode_snapshot(snap, flows.config, self.ids))
            self.snap = snap
        # Python's clock is the test's `now`; the kernel's runs on.  The offset makes a flow's age in the
        # kernel equal its age in Python: recomputed whenever `now` changes (a later example may start
        # earlier: a stale offset would age its flows, up to expiry) and at least every second.
        if now != self.offset_now or time.monotonic() - self.offset_at > 1.0:
            self.offset = time.monotonic_ns() - int(now * 1e9)
            self.offset_at, self.offset_now = time.monotonic(), now
            for last in self.written.values():  # rewrite every entry with the new clock, keep the keys
                for key in last:
                    last[key] = None
        image = encode.encode_flows(flows, snap, self.ids, now, self.offset)
        for name in ("pktlb_flows", "pktlb_snat_reverse"):
            fd, last, entries = self.fp.fd(name), self.written.setdefault(name, {}), image[name]
            for key in [k for k in last if k not in entries]:
                libbpf.delete(fd, key)
                del last[key]
            for key, value in entries.items():
                if last.get(key) != value:
                    libbpf.update(fd, key, value)
                    last[key] = value
        self.fp.set_tunnel_id(get_rewriter("tunnel").next_id)

    def _forget_kernel_flow(self, raw: bytes) -> None:
        """The program created a flow for this frame: rewrite or delete that key on the next push."""
        key = raw[26:34] + raw[34:38] + raw[23:24] + bytes(3)
        self.written.setdefault("pktlb_flows", {})[key] = None

    def process(self, frame, snap, flows, now, partial=False, gso=0):
        if partial or gso:  # BPF_PROG_TEST_RUN frames carry no checksum state: compared in the lab instead
            self.tally["skipped_partial_or_gso"] += 1
            return self.real(frame, snap, flows, now, partial, gso)
        raw = bytes(frame)
        if len(raw) > MAX_XDP_FRAME:  # no device hands XDP such a frame; BPF_PROG_TEST_RUN refuses it
            self.tally["outside_xdp_sizes"] += 1
            return self.real(frame, snap, flows, now, partial, gso)
        kernel = {}
        for hook in self.hooks:
            try:
                self._push(snap, flows, now)
                ret, out, _ = self.fp.test_run(raw, hook)
            except libbpf.BpfError as exc:
                if exc.errno == errno.EINVAL and (len(raw) < 34 or len(raw) > MAX_XDP_FRAME):
                    self.tally[f"{hook}_outside_test_run_sizes"] += 1  # tc's test run wants an IPv4 header
                    continue
                self.tally["harness_error"] += 1
                self._example(self.mismatches, raw, "harness", str(exc), None)
                continue
            after = self.fp.counters()
            reasons = [L.COUNTERS[i] for i in range(len(after)) if after[i] != self.last_counters[i]]
            self.last_counters = after
            if "new_flow" in reasons:
                self._forget_kernel_flow(raw)
            kernel[hook] = (ret, out, reasons)
        plain = self._plain(raw, snap, flows, now)
        frames, dec = self.real(frame, snap, flows, now, partial, gso)
        self.tally["frames"] += 1
        for hook, (ret, out, reasons) in kernel.items():
            if ret in FORWARDED[hook]:
                if dec.verdict == d.FORWARD and len(frames) == 1 and bytes(frames[0]) == out:
                    self.tally[f"{hook}_forwarded_equal"] += 1
                else:
                    self.tally[f"{hook}_mismatch"] += 1
                    self._example(self.mismatches, raw, hook, f"python {dec!r}", out,
                                  bytes(frames[0]) if frames else None)
            elif ret in PUNTED[hook]:
                reason = next((r for r in reasons if r in L.PUNT_REASONS), "?")
                self.punts[f"{hook}:{reason}"] += 1
                self.tally[f"{hook}_punted"] += 1
                if plain and dec.verdict == d.FORWARD and dec.flow_hit:
                    self.tally[f"{hook}_plain_punted"] += 1
                    self._example(self.plain_punted, raw, hook, f"punted {reason}; python {dec!r}", None)
            else:
                self.tally[f"{hook}_other_verdict"] += 1
                self._example(self.mismatches, raw, hook, f"returned {ret}", out)
        return frames, dec

    @staticmethod
    def _plain(raw: bytes, snap, flows, now: float) -> bool:
        """A frame of an established flow with nothing special about it (computed before Python runs)."""
        if len(raw) < 54 or raw[12:14] != b"\x08\x00" or raw[14] != 0x45 or raw[22] <= 1:
            return False
        total = int.from_bytes(raw[16:18], "big")
        if 14 + total != len(raw) or raw[20] & 0x3F or raw[21]:
            return False
        proto = raw[23]
        if proto == 6 and raw[47] & 0x07:  # SYN, FIN or RST
            return False
        if proto not in (6, 17):
            return False
        src, dst = int.from_bytes(raw[26:30], "big"), int.from_bytes(raw[30:34], "big")
        sport, dport = int.from_bytes(raw[34:36], "big"), int.from_bytes(raw[36:38], "big")
        entry = flows.entries.get((proto, src, dst, sport, dport))
        if entry is None or now - entry.last_seen >= flows.timeouts[entry.state]:
            return False  # (replies are "plain" only through their inbound flow: not checked here)
        svc = snap.services.get((proto, dst, dport))
        be = svc.by_name.get(entry.backend) if svc else None
        return be is not None and be.state != DOWN

    def _example(self, bucket: list, raw: bytes, hook: str, what: str, out: bytes | None,
                 expected: bytes | None = None) -> None:
        if len(bucket) < MAX_EXAMPLES:
            bucket.append({"hook": hook, "what": what, "frame": raw.hex(), "kernel": out.hex() if out else None,
                           "python": expected.hex() if expected else None})

    def summary(self) -> dict:
        return {"tally": dict(self.tally), "punts": dict(self.punts), "mismatches": self.mismatches,
                "plain_punted": self.plain_punted}


_differential: Differential | None = None


def pytest_configure(config) -> None:
    global _differential
    from hypothesis import settings

    # the same examples, but each one now also runs two programs: no per-example deadline
    settings.register_profile("differential", deadline=None)
    settings.load_profile("differential")
    _differential = Differential()
    _differential.install()
    out = os.environ.get("PKTLB_DIFF_OUT")
    if out:
        atexit.register(lambda: open(out, "w").write(json.dumps(_differential.summary(), indent=1)))
