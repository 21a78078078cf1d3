"""The LB tier's routing in real namespaces: BIRD on a router and on 3 LBs (no engines).

N next hops installed; a withdrawal or a killed speaker removes one; hash-threshold multipath
moves flows between survivors, a resilient next-hop group (pktlb nhsync) does not.
"""

from __future__ import annotations

import shutil
import signal

import pytest

from tests.lab.conftest import need_root
from tests.lab.tier_rig import BgpRig

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]
LBS = ["198.18.0.201", "198.18.0.202", "198.18.0.203"]


@pytest.fixture
def rig_factory(tmp_path):
    need_root()
    if shutil.which("bird") is None:
        pytest.skip("bird (Debian bird2) is not installed: make deps")
    rigs = []

    def make(**kwargs):
        rig = BgpRig(tmp_path / f"rig{len(rigs)}", **kwargs)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def _all_up(rig):
    for lb in rig.plan.lbs:
        rig.announce(lb.name)
    rig.wait(lambda: rig.next_hops() == LBS, "3 next hops")


def test_n_next_hops_then_withdraw_and_killed_speaker(rig_factory):
    rig = rig_factory()
    rig.wait(lambda: set(rig.sessions().values()) == {"Established"}, "3 sessions established")
    assert rig.next_hops() == []  # speakers start withdrawn
    _all_up(rig)
    spread = {rig.lb_for(sport) for sport in range(40000, 40060)}
    assert spread == set(LBS)  # the 5-tuple hash uses every next hop
    rig.announce("lb2", False)
    rig.wait(lambda: rig.next_hops() == [LBS[0], LBS[2]], "lb2 withdrawn")
    rig.kill("bird-lb3", signal.SIGKILL)  # the session's TCP connection closes: the router notices at once
    rig.wait(lambda: rig.next_hops() == [LBS[0]], "lb3's routes gone", timeout=5)
    rig.start_bird("lb3")  # a restarted speaker comes back withdrawn (its protocol starts disabled)
    rig.wait(lambda: rig.sessions()["lb3"] == "Established", "lb3 session back")
    assert rig.next_hops() == [LBS[0]]


def _placement(rig, sports):
    return {s: rig.lb_for(s) for s in sports}


@pytest.mark.parametrize("ecmp, max_moved", [("multipath", None), ("resilient", 0)])
def test_flows_moved_between_survivors(rig_factory, ecmp, max_moved):
    rig = rig_factory(ecmp=ecmp)
    rig.wait(lambda: set(rig.sessions().values()) == {"Established"}, "sessions")
    _all_up(rig)
    sports = range(30000, 30300)
    before = _placement(rig, sports)
    # Hash-threshold gives each next hop a slice of the hash space in order: losing the middle one
    # moves no survivor's flow, losing the first shifts the boundary between the other two.
    rig.announce("lb1", False)
    rig.wait(lambda: rig.next_hops() == LBS[1:], "lb1 withdrawn")
    after = _placement(rig, sports)
    survivors = [s for s in sports if before[s] != LBS[0]]
    moved = [s for s in survivors if after[s] != before[s]]
    assert all(after[s] != LBS[0] for s in sports)
    if max_moved is None:
        assert moved, "hash-threshold multipath should move some flows between survivors"
    else:
        assert len(moved) == max_moved, f"{len(moved)}/{len(survivors)} survivor flows moved"
