"""The health part of the engine's `pktlb stats --json` rows: the decision time beside the age."""

from __future__ import annotations

import subprocess
import sys
import time

from pktlb.core.health import DOWN, L3OK, L3TOUT, CheckResult, HealthState
from pktlb.daemon.report import health_row


def test_since_monotonic_is_the_engine_time_of_the_last_change() -> None:
    state = HealthState("web", "be1", ("icmp",), rise=2, fall=2, since=time.monotonic() - 10)
    state.feed(CheckResult("icmp", L3OK, rtt=0.0002), time.monotonic() - 9)
    state.feed(CheckResult("icmp", L3OK, rtt=0.0002), time.monotonic() - 8)
    state.feed(CheckResult("icmp", L3TOUT, "no echo reply"), time.monotonic() - 3)
    decided = time.monotonic() - 2.5
    assert state.feed(CheckResult("icmp", L3TOUT, "no echo reply"), decided) is not None
    row = health_row(state.summary())
    assert row is not None and row["state"] == DOWN
    assert row["since_monotonic"] == decided  # unrounded, on the engine's own clock
    assert 2.4 <= row["since_s"] <= 3.0  # the existing field is unchanged: the age, rounded to 0.1 s
    assert health_row(None) is None


def test_monotonic_is_one_clock_for_every_process() -> None:
    """What makes since_monotonic comparable with a test's own time.monotonic() (CLOCK_MONOTONIC is not
    per process; network namespaces do not offset it, only time namespaces could)."""
    before = time.monotonic()
    other = float(subprocess.run([sys.executable, "-c", "import time; print(time.monotonic())"],
                                 capture_output=True, text=True, check=True).stdout)
    after = time.monotonic()
    assert before <= other <= after
