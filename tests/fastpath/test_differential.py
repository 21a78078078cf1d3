"""The kernel fast path is proven equal to the Python data path (issue 15, point 4).

Runs the golden, drop/ICMP, fuzz and property tests once more, with ``tests.fastpath.differential``
loaded: every frame they hand to the data path also goes through the XDP and tc programs
(BPF_PROG_TEST_RUN, no device) with the maps filled from the same snapshot and flow table.  The
program must emit exactly Python's bytes or punt; never drop, never differ; and never punt a plain
frame of an established flow.  Needs root (loading BPF) and the object from ``make fastpath``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pktlb.adapters.fastpath import availability

pytestmark = pytest.mark.bpf
ROOT = Path(__file__).resolve().parents[2]
SUITES = ["tests/unit/test_golden_modes.py", "tests/unit/test_drops_and_icmp.py", "tests/unit/test_not_open_relay.py",
          "tests/unit/test_fuzz_datapath.py", "tests/unit/test_datapath_properties.py"]


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    why = availability()
    if why:
        pytest.skip(f"fast path unavailable: {why}")
    out = tmp_path_factory.mktemp("diff") / "summary.json"
    env = dict(os.environ, PKTLB_DIFF_OUT=str(out))
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.fastpath.differential", *SUITES, "-q",
                          "-p", "no:cacheprovider", "-x", "--timeout=600"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    result = json.loads(out.read_text())
    (ROOT / "build" / "fastpath").mkdir(parents=True, exist_ok=True)  # kept for reading (git-ignored)
    (ROOT / "build" / "fastpath" / "differential.json").write_text(json.dumps(result, indent=1))
    return result


@pytest.mark.timeout(900)
@pytest.mark.parametrize("hook", ["xdp", "tc"])
def test_the_program_emits_python_bytes_or_punts(summary, hook):
    tally = summary["tally"]
    assert tally.get(f"{hook}_mismatch", 0) == 0, summary["mismatches"][:3]
    assert tally.get(f"{hook}_other_verdict", 0) == 0, summary["mismatches"][:3]  # never XDP_DROP / TC_ACT_SHOT
    assert tally.get("harness_error", 0) == 0, summary["mismatches"][:3]
    assert tally.get(f"{hook}_forwarded_equal", 0) >= 1000  # the comparison reached the rewrites, often


@pytest.mark.timeout(900)
@pytest.mark.parametrize("hook", ["xdp", "tc"])
def test_plain_established_frames_are_never_punted(summary, hook):
    assert summary["tally"].get(f"{hook}_plain_punted", 0) == 0, summary["plain_punted"][:3]


@pytest.mark.timeout(900)
def test_punts_are_counted_by_reason(summary):
    reasons = {key.split(":", 1)[1] for key in summary["punts"]}
    assert {"syn", "ip_options", "icmp", "fin_rst"} <= reasons
    assert "?" not in reasons  # every punt incremented exactly one named counter
