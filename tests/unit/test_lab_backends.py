"""`lab backend add|remove`'s pieces that need no root: names, the lab record, the auto-scaler's lab
provider (standby hosts first, then new ones), errors for a lab that is not up."""

from __future__ import annotations

import pytest

from pktlb.daemon.autoscale.interfaces import AutoscaleError
from pktlb.lab.backends import BackendHost, lab_options, pick_index, running_lab
from pktlb.lab.scaling import LabBackendProvider
from pktlb.lab.state import write_json
from pktlb.lab.topology import LabError, LabOptions


def record(*names: str, **options) -> dict:
    return {"status": "up", "options": LabOptions(mode="nat", **options).as_dict() | {"future_key": 1},
            "nodes": [{"name": "lb", "role": "lb"}] + [{"name": n, "role": "backend", "address": f"198.18.0.{10 + int(n[2:])}"}
                                                       for n in names]}


def test_the_lowest_free_name_or_the_one_asked_for():
    assert pick_index(record("be1", "be2"), None) == 3
    assert pick_index(record("be1", "be3"), None) == 2  # a removed backend's name is used again
    assert pick_index(record("be1"), "be7") == 7
    with pytest.raises(LabError, match="already has a backend 'be1'"):
        pick_index(record("be1"), "be1")
    for bad in ("web", "be0", "be01", "be"):
        with pytest.raises(LabError, match="expected be1 to be64"):
            pick_index(record("be1"), bad)
    with pytest.raises(LabError, match="the most it can have is 64"):
        pick_index(record(*[f"be{i}" for i in range(1, 65)]), None)


def test_lab_options_ignore_unknown_keys_and_keep_the_capacity():
    options = lab_options(record("be1", service_time=50.0, max_concurrent=2))
    assert (options.mode, options.service_time, options.max_concurrent) == ("nat", 50.0, 2)


def test_a_lab_that_is_not_up_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PKTLB_STATE_ROOT", str(tmp_path))
    with pytest.raises(LabError, match="no lab with prefix 'lab-x-' is up"):
        running_lab("lab-x-")
    (tmp_path / "lab-x-").mkdir()
    write_json(tmp_path / "lab-x-" / "state.json", {**record("be1"), "status": "building"})
    with pytest.raises(LabError, match="is 'building', not up"):
        running_lab("lab-x-")
    write_json(tmp_path / "lab-x-" / "state.json", {**record("be1"), "supervisor": {"pid": 0}})
    with pytest.raises(LabError, match="no running supervisor"):
        running_lab("lab-x-")
    with pytest.raises(LabError, match="expected 1-32 letters"):
        running_lab("../x")


def test_the_provider_creates_hosts_and_names_its_errors():
    made = []

    def make(prefix):
        made.append(prefix)
        if len(made) > 2:
            raise LabError("the lab has 64 backends, the most it can have is 64")
        return BackendHost(f"be{len(made) + 1}", f"198.18.0.{11 + len(made)}", "02:00:c6:12:00:0c", "p-be2", ())

    provider = LabBackendProvider("p-", make=make)
    first = provider.create()
    assert (first.name, first.address, first.mac) == ("be2", "198.18.0.12", None)  # the engine resolves the MAC
    assert provider.create().name == "be3" and provider.created == {"be2", "be3"}
    with pytest.raises(AutoscaleError, match="the most it can have is 64"):
        provider.create()
    provider.destroy("be1")  # not one it created (an operator's backend): left alone
