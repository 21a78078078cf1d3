"""The kernel fast path's pure parts and its refusals, without root: map encodings of a snapshot and a
flow table, the scheduler table the program indexes, why the engine runs without it, `pktlb stats`."""

from __future__ import annotations

from pktlb.core.fastpath import encode
from pktlb.core.fastpath import layout as L
from pktlb.core.flowkey import flow_hash
from pktlb.reports.stats_text import fastpath_line
from tests.frames import client_frame, datapath, tcp


def test_the_lookup_table_is_the_schedulers_own_pick():
    dp = datapath("nat", scheduler="maglev")
    ids = encode.Ids()
    image = encode.encode_snapshot(dp.snapshot, dp.config.flows, ids)
    svc = dp.snapshot.service_named("web")
    raw = image["pktlb_tables"][L.U32.pack(ids.service("web"))]
    size, _ = L.TABLE_HEAD.unpack_from(raw)
    slots = memoryview(raw)[L.TABLE_HEAD.size:].cast("H")
    by_id = {i: name for (s, name), i in ids.backends.items() if s == "web"}
    for sport in range(40000, 40200):
        key = (6, 0xC612010A, svc.vip, sport, 80)
        h = flow_hash(*key, dp.snapshot.seed)
        assert by_id[slots[h % size]] == svc.scheduler.pick(key, h, {}).name


def test_stateful_schedulers_and_fullnat_leave_new_flows_to_python():
    for mode, scheduler, expected in (("nat", "rr", L.SCHED_PYTHON), ("fullnat", "maglev", L.SCHED_PYTHON),
                                      ("dsr", "sh", L.SCHED_SRC_HASH), ("tunnel", "hash", L.SCHED_FLOW_HASH)):
        dp = datapath(mode, scheduler=scheduler)
        assert encode.sched_kind(dp.snapshot.service_named("web")) == expected, (mode, scheduler)


def test_flows_round_trip_and_expired_ones_are_left_out():
    dp = datapath("fullnat", scheduler="rr")
    dp.handle(client_frame(tcp(sport=40001, flags="S")), 1.0)
    ids = encode.Ids()
    encode.encode_snapshot(dp.snapshot, dp.config.flows, ids)
    image = encode.encode_flows(dp.flows, dp.snapshot, ids, 2.0)
    (key, value), = image["pktlb_flows"].items()
    kf = encode.decode_flow(key, value)
    entry = next(iter(dp.flows))
    assert kf.key == entry.key and kf.state == "syn" and len(image["pktlb_snat_reverse"]) == 1
    assert encode.encode_flows(dp.flows, dp.snapshot, ids, 1.0 + dp.config.flows.syn_timeout + 1)["pktlb_flows"] == {}


def test_without_the_object_the_engine_is_told_why(monkeypatch, tmp_path):
    from pktlb.adapters import fastpath

    monkeypatch.setenv(fastpath.OBJECT_ENV, str(tmp_path / "missing.bpf.o"))
    why = fastpath.availability()
    assert why and "make fastpath" in why


def test_stats_say_whether_the_fast_path_is_on():
    assert fastpath_line({"hook": "off", "reason": "no eBPF object"}, {}) == "fast path: off (no eBPF object)"
    line = fastpath_line({"hook": "xdp", "errors": 0, "forwarded": {"new_flow": 3}, "punts": {"syn": 5, "icmp": 1}},
                         {"kernel_forwarded": 900})
    assert line.startswith("fast path: xdp, 900 of the forwarded frames in the kernel") and "syn 5, icmp 1" in line


def test_flow_and_reverse_keys_from_integers_are_the_layouts_bytes():
    """encode packs keys from integers in one go (the new-flow path's speed); the bytes are layout's."""
    for proto, src, dst, sport, dport in ((6, 0xC612010A, 0xC6130064, 40000, 80), (17, 0, 0xFFFFFFFF, 0, 65535),
                                          (6, 0x01020304, 0x05060708, 0x0102, 0x0304)):
        raw = L.FLOW_KEY.pack(src.to_bytes(4, "big"), dst.to_bytes(4, "big"), sport.to_bytes(2, "big"),
                              dport.to_bytes(2, "big"), proto)
        assert encode.flow_key((proto, src, dst, sport, dport)) == raw
        assert encode.decode_flow_key(raw) == (proto, src, dst, sport, dport)
    dp = datapath("fullnat", scheduler="rr")
    dp.handle(client_frame(tcp(sport=40002, flags="S")), 1.0)
    entry = next(iter(dp.flows))
    key, value = encode.snat_reverse(entry)
    assert key == L.REVERSE_KEY.pack(entry.snat_addr.to_bytes(4, "big"), entry.snat_port.to_bytes(2, "big"), 6)
    assert value[:16] == encode.flow_key(entry.key)


def test_reply_next_hops_follow_the_egress_stage_through_the_resolvers_cache():
    """The resolver remembers what each route the egress stage gives means for the program, but asks the
    egress stage every time: a changed route or neighbour is followed at once."""
    from types import SimpleNamespace

    from pktlb.core.fastpath.encode import UNRESOLVED_L2
    from pktlb.daemon.egress import Route
    from pktlb.daemon.fastpath_engine import reply_resolver

    port, other = object(), object()
    routes = {1: Route(port, b"a" * 12), 2: "no_neighbour"}
    asked = []

    def target(frame, decision):
        client = int.from_bytes(frame[30:34], "big")
        asked.append(client)
        return routes[client]

    engine = SimpleNamespace(fastpath_hook="xdp", ports=[port], egress=SimpleNamespace(target=target),
                             portset=SimpleNamespace(by_ifindex={7: port}, tx_only={9: other}))
    resolve = reply_resolver(engine)
    assert resolve(1) == (b"a" * 12, 7) and resolve(1) == (b"a" * 12, 7)
    assert resolve(2) == (UNRESOLVED_L2, 0)
    routes[1] = Route(port, b"b" * 12)  # the neighbour's MAC changed
    assert resolve(1) == (b"b" * 12, 7)
    routes[2] = Route(other, b"c" * 12)  # resolved, but behind an interface XDP cannot send to
    assert resolve(2) == (UNRESOLVED_L2, 0)
    engine.fastpath_hook = "tc"
    assert reply_resolver(engine)(2) == (b"c" * 12, 9)
    assert asked == [1, 1, 2, 1, 2, 2]


def test_behind_xdp_the_engine_queues_as_many_frames_as_without_it(monkeypatch):
    """A frame an XDP program passed on is charged about 1.5 times the receive-buffer bytes (generic XDP's
    page-pool copy): the sockets get 1.5 times the buffer there, so a burst of punted frames loses no more."""
    from types import SimpleNamespace

    from pktlb.daemon import ports
    from pktlb.daemon.readpoint import read_point

    assert read_point("xdp").rx_buffer_bytes == read_point("off").rx_buffer_bytes * 3 // 2
    assert read_point("tc").rx_buffer_bytes == read_point("off").rx_buffer_bytes
    opened = []
    monkeypatch.setattr(ports, "RawPort", lambda name, **kw: opened.append((name, kw)) or SimpleNamespace())
    ports.Ports(["eth0"], SimpleNamespace(link=lambda name: SimpleNamespace(index=2)), bpf=b"", batch=64, workers=1,
                fanout_group=1, steering=None, rx_buffer_bytes=read_point("xdp").rx_buffer_bytes)
    assert opened == [("eth0", {**opened[0][1], "rx_buffer_bytes": 12 << 20})]
