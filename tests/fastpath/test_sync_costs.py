"""What the sync costs per new flow (issue 15's new-flow rate): a flow the kernel cannot hold is never
looked up, a batch's flows are written with one system call per map, a read-back takes a slice of the
flow map in one call and passes over entries the program has not touched.  Each shortcut keeps the
state Python alone keeps (tests/fastpath/test_sync.py); here, that it is taken, and where it must not be."""

from __future__ import annotations

import time

import pytest

from pktlb.adapters import libbpf
from pktlb.adapters.fastpath import FastPath
from pktlb.core.config import parse_config
from pktlb.core.fastpath import layout as L
from pktlb.core.snapshot import build_snapshot
from pktlb.lab.addressing import lab_macs
from tests.frames import client_frame, config_text, datapath, tcp

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("needs_fastpath")]


def count_lookups(fp: FastPath, monkeypatch) -> list[str]:
    names: list[str] = []
    real = fp.lookup
    monkeypatch.setattr(fp, "lookup", lambda name, key: names.append(name) or real(name, key))
    return names


def wide_datapath(mode: str, scheduler: str, flows: str = ""):
    """tests.frames' data path with 100 SNAT ports (it has 4)."""
    from pktlb.core.datapath import DataPath

    config = parse_config(config_text(mode, scheduler=scheduler, flows=flows).replace("[20000, 20003]", "[20000, 20099]"))
    return DataPath(config, macs=lab_macs(config))


def python_handles(hybrid, frame: bytes, backlog: bool) -> bool:
    """The engine's loop for one frame: the program first; if it punts, Python (then a flush)."""
    from pktlb.daemon.fastpath_replay import FORWARDED

    if hybrid.fp.test_run(bytes(frame))[0] in FORWARDED["xdp"]:
        return False
    data = bytearray(frame)
    hybrid.sync.adopt(data)
    hybrid.sync.note(hybrid.dp.handle(data, time.monotonic())[1])
    hybrid.sync.flush(backlog=backlog)
    return True


def syn(sport: int) -> bytes:
    return bytes(client_frame(tcp(sport=sport, flags="S")))


@pytest.mark.parametrize("mode,scheduler", [("fullnat", "maglev"), ("nat", "rr")])
def test_a_new_flow_python_schedules_costs_no_lookup_and_one_write_per_map(mode, scheduler, monkeypatch):
    from pktlb.daemon.fastpath_replay import HybridPath

    hybrid = HybridPath(wide_datapath(mode, scheduler))
    try:
        lookups = count_lookups(hybrid.fp, monkeypatch)
        writes: list[int] = []
        real_batch = libbpf.update_batch
        monkeypatch.setattr(libbpf, "update_batch", lambda fd, keys, values: writes.append(len(keys)) or
                            real_batch(fd, keys, values))
        sync, dp = hybrid.sync, hybrid.dp
        for sport in range(46000, 46008):  # one batch of SYNs, as the engine reads them
            frame = bytearray(syn(sport))
            assert hybrid.fp.test_run(bytes(frame))[0] == libbpf.XDP_PASS
            sync.adopt(frame)
            sync.note(dp.handle(frame, time.monotonic())[1])
        sync.flush()
        assert lookups == []
        assert writes == ([8, 8] if mode == "fullnat" else [8])  # the flows, then full-NAT's reverse entries
        ack = bytes(client_frame(tcp(sport=46003, flags="A"), payload=b"x"))
        assert hybrid.handle(ack)[0] == "kernel"
        assert lookups == []
    finally:
        hybrid.close()


def test_a_flow_the_program_scheduled_under_an_earlier_snapshot_is_still_looked_up(monkeypatch):
    """maglev, then a reload to rr (Python schedules): a flow the program created before the reload,
    whose FIN Python handles before any read-back, is taken from the kernel, not scheduled afresh."""
    from pktlb.daemon.fastpath_replay import HybridPath

    hybrid = HybridPath(datapath("nat", scheduler="maglev"))
    try:
        assert hybrid.handle(syn(46100))[0] == "kernel"
        config = parse_config(config_text("nat", scheduler="rr"))
        snap = build_snapshot(config, generation=2, macs=lab_macs(config))
        hybrid.dp.swap(snap)
        hybrid.sync.install(snap)
        lookups = count_lookups(hybrid.fp, monkeypatch)
        fin = bytes(client_frame(tcp(sport=46100, flags="FA")))
        assert hybrid.handle(fin)[0] == "fin_rst"
        assert "pktlb_flows" in lookups and hybrid.sync.imported == 1
    finally:
        hybrid.close()


def test_a_scan_reads_the_whole_map_in_slices_with_or_without_batch_lookups():
    fp = FastPath(64, ("xdp",))
    try:
        entries = {bytes([i]) * L.FLOW_KEY.size: bytes([i]) * L.FLOW.size for i in range(40)}
        fp.apply({"pktlb_flows": entries}, replace=False)
        for batch in (True, False):
            fp.batch_lookup = batch
            seen: dict[bytes, bytes] = {}
            cursor, slices = None, 0
            while True:
                part, cursor = fp.scan("pktlb_flows", cursor, 8)
                assert len(part) <= 8 or batch  # a batch may overshoot only to finish a hash bucket
                seen.update(part)
                slices += 1
                if cursor is None:
                    break
            assert seen == entries and slices >= 40 // 8, batch
    finally:
        fp.close()


def test_a_full_reverse_map_keeps_the_other_writes_and_counts_one_error():
    """16 kernel flow entries (the smallest map), 20 full-NAT flows in one batch: the reverse map's
    batch write stops at the full map, the rest are tried one by one; the flows are all written."""
    from pktlb.daemon.fastpath_sync import FastPathSync

    dp = wide_datapath("fullnat", "maglev", flows="[flows]\nmax_entries = 16\n")
    fp = FastPath(dp.config.flows.max_entries, ("xdp",))
    sync = FastPathSync(fp, dp, "xdp")
    try:
        sync.install(dp.snapshot)
        for sport in range(46200, 46220):
            sync.note(dp.handle(bytearray(syn(sport)), time.monotonic())[1])
        assert len(dp.flows.entries) == 16  # Python's table holds 16 too (the oldest evicted)
        sync.flush()
        assert sync.errors == 0 and len(fp.entries("pktlb_snat_reverse")) == 16
        fp.clear("pktlb_flows")
        sync.seen.clear()
        for sport in range(46300, 46304):  # 4 more: the reverse map still holds the 16 evicted flows' entries
            sync.note(dp.handle(bytearray(syn(sport)), time.monotonic())[1])
        sync.flush()
        assert sync.errors == 1
        assert len(fp.entries("pktlb_flows")) == 4 and len(sync.seen) == 4
    finally:
        fp.close()


@pytest.mark.parametrize("mode,scheduler", [("fullnat", "maglev"), ("nat", "rr"), ("nat", "maglev")])
def test_under_backlog_half_open_flows_wait_and_the_state_is_python_alones(mode, scheduler):
    """Every batch full (frames waiting): a half-open flow the kernel does not have is not pushed; its
    frames stay with Python, which keeps exactly the state it keeps alone; established, it is pushed
    at once, and a flush without backlog pushes the rest."""
    from pktlb.daemon.fastpath_replay import FORWARDED, HybridPath
    from tests.fastpath.test_sync import client_frames, state

    frames, stride = client_frames(flows=4, data=3), 3 + 4  # per flow: SYN, 3 data, FIN, 2 UDP
    alone = wide_datapath(mode, scheduler)
    for frame in frames:
        alone.handle(bytearray(frame), time.monotonic())
    hybrid = HybridPath(wide_datapath(mode, scheduler))
    sync, dp = hybrid.sync, hybrid.dp
    try:
        for i in range(4):  # SYNs first: all half-open, none in the kernel (unless the program scheduled it)
            frame = bytearray(frames[i * stride])
            if hybrid.fp.test_run(bytes(frame))[0] not in FORWARDED["xdp"]:
                sync.adopt(frame)
                sync.note(dp.handle(frame, time.monotonic())[1])
        sync.flush(backlog=True)
        kernel_scheduled = scheduler == "maglev" and mode != "fullnat"
        assert len(sync.deferred) == (0 if kernel_scheduled else 4)
        assert len(hybrid.fp.entries("pktlb_flows")) == (4 if kernel_scheduled else 0)
        for i, frame in enumerate(frames):
            if i % stride:
                python_handles(hybrid, frame, backlog=True)
        sync.tick(time.monotonic())
        assert state(dp) == state(alone)
        assert not sync.deferred  # each became established (pushed) or closed
    finally:
        hybrid.close()


def test_deferred_flows_are_pushed_by_a_flush_without_backlog(monkeypatch):
    from pktlb.daemon import fastpath_sync
    from pktlb.daemon.fastpath_replay import HybridPath

    monkeypatch.setattr(fastpath_sync, "DEFER_DRAIN", 5)
    hybrid = HybridPath(wide_datapath("fullnat", "maglev"))
    sync, dp = hybrid.sync, hybrid.dp
    try:
        for sport in range(46400, 46408):
            sync.note(dp.handle(bytearray(syn(sport)), time.monotonic())[1])
        sync.flush(backlog=True)
        assert len(sync.deferred) == 8 and not hybrid.fp.entries("pktlb_flows")
        sync.tick(time.monotonic())  # the engine was behind since the last read-back: still nothing published
        assert len(sync.deferred) == 8 and not hybrid.fp.entries("pktlb_flows")
        assert python_handles(hybrid, client_frame(tcp(sport=46401, flags="A"), payload=b"x"), backlog=True)
        assert len(sync.deferred) == 7 and len(hybrid.fp.entries("pktlb_flows")) == 1  # established: pushed
        sync.flush()
        assert len(sync.deferred) == 2 and len(hybrid.fp.entries("pktlb_flows")) == 6  # DEFER_DRAIN at a time
        sync.flush()
        assert not sync.deferred and len(hybrid.fp.entries("pktlb_flows")) == 8
        for sport in range(46410, 46412):
            sync.note(dp.handle(bytearray(syn(sport)), time.monotonic())[1])
        sync.flush(backlog=True)
        sync.tick(time.monotonic())
        assert len(sync.deferred) == 2
        sync.tick(time.monotonic())  # a read-back interval without a full batch: it publishes them
        assert not sync.deferred and len(hybrid.fp.entries("pktlb_flows")) == 10
        assert hybrid.handle(bytes(client_frame(tcp(sport=46405, flags="A"), payload=b"x")))[0] == "kernel"
    finally:
        hybrid.close()
