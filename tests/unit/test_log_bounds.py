"""Nothing an attacker sends can make the engine's log grow without bound.

Drops are never logged per frame: the data path (pure core) has no logger at all, the engine's
receive loop logs nothing, and ``Reporter.tick`` writes at most one drop summary per
``DROP_LOG_INTERVAL`` however many frames were dropped, in a line whose size does not depend on them.
"""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from types import SimpleNamespace

from pktlb.core.decision import DROP_REASONS
from pktlb.daemon import report
from pktlb.daemon.forwarder import Forwarder
from pktlb.daemon.report import DROP_LOG_INTERVAL, Reporter
from tests.frames import client_frame, datapath, tcp

HOSTILE = [bytearray(b"\x00" * 5), client_frame(tcp(dport=443)), client_frame(tcp(), dst="198.19.0.200"),
           client_frame(tcp(), flags="MF"), client_frame(tcp(), src="198.19.0.100")]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_one_drop_summary_per_interval_however_many_drops(monkeypatch, caplog):
    clock = FakeClock()
    monkeypatch.setattr(report, "time", SimpleNamespace(monotonic=clock.monotonic, time=time.time))
    dp = datapath("nat")
    reporter = Reporter(SimpleNamespace(datapath=dp))
    seconds, frames_per_second = 95, 2000
    with caplog.at_level(logging.DEBUG):
        for _ in range(seconds):
            for i in range(frames_per_second):
                dp.handle(bytearray(HOSTILE[i % len(HOSTILE)]), clock.now)
            clock.now += 1.0
            reporter.tick()
    summaries = [r for r in caplog.records if r.name == "pktlb.engine" and "dropped" in r.getMessage()]
    assert dp.stats.dropped == seconds * frames_per_second
    assert len(summaries) == seconds // int(DROP_LOG_INTERVAL), [r.getMessage() for r in summaries]
    assert len(caplog.records) == len(summaries), "nothing but the summaries was logged"
    for record in summaries:
        message = record.getMessage()
        assert len(message) < 600, message  # bounded by the fixed set of reasons, not by the traffic
        assert all(reason in DROP_REASONS for reason in dp.stats.drops)
    # The summaries account for every drop, in intervals of at least DROP_LOG_INTERVAL.
    counted = sum(int(r.getMessage().split()[1]) for r in summaries)
    assert counted == reporter._drops_logged <= dp.stats.dropped


def test_no_summary_without_new_drops(monkeypatch, caplog):
    clock = FakeClock()
    monkeypatch.setattr(report, "time", SimpleNamespace(monotonic=clock.monotonic, time=time.time))
    dp = datapath("nat")
    reporter = Reporter(SimpleNamespace(datapath=dp))
    with caplog.at_level(logging.INFO, logger="pktlb.engine"):
        for _ in range(60):
            dp.handle(client_frame(tcp()), clock.now)  # forwarded, not dropped
            clock.now += 1.0
            reporter.tick()
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]


def test_the_data_path_and_the_receive_loop_never_log(caplog):
    dp = datapath("fullnat")
    with caplog.at_level(logging.DEBUG):
        for i in range(5000):
            dp.handle(bytearray(HOSTILE[i % len(HOSTILE)]), 1.0)
    assert caplog.records == []
    root = Path(report.__file__).parents[1]
    for path in sorted((root / "core").rglob("*.py")) + [root / "adapters" / f"{name}.py" for name in
                                                         ("rawio", "packet_batch", "vnet", "packet_socket")]:
        text = path.read_text()
        assert "import logging" not in text and "print(" not in text, f"{path} logs on the packet path"
    loop = inspect.getsource(Forwarder._on_frames)
    assert "log." not in loop and "print(" not in loop
