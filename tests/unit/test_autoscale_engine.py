"""The auto-scaler's engine side: rates from counters, the control socket client, the standby pool, the journal."""

from __future__ import annotations

import json
import threading

import pytest

from pktlb.daemon.autoscale.engine import BackendCounters, EngineActuator, EngineControl, EngineCounters
from pktlb.daemon.autoscale.interfaces import AutoscaleError, NewBackend
from pktlb.daemon.autoscale.journal import Journal, read_journal
from pktlb.daemon.autoscale.metrics import EngineMetrics, reading_from
from pktlb.daemon.autoscale.pool import StandbyPool, parse_pool_entry
from pktlb.daemon.ctlsock import ControlServer
from pktlb.daemon.reactor import Reactor


def counters(cpu, **backends):
    return EngineCounters(1, cpu, {name: BackendCounters("up", *values) for name, values in backends.items()})


def test_rates_from_counter_differences():
    prev = counters(10.0, be1=(100, 1000, 5), be2=(50, 500, 3))
    cur = counters(10.5, be1=(120, 1400, 6), be2=(40, 100, 2), be3=(900, 9000, 1))
    r = reading_from(prev, cur, 2.0, 7.0)
    assert r.time == 7.0
    # be1: (120-100)/2 = 10; be2 went down (engine restarted): 40 since, /2 = 20; be3 is new: no rate yet.
    assert r.per_backend["new_flows_per_s"] == {"be1": 10.0, "be2": 20.0}
    assert r.values["new_flows_per_s"] == 30.0
    assert r.values["pps"] == 200.0 + 50.0
    assert r.values["active_flows"] == 9.0 and r.per_backend["active_flows"]["be3"] == 1.0
    assert r.values["cpu"] == 0.25
    assert r.backends == {"be1": "up", "be2": "up", "be3": "up"}


def test_first_reading_has_only_the_gauge():
    r = reading_from(None, counters(None, be1=(1, 2, 3)), 0.0, 0.0)
    assert r.values == {"active_flows": 3.0, "new_flows_per_s": None, "pps": None, "cpu": None}


def test_no_cpu_from_an_engine_that_does_not_report_it():
    r = reading_from(counters(None, be1=(0, 0, 0)), counters(None, be1=(5, 5, 0)), 1.0, 1.0)
    assert r.values["cpu"] is None and r.values["new_flows_per_s"] == 5.0


def stats(worker: int, flows: dict[str, tuple[int, int, int]], cpu: float | None = 1.0) -> dict:
    rows = [{"name": n, "state": "up", "new_flows": a, "packets_in": b, "active_flows": c}
            for n, (a, b, c) in flows.items()]
    out = {"worker": worker, "services": [{"name": "web", "backends": rows}, {"name": "iperf", "backends": []}]}
    if cpu is not None:
        out["cpu_seconds"] = cpu
    return out


@pytest.fixture
def engine(tmp_path):
    """Two fake workers on <sock> and <sock>.w1; each answers stats and records the changes it gets."""
    reactor = Reactor()
    seen: list[tuple[int, dict]] = []
    backends = {"be1": (10, 100, 2)}

    def worker(n):
        def handle(req):
            seen.append((n, req))
            if req["cmd"] == "stats":
                return stats(n, backends, cpu=0.5 * (n + 1))
            if req.get("action") == "add" and req["backend"] == "bad":
                raise ValueError("address 'x' is not an IPv4 address")
            return {"generation": 2, "why": "ok", "ring_moved": {}}
        return handle

    base = str(tmp_path / "ctl.sock")
    servers = [ControlServer(path, worker(n), reactor) for n, path in ((0, base), (1, base + ".w1"))]
    stop = threading.Event()
    thread = threading.Thread(target=lambda: [reactor.run_once(0.05) for _ in iter(stop.is_set, True)])
    thread.start()
    yield base, seen, backends
    stop.set()
    thread.join(5)
    for srv in servers:
        srv.close()
    reactor.close()


def test_engine_control_adds_workers_up_and_changes_every_worker(engine):
    path, seen, backends = engine
    ctl = EngineControl(path, "web")
    c = ctl.counters()
    assert (c.workers, c.cpu_seconds) == (2, 1.5)
    assert c.backends == {"be1": BackendCounters("up", 20, 200, 4)}
    ctl.add("be2", "198.18.1.12", 8080)
    ctl.drain("be2")
    ctl.remove("be2")
    changes = [(n, r["action"], r["backend"]) for n, r in seen if r["cmd"] == "backend"]
    assert changes == [(0, "add", "be2"), (1, "add", "be2"), (0, "drain", "be2"), (1, "drain", "be2"),
                       (0, "remove", "be2"), (1, "remove", "be2")]
    add = next(r for _, r in seen if r.get("action") == "add")
    assert (add["address"], add["port"], add["service"], "mac" in add) == ("198.18.1.12", 8080, "web", False)
    assert ctl.active_flows("be1") == 4 and ctl.active_flows("gone") == 0
    source = EngineMetrics(ctl)
    assert source.read(0.0).values["new_flows_per_s"] is None
    backends["be1"] = (30, 300, 1)
    assert source.read(2.0).values["new_flows_per_s"] == (60 - 20) / 2


def test_engine_errors_are_clear(engine, tmp_path):
    path, _, _ = engine
    with pytest.raises(AutoscaleError, match="the engine has no service 'db'; it has iperf, web"):
        EngineControl(path, "db").counters()
    with pytest.raises(AutoscaleError, match="no engine control socket"):
        EngineControl(str(tmp_path / "none.sock"), "web").counters()
    provider = StandbyPool([NewBackend("bad", "x")])
    with pytest.raises(AutoscaleError, match="not an IPv4 address"):
        EngineActuator(EngineControl(path, "web"), provider).add_backend()
    assert provider.free() == [NewBackend("bad", "x")]  # refused by the engine: back in the pool


def test_standby_pool():
    pool = StandbyPool([parse_pool_entry("be3=198.18.1.13"), parse_pool_entry("be4=198.18.1.14:8080")],
                       in_use=["be1", "be3"])
    assert pool.create() == NewBackend("be4", "198.18.1.14", 8080)
    with pytest.raises(AutoscaleError, match="all 2 of the pool are in use"):
        pool.create()
    pool.destroy("be3")
    assert pool.create().name == "be3"
    for bad, message in (("be3", "expected NAME=ADDRESS"), ("=1.2.3.4", "expected NAME"),
                         ("be3=198.18.1.1:http", "port 'http'"), ("be3=198.18.1.1:0", "port '0'")):
        with pytest.raises(ValueError, match=message):
            parse_pool_entry(bad)
    with pytest.raises(ValueError, match="given twice: be3"):
        StandbyPool([NewBackend("be3", "a"), NewBackend("be3", "b")])


def test_journal_round_trip(tmp_path):
    path = tmp_path / "autoscale.jsonl"
    with open(path, "w") as out:
        journal = Journal(out)
        journal({"type": "start", "time": 0.0, "x": float("inf")})
        journal({"type": "sample", "time": 1.0, "values": [float("nan"), 1.5]})
    assert read_journal(path) == [{"type": "start", "time": 0.0, "x": None},
                                  {"type": "sample", "time": 1.0, "values": [None, 1.5]}]
    assert journal.records == read_journal(path)
    path.write_text('{"type": "start"}\n\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"autoscale.jsonl:3: expected an object"):
        read_journal(path)
    path.write_text('{"type": "start"\n')
    with pytest.raises(ValueError, match=r"autoscale.jsonl:1: not JSON"):
        read_journal(path)
    json.dumps(journal.records, allow_nan=False)  # strict JSON: no Infinity or NaN left
