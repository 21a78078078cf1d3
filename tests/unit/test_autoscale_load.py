"""The load generator's pure parts (phases, percentiles), a bounded run against a local server, and the
latency feed the auto-scaler reads its p99 from."""

from __future__ import annotations

import asyncio
import io
import json
import threading

import pytest

from pktlb.daemon.autoscale.interfaces import Reading
from pktlb.daemon.autoscale.latency import LatencyFeed, WithLatency
from pktlb.lab.capacity import Capacity
from pktlb.lab.httpd import make_server
from pktlb.lab.loadgen import LoadGenerator, Phase, parse_load, percentile


def test_parse_load_and_its_errors():
    assert parse_load("20:30, 60:40,0:5") == [Phase(20, 30), Phase(60, 40), Phase(0, 5)]
    for bad in ("20", "x:3", "20:0", "-1:5", "20:5,", "9999:5"):
        with pytest.raises(ValueError, match="RATE:SECONDS"):
            parse_load(bad)


def test_percentile_nearest_rank():
    values = sorted(range(1, 101))
    assert percentile(values, 99) == 99 and percentile(values, 50) == 50 and percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0 and percentile([], 99) is None


def test_a_bounded_run_counts_every_request_and_its_latency():
    server = make_server("be1", "127.0.0.1", 0, Capacity(max_concurrent=2, service_time=0.01))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    out = io.StringIO()
    try:
        port = server.server_address[1]
        generator = LoadGenerator(f"http://127.0.0.1:{port}/", [Phase(40, 1.0), Phase(0, 0.5)], out, timeout=5)
        end = asyncio.run(generator.run())
    finally:
        server.shutdown()
        server.server_close()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[-1] == end and end["type"] == "end"
    assert end["sent"] == 40 and end["ok"] == 40 and end["failed"] == 0 and end["shed"] == 0
    assert end["p99_ms"] >= 10  # at least the service time
    seconds = lines[:-1]
    assert sum(s["sent"] for s in seconds) == 40 and sum(s["ok"] for s in seconds) == 40
    assert all(s["p99_ms"] is None or s["p99_ms"] >= s["p50_ms"] for s in seconds)


def test_refused_connections_are_failures_not_exceptions():
    out = io.StringIO()
    generator = LoadGenerator("http://127.0.0.1:9/", [Phase(5, 0.4)], out, timeout=1)
    end = asyncio.run(generator.run())
    assert end["sent"] == 2 and end["failed"] == 2 and end["ok"] == 0 and end["errors"]


def test_latency_feed_reads_whole_lines_as_the_file_grows(tmp_path):
    path = tmp_path / "load.jsonl"
    feed = LatencyFeed(path)
    feed.poll()
    assert feed.p99_ms is None  # no file yet
    path.write_text(json.dumps({"t": 1, "p99_ms": 12.5}) + "\n" + '{"t": 2, "p99')
    feed.poll()
    assert feed.p99_ms == 12.5
    with open(path, "a") as f:
        f.write('_ms": 40.0}\n' + json.dumps({"type": "end", "ok": 3}) + "\n")
    feed.poll()
    assert feed.p99_ms == 40.0 and feed.end == {"type": "end", "ok": 3}

    class Source:
        def read(self, now):
            return Reading(now, {"active_flows": 1.0})

    assert WithLatency(Source(), feed).read(3.0).p99_ms == 40.0
