"""The fast path and Python together keep one state (issue 15, point 3): frames replayed through the
program first and Python for what it punts (``HybridPath``, the engine's own FastPathSync) leave the
same flows, backends, counters and stats as Python alone, in every mode, for schedulers the program
runs (maglev, sh) and ones Python runs (rr, lc)."""

from __future__ import annotations

import time

import pytest

from pktlb.core.packet.addr import ip_to_int
from pktlb.lab.addressing import lab_macs
from tests.frames import BACKENDS, client_frame, datapath, tcp, udp

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("needs_fastpath")]


def client_frames(flows: int = 6, data: int = 8) -> list[bytes]:
    out = []
    for i in range(flows):
        sport = 41000 + i
        out.append(bytes(client_frame(tcp(sport=sport, flags="S"))))
        out += [bytes(client_frame(tcp(sport=sport, flags="A"), payload=b"d" * (20 + k))) for k in range(data)]
        out.append(bytes(client_frame(tcp(sport=sport, flags="FA"))))
        out.append(bytes(client_frame(udp(sport=sport), payload=b"q" * 10)))
        out.append(bytes(client_frame(udp(sport=sport), payload=b"r" * 12)))
    return out


def state(dp) -> tuple[dict, dict]:
    flows = {e.key: (e.backend, e.state, e.packets_in, e.bytes_in, e.packets_out, e.bytes_out) for e in dp.flows}
    return flows, {k: c.as_dict() for k, c in dp.stats.backends.items()}


@pytest.mark.parametrize("mode", ["dsr", "nat", "fullnat", "tunnel"])
@pytest.mark.parametrize("scheduler", ["maglev", "sh", "rr", "lc"])
def test_kernel_and_python_together_keep_the_state_python_alone_keeps(mode, scheduler):
    from pktlb.daemon.fastpath_replay import HybridPath

    frames = client_frames()
    alone = datapath(mode, scheduler=scheduler)
    for frame in frames:
        alone.handle(bytearray(frame), time.monotonic())
    hybrid = HybridPath(datapath(mode, scheduler=scheduler))
    try:
        hybrid.replay(frames)
        assert state(hybrid.dp) == state(alone)
        assert hybrid.kernel_frames >= len(frames) // 2  # the data segments never reached Python
        assert hybrid.dp.stats.kernel_forwarded == hybrid.kernel_frames
    finally:
        hybrid.close()


def test_a_backend_going_down_moves_its_flows_back_to_python():
    from pktlb.core.snapshot import build_snapshot
    from pktlb.daemon.fastpath_replay import HybridPath

    hybrid = HybridPath(datapath("nat", scheduler="maglev"))
    try:
        syn = client_frame(tcp(sport=42000, flags="S"))
        assert hybrid.handle(bytes(syn))[0] == "kernel"
        hybrid.sync.tick(time.monotonic())
        old = next(iter(hybrid.dp.flows)).backend
        config = hybrid.dp.config
        snap = build_snapshot(config, generation=2, states={("web", old): "down"}, macs=lab_macs(config))
        hybrid.dp.swap(snap)
        hybrid.sync.install(snap)
        ack = client_frame(tcp(sport=42000, flags="A"), payload=b"x")
        how, out = hybrid.handle(bytes(ack))
        assert how == "backend_down"  # punted: Python reschedules it
        moved = next(iter(hybrid.dp.flows)).backend
        assert moved != old and out and out[0][30:34] == ip_to_int(BACKENDS[moved]).to_bytes(4, "big")
        assert hybrid.handle(bytes(ack))[0] == "kernel"  # Python pushed the new backend: back in the kernel
    finally:
        hybrid.close()


def test_the_report_counts_read_backs_so_a_reader_can_await_the_next_one():
    """`read_backs` in the stats: a test (or a report) that saw n knows the kernel's counters are in its
    next look once it reads more than n (the control socket and the tick share the engine's one loop)."""
    from pktlb.daemon.fastpath_replay import HybridPath

    hybrid = HybridPath(datapath("nat", scheduler="maglev"))
    try:
        seen = hybrid.sync.report()["read_backs"]
        hybrid.handle(bytes(client_frame(tcp(sport=42100, flags="S"))))
        assert hybrid.sync.report()["read_backs"] == seen
        hybrid.sync.tick(time.monotonic())
        assert hybrid.sync.report()["read_backs"] == seen + 1
    finally:
        hybrid.close()
