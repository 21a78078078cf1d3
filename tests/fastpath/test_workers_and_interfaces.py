"""The fast path with several interfaces and several workers (issue 15, point 3).

Interfaces: a backend (or a reply's next hop) behind another interface than the frame came in on is
sent with XDP_REDIRECT / bpf_redirect, with the very bytes Python emits; the same interface keeps
XDP_TX.  BPF_PROG_TEST_RUN runs a frame as received on the loopback interface (ifindex 1).
Workers: two ``FastPathSync`` on one loaded object, as ``pktlb run --workers 2`` shares it; only the
writer changes the snapshot's maps, and each kernel-scheduled flow is imported (and counted) once.
"""

from __future__ import annotations

import time

import pytest

from pktlb.adapters import libbpf
from pktlb.adapters.fastpath import FastPath
from pktlb.core.datapath import DataPath
from pktlb.core.fastpath import layout as L
from pktlb.core.fastpath.encode import Interfaces
from pktlb.core.packet.addr import mac_to_bytes
from pktlb.core.rewrite.registry import get_rewriter
from pktlb.core.snapshot import build_snapshot
from pktlb.lab.addressing import lab_macs
from tests.frames import client_frame, config_text, datapath, tcp

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("needs_fastpath")]
LOOPBACK = 1  # the test run's ingress interface
OTHER = 99  # any other ifindex: the program only names it



def flow_frames(sport: int) -> list[bytes]:
    return [bytes(client_frame(tcp(sport=sport, flags="S"))),
            bytes(client_frame(tcp(sport=sport, flags="A"), payload=b"a" * 30)),
            bytes(client_frame(tcp(sport=sport, flags="A"), payload=b"b" * 40))]


def every_backend(dp: DataPath, ifindex: int) -> Interfaces:
    return Interfaces(backends={(s.name, b.name): ifindex for s in dp.snapshot.services.values() for b in s.backends})


@pytest.mark.parametrize("hook", ["xdp", "tc"])
@pytest.mark.parametrize("mode", ["dsr", "nat", "fullnat", "tunnel"])
@pytest.mark.parametrize("ifindex", [OTHER, LOOPBACK])
def test_a_next_hop_behind_another_interface_is_redirected_with_python_bytes(hook, mode, ifindex):
    from pktlb.daemon.fastpath_replay import HybridPath

    alone = datapath(mode, scheduler="maglev")
    hybrid = HybridPath(datapath(mode, scheduler="maglev"), hook)
    try:
        hybrid.sync.install(hybrid.dp.snapshot, every_backend(hybrid.dp, ifindex))
        *first, last = flow_frames(43000)
        for frame in first:
            alone.handle(bytearray(frame), time.monotonic())
            hybrid.handle(frame)
        hybrid.fp.set_tunnel_id(get_rewriter("tunnel").next_id)  # the outer IP ID Python uses next, too
        want, _ = alone.handle(bytearray(last), time.monotonic())
        before = hybrid.fp.counters()
        ret, out, _ = hybrid.fp.test_run(last, hook)
        redirected = hybrid.fp.counters()[L.COUNTERS.index("redirected")] - before[L.COUNTERS.index("redirected")]
        assert out == bytes(want[0])
        if hook == "tc":
            assert ret == libbpf.TC_ACT_REDIRECT
        else:
            assert ret == (libbpf.XDP_REDIRECT if ifindex == OTHER else libbpf.XDP_TX)
        assert redirected == (ifindex == OTHER)
    finally:
        hybrid.close()


def test_each_interface_answers_to_its_own_mac():
    from pktlb.daemon.fastpath_replay import HybridPath

    hybrid = HybridPath(datapath("dsr", scheduler="maglev"))
    try:
        frame = flow_frames(43100)[0]
        hybrid.sync.install(hybrid.dp.snapshot, Interfaces(macs={LOOPBACK: mac_to_bytes("02:00:00:00:00:99")}))
        assert hybrid.fp.test_run(frame)[0] == libbpf.XDP_PASS  # another interface's MAC: punted
        hybrid.sync.install(hybrid.dp.snapshot, Interfaces(macs={LOOPBACK: frame[0:6]}))
        assert hybrid.fp.test_run(frame)[0] == libbpf.XDP_TX
    finally:
        hybrid.close()


def two_workers(mode: str):
    from pktlb.core.config import parse_config
    from pktlb.daemon.fastpath_sync import FastPathSync

    config = parse_config(config_text(mode, scheduler="maglev"))
    fp = FastPath(config.flows.max_entries, ("xdp",))
    syncs = []
    for worker in (0, 1):
        dp = DataPath(config, build_snapshot(config, macs=lab_macs(config)), worker, 2)
        syncs.append(FastPathSync(fp, dp, "xdp", writer=worker == 0, worker=worker, workers=2))
        syncs[-1].install(dp.snapshot)
    return fp, syncs


def test_kernel_scheduled_flows_are_imported_and_counted_by_one_worker_only():
    fp, syncs = two_workers("nat")
    try:
        frames = [f for sport in range(44000, 44016) for f in flow_frames(sport)]
        assert all(fp.test_run(f)[0] == libbpf.XDP_TX for f in frames)  # maglev: all in the kernel
        now = time.monotonic()
        for sync in syncs:
            sync.tick(now)
        flows = [len(sync.dp.flows.entries) for sync in syncs]
        assert sum(flows) == 16 and min(flows) > 0, flows  # each flow once, both workers own some
        assert sum(sync.dp.stats.kernel_forwarded for sync in syncs) == len(frames)
        for sync in syncs:
            assert all(sync.owns(key) for key in sync.dp.flows.entries)
        for sync in syncs:  # a second read-back adds nothing
            sync.tick(time.monotonic())
        assert sum(sync.dp.stats.kernel_forwarded for sync in syncs) == len(frames)
    finally:
        fp.close()


def test_only_the_writer_changes_the_shared_snapshot_maps_and_flows_stay_with_their_worker():
    fp, syncs = two_workers("fullnat")
    try:
        config = syncs[1].dp.config
        down = build_snapshot(config, generation=2, states={("web", "be1"): "down"}, macs=lab_macs(config))
        backend_of = {(s, b): i for (s, b), i in syncs[0].ids.backends.items()}
        syncs[1].install(down)  # not the writer: the kernel keeps worker 0's view
        raw = fp.lookup("pktlb_backends", L.U32.pack(backend_of[("web", "be1")]))
        assert raw is not None and L.BACKEND.unpack(raw)[3] == L.BACKEND_STATES["up"]
        syncs[1].install(syncs[1].dp.snapshot)
        # full-NAT: worker 1 decides a flow (an SNAT port from its slice), pushes it; the kernel forwards
        # the rest; only worker 1 reads it back; worker 0 neither imports nor deletes it
        sync = syncs[1]
        syn, *data = flow_frames(45000)
        assert fp.test_run(syn)[0] == libbpf.XDP_PASS  # full-NAT's first packet: Python's
        frames, decision = sync.dp.handle(bytearray(syn), time.monotonic())
        sync.note(decision)
        sync.flush()
        assert [fp.test_run(f)[0] for f in data] == [libbpf.XDP_TX] * 2
        for s in syncs:
            s.tick(time.monotonic())
        assert len(syncs[0].dp.flows.entries) == 0 and syncs[0].dp.stats.kernel_forwarded == 0
        assert sync.dp.stats.kernel_forwarded == 2
        assert len(fp.entries("pktlb_flows")) == 1 and len(fp.entries("pktlb_snat_reverse")) == 1
    finally:
        fp.close()
