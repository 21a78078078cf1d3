"""The engine's nftables guard without a kernel: the rules a config needs, the script, and the
table's lifecycle (install, replace, remove, a stale table left by a killed engine) against a fake nft."""

from __future__ import annotations

import logging

import pytest

from pktlb.adapters.nft import table_comment
from pktlb.core.config import parse_config
from pktlb.daemon.guard import GUARD_TABLE, Guard, GuardSpec, guard_ruleset, guard_spec

CONFIG = """
[lb]
interface = "eth0"
address = "198.18.0.2"

[[service]]
name = "web"
vip = "198.19.0.100"
port = 80
mode = "nat"
[[service.backend]]
name = "be1"
address = "198.18.1.11"
[[service.backend]]
name = "be2"
address = "198.18.1.12"
port = 8080

[[service]]
name = "dns"
vip = "198.19.0.101"
port = 53
protocol = "udp"
mode = "fullnat"
snat_address = "198.18.0.3"
snat_ports = [30000, 39999]
[[service.backend]]
name = "ns1"
address = "198.18.1.21"

[[service]]
name = "dsr"
vip = "198.19.0.102"
port = 80
mode = "dsr"
[[service.backend]]
name = "be1"
address = "198.18.1.11"
"""


class FakeNft:
    """Tables as nft would hold them after each script; records every call."""

    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.present: dict[tuple[str, str], str] = {}

    def load(self, script: str) -> None:
        self.scripts.append(script)
        lines = script.splitlines()
        family, name = lines[0].split()[1:3]
        self.present[(family, name)] = "\n".join(lines[2:])

    def table_text(self, family: str, name: str) -> str | None:
        return self.present.get((family, name))

    def delete_table(self, family: str, name: str) -> bool:
        return self.present.pop((family, name), None) is not None


def test_the_spec_follows_the_services():
    spec = guard_spec(parse_config(CONFIG), ["eth0", "eth1"], "pktlb engine pid 1")
    assert spec.vips == ("198.19.0.100", "198.19.0.101", "198.19.0.102")
    assert spec.snat == (("198.18.0.3", "udp", 30000, 39999),)
    assert spec.nat_replies == (("198.18.1.11", "tcp", 80), ("198.18.1.12", "tcp", 8080))  # not the dsr one
    rules = spec.rules()
    assert rules[0].startswith("ip daddr { 198.19.0.100, 198.19.0.101, 198.19.0.102 } counter drop")
    assert "ip daddr 198.18.0.3 udp dport 30000-39999 counter drop" in rules[1]
    assert rules[2].startswith("fib daddr type != local ip saddr . tcp sport { 198.18.1.11 . 80, 198.18.1.12 . 8080 }")


def test_the_script_replaces_the_table_in_one_transaction():
    script = guard_ruleset(GuardSpec(devices=("eth0", "eth1"), vips=("198.19.0.100",), owner='pid 7 "x"'))
    lines = script.splitlines()
    assert lines[:3] == [f"table netdev {GUARD_TABLE}", f"delete table netdev {GUARD_TABLE}",
                         f"table netdev {GUARD_TABLE} {{"]
    assert 'devices = { "eth0", "eth1" }' in script and "ip daddr 198.19.0.100 counter drop" in script
    assert table_comment(script) == "pid 7 'x'"


def test_install_replace_and_remove_touch_only_the_guard_table(caplog: pytest.LogCaptureFixture):
    nft = FakeNft()
    nft.present[("inet", "filter")] = "the user's own"
    guard = Guard(nft)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, "pktlb.guard")
    guard.install(GuardSpec(devices=("eth0",), vips=("198.19.0.100",)))
    guard.install(GuardSpec(devices=("eth0",), vips=("198.19.0.101",)))
    assert "guard: + ip daddr 198.19.0.101" in caplog.text and "guard: - ip daddr 198.19.0.100" in caplog.text
    assert guard.remove() and not guard.remove()
    assert nft.present == {("inet", "filter"): "the user's own"}


def test_a_table_left_by_a_killed_engine_is_removed_on_the_next_start(caplog: pytest.LogCaptureFixture):
    nft = FakeNft()
    Guard(nft).install(GuardSpec(devices=("eth0",), vips=("198.19.0.100",), owner="pktlb engine pid 4242"))  # type: ignore[arg-type]
    assert Guard(nft).clear_stale() == "pktlb engine pid 4242"  # type: ignore[arg-type]
    assert "left by a previous engine (pktlb engine pid 4242)" in caplog.text and not nft.present
    assert Guard(nft).clear_stale() is None  # type: ignore[arg-type]


def test_bad_specs_are_refused():
    guard = Guard(FakeNft())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one interface"):
        guard.install(GuardSpec(devices=()))
    with pytest.raises(ValueError, match="owns table"):
        guard.install(GuardSpec(devices=("eth0",), table="other"))
