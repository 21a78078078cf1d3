"""The CLI finds a real lab's engine without -c or -s (`pktlb stats`, `flows`, `reload`, `explain --lab`)."""

from __future__ import annotations

import json

import pytest

from tests.lab.engine_helpers import wait_engine

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]


def test_lab_engine_found_by_prefix_or_alone(lab_factory):
    lab = lab_factory("nat", engine="pktlb")
    wait_engine(lab)
    done = lab.cli("stats", "--json", "--lab", lab.prefix)
    assert done.returncode == 0, done.stderr
    assert {s["name"] for s in json.loads(done.stdout)["services"]} == {"web", "iperf"}
    done = lab.cli("flows", "--json", "--lab", lab.prefix)
    assert done.returncode == 0 and json.loads(done.stdout)["count"] >= 0, done.stderr
    # Without --lab: this lab's engine if it is the only one running; other labs may be up on this machine
    # (other tests, other users), and then the answer lists this one among them.
    plain = lab.cli("stats", "--json")
    if plain.returncode == 0:
        assert {s["name"] for s in json.loads(plain.stdout)["services"]} == {"web", "iperf"}
    else:
        assert "several engines are running" in plain.stderr and f"lab {lab.prefix!r}" in plain.stderr
    explained = lab.cli("explain", "--lab", "--prefix", lab.prefix, "--tcp", "198.18.1.10:40000",
                        f"{lab.vip}:80", "--json")
    assert explained.returncode == 0, explained.stderr
    assert "from the running engine" in json.loads(explained.stdout)["notes"][0]
