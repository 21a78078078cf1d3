"""The control plane: every backend change is a whole new snapshot; flows stay where they belong."""

from __future__ import annotations

import pytest

from pktlb.core.config import parse_config
from pktlb.core.datapath import DataPath
from pktlb.daemon.control import ControlError, ControlPlane, backend_config
from pktlb.lab.addressing import lab_macs
from tests.frames import client_frame, config_text, tcp


def plane(mode: str = "nat", scheduler: str = "maglev", backends: int = 3):
    config = parse_config(config_text(mode, scheduler=scheduler, backends=backends))
    dp = DataPath(config)
    cp = ControlPlane(config, macs=lab_macs(config), on_snapshot=dp.swap)
    dp.swap(cp.snapshot)
    return cp, dp


def send(dp, sport: int, flags: str = "S", now: float = 1.0):
    return dp.handle(client_frame(tcp(sport=sport, flags=flags)), now)[1]


def test_drain_keeps_existing_flows_and_sends_no_new_ones():
    cp, dp = plane()
    first = {sport: send(dp, sport).backend for sport in range(40000, 40300)}
    victim = "be2"
    change = cp.set_admin("web", victim, "drain")
    assert change.generation == 2 and "drain" in change.why
    assert all(send(dp, sport, "A").backend == be for sport, be in first.items())
    new = {send(dp, sport).backend for sport in range(41000, 41300)}
    assert victim not in new and new == {"be1", "be3"}


def test_down_reschedules_existing_flows_and_up_restores():
    cp, dp = plane()
    first = {sport: send(dp, sport).backend for sport in range(40000, 40100)}
    cp.set_admin("web", "be1", "down")
    after = {sport: send(dp, sport, "A").backend for sport in first}
    assert "be1" not in after.values()
    assert all(after[s] == b for s, b in first.items() if b != "be1")  # the others did not move
    cp.set_admin("web", "be1", "up")
    assert "be1" in {send(dp, sport).backend for sport in range(42000, 42100)}


def test_maglev_ring_delta_is_reported_and_only_the_failed_backends_slots_move():
    cp, dp = plane(backends=5)
    table_before = cp.snapshot.service_named("web").scheduler.table
    change = cp.set_health("web", "be3", "down", "L3TOUT")
    owned = sum(1 for owner in table_before if owner == "be3")
    assert change.ring_moved["web"] >= owned
    assert change.ring_moved["web"] <= owned + len(table_before) // 100
    table_after = cp.snapshot.service_named("web").scheduler.table
    others_moved = sum(1 for a, b in zip(table_before, table_after, strict=True) if a != "be3" and a != b)
    assert others_moved <= len(table_before) // 100  # Maglev's promise: at most ~1% collateral movement
    assert "be3" not in table_after
    assert cp.set_health("web", "be3", "down") is None  # no forwarding change, no rebuild


def test_add_remove_weight_and_errors():
    cp, dp = plane()
    cp.add_backend("web", backend_config("be9", "198.18.0.19", 80))
    assert "be9" in cp.snapshot.service_named("web").by_name
    cp.set_weight("web", "be9", 5)
    assert cp.snapshot.service_named("web").by_name["be9"].weight == 5
    cp.remove_backend("web", "be9")
    assert "be9" not in cp.snapshot.service_named("web").by_name
    with pytest.raises(ControlError, match="unknown backend"):
        cp.set_admin("web", "nope", "drain")
    with pytest.raises(ControlError, match="unknown service"):
        cp.set_admin("nope", "be1", "drain")
    with pytest.raises(ControlError, match="state"):
        cp.set_admin("web", "be1", "sideways")
    with pytest.raises(ControlError, match="address"):
        backend_config("x", "not-an-ip", 80)
    with pytest.raises(ControlError, match="already"):
        cp.add_backend("web", backend_config("be1", "198.18.0.11", 80))


def test_a_long_lived_flow_keeps_its_backend_while_backends_are_added():
    cp, dp = plane(scheduler="maglev")
    flow = send(dp, 45000)
    for i in range(4, 9):
        cp.add_backend("web", backend_config(f"be{i}", f"198.18.0.{10 + i}", 80))
        assert send(dp, 45000, "A").backend == flow.backend


def test_reload_keeps_flows_and_runtime_state():
    cp, dp = plane()
    flow = send(dp, 46000)
    cp.set_admin("web", "be1", "drain")
    config = parse_config(config_text("nat", scheduler="maglev", backends=4))
    change = cp.reload(config)
    assert "be4" in change.why and cp.admin[("web", "be1")] == "drain"
    assert send(dp, 46000, "A").backend == flow.backend


def test_removing_and_adding_back_gives_the_same_maglev_table():
    cp, dp = plane()
    before = cp.snapshot.service_named("web").scheduler.table
    cp.remove_backend("web", "be2")
    change = cp.add_backend("web", backend_config("be2", "198.18.0.12", 80))
    assert len(cp.snapshot.service_named("web").backends) == 3
    assert cp.snapshot.service_named("web").scheduler.table == before and change.ring_moved["web"] > 0


def test_a_backend_removed_and_added_again_starts_fresh():
    cp, dp = plane()
    cp.set_admin("web", "be2", "drain")
    cp.set_weight("web", "be2", 7)
    cp.set_health("web", "be2", "down")
    cp.remove_backend("web", "be2")
    cp.add_backend("web", backend_config("be2", "198.18.0.12", 80))
    view = cp.snapshot.service_named("web").by_name["be2"]
    assert (view.state, view.weight) == ("up", 1)
    assert cp.effective_state("web", "be2") == "up" and ("web", "be2") not in cp.admin


def test_a_change_that_cannot_be_built_is_refused_whole():
    config = parse_config(config_text("nat", scheduler="maglev", backends=3,
                                      extra="maglev_table_size = 307"))
    cp = ControlPlane(config)
    generation = cp.snapshot.generation
    with pytest.raises(ControlError, match="nothing applied.*maglev_table_size"):
        cp.add_backend("web", backend_config("be4", "198.18.0.14", 80))
    assert [b.name for b in cp.backends("web")] == ["be1", "be2", "be3"]
    assert cp.snapshot.generation == generation
    assert cp.set_health("web", "be1", "up") is None  # still consistent afterwards


@pytest.mark.parametrize("address", ["198.19.0.100", "198.18.0.2"])
def test_runtime_backends_obey_the_configs_address_rules(address):
    cp, _ = plane()
    with pytest.raises(ControlError, match="nothing applied"):
        cp.add_backend("web", backend_config("evil", address, 80))
    assert "evil" not in cp.snapshot.service_named("web").by_name
