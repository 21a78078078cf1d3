"""Replay frames through the kernel fast path and the Python data path together, as the engine runs
them: each frame goes to the program first (BPF_PROG_TEST_RUN, no device); what it punts goes to
``DataPath.handle``; ``FastPathSync`` pushes Python's decisions and reads the kernel's counters back.

Used to check that a capture replayed with the fast path on and off gives the same flows, backends
and counters (tests/lab/test_fastpath_lab.py), and by ``pktlb explain`` to say what the program would
do with a frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from pktlb.adapters import libbpf
from pktlb.adapters.fastpath import FastPath
from pktlb.core.datapath import DataPath
from pktlb.core.fastpath import layout as L
from pktlb.daemon.fastpath_sync import FastPathSync

FORWARDED = {"xdp": (libbpf.XDP_TX, libbpf.XDP_REDIRECT), "tc": (libbpf.TC_ACT_REDIRECT,)}


class HybridPath:
    """A DataPath with the kernel program in front of it (the program's maps filled by the sync)."""

    def __init__(self, datapath: DataPath, hook: str = "xdp", fastpath: FastPath | None = None,
                 reply_l2: Callable[[int], bytes] | None = None) -> None:
        self.dp, self.hook = datapath, hook
        self.fp = fastpath or FastPath(datapath.config.flows.max_entries, (hook,))
        self.sync = FastPathSync(self.fp, datapath, hook, reply_l2)
        self.sync.install(datapath.snapshot)
        self.kernel_frames = 0
        self.python_frames = 0
        self.last = self.fp.counters()

    def handle(self, frame: bytes) -> tuple[str, list[bytes]]:
        """(``"kernel"`` or the punt reason, the frames sent)."""
        ret, out, _ = self.fp.test_run(bytes(frame), self.hook)
        counters = self.fp.counters()
        changed = [L.COUNTERS[i] for i in range(len(counters)) if counters[i] != self.last[i]]
        self.last = counters
        if ret in FORWARDED[self.hook]:
            self.kernel_frames += 1
            return "kernel", [out]
        self.python_frames += 1
        self.sync.adopt(bytearray(frame))
        frames, decision = self.dp.handle(bytearray(frame), time.monotonic())
        self.sync.note(decision)
        self.sync.flush()
        return next((r for r in changed if r in L.PUNT_REASONS), "punt"), [bytes(f) for f in frames]

    def replay(self, frames: Iterable[bytes]) -> None:
        for frame in frames:
            self.handle(frame)
        self.sync.tick(time.monotonic())

    def close(self) -> None:
        self.fp.close()
