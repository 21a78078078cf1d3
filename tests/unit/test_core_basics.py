"""Checksums (full and RFC 1624), the stable flow hash across processes, and config errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pktlb.core.checksum import checksum, delta16, delta32, update
from pktlb.core.config import ConfigError, parse_config
from pktlb.core.flowkey import flow_hash
from tests.frames import config_text


@given(st.binary(min_size=20, max_size=200), st.integers(0, 0xFFFF), st.integers(0, 9))
def test_incremental_update_matches_a_full_recompute(data, new_word, word_index):
    data = bytearray(data[: len(data) // 2 * 2])
    word_index = min(word_index, len(data) // 2 - 1)
    old = int.from_bytes(data[2 * word_index: 2 * word_index + 2], "big")
    before = checksum(data)
    data[2 * word_index: 2 * word_index + 2] = new_word.to_bytes(2, "big")
    after = checksum(data)
    got = update(before, delta16(old, new_word))
    # 0x0000 and 0xffff are the two representations of zero in one's complement
    assert got == after or {got, after} == {0, 0xFFFF}


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(min_size=8, max_size=64))
def test_address_delta_matches_a_full_recompute(old, new, rest):
    data = bytearray(old.to_bytes(4, "big") + rest[: len(rest) // 2 * 2])
    before = checksum(data)
    data[0:4] = new.to_bytes(4, "big")
    got, after = update(before, delta32(old, new)), checksum(data)
    assert got == after or {got, after} == {0, 0xFFFF}


def test_checksum_matches_scapy():
    from scapy.layers.inet import IP

    pkt = IP(bytes(IP(src="198.18.1.10", dst="198.19.0.100", ttl=9)))
    raw = bytearray(bytes(pkt)[:20])
    raw[10:12] = b"\0\0"
    assert checksum(raw) == pkt.chksum


def test_flow_hash_is_the_same_in_another_process():
    key = (6, 0xC6120A0A, 0xC6130064, 40000, 80)
    here = flow_hash(*key, seed=1234)
    code = f"from pktlb.core.flowkey import flow_hash; print(flow_hash(*{key!r}, seed=1234))"
    there = [int(subprocess.check_output([sys.executable, "-c", code], text=True, env={"PYTHONHASHSEED": str(s)}))
             for s in (1, 2)]
    assert there == [here, here]
    assert flow_hash(*key, seed=1235) != here


@pytest.mark.parametrize("bad, key, fragment", [
    ('vip = "1.2.3"', "service[0].vip", "an IPv4 address"),
    ('mode = "magic"', "service[0].mode", "one of nat, fullnat, tunnel, dsr"),
    ("port = 70000", "service[0].port", "an integer from 1 to 65535"),
    ("surprise = 1", "service[0].surprise", "one of the known keys"),
])
def test_config_errors_name_the_key_the_value_and_what_was_expected(bad, key, fragment):
    name = bad.split(" = ")[0]
    lines = [ln for ln in config_text("nat").splitlines() if not ln.startswith(name + " =")]
    text = "\n".join(lines).replace('name = "web"', f'name = "web"\n{bad}', 1)
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert err.value.key == key and fragment in str(err.value) and repr(err.value.value) in str(err.value)


def test_config_rejects_port_rewrite_in_dsr_and_missing_snat():
    with pytest.raises(ConfigError, match=r"service\[1\].backend\[0\].port"):
        parse_config(config_text("nat").replace('mode = "nat"', 'mode = "dsr"'))
    with pytest.raises(ConfigError, match=r"service\[0\].snat_address"):
        parse_config(config_text("nat").replace('mode = "nat"', 'mode = "fullnat"'))


def test_examples_all_load():
    from pathlib import Path

    from pktlb.adapters.configfile import load_config
    from pktlb.core.l7.plan import build_proxy_snapshot
    from pktlb.core.snapshot import build_snapshot

    paths = sorted(Path(__file__).parents[2].joinpath("examples").glob("*.toml"))
    assert {p.stem for p in paths} >= {"nat", "fullnat", "tunnel", "dsr"}
    for path in paths:  # something for the engine (pktlb run) or for the proxy (pktlb proxy) to serve
        config = load_config(str(path))
        assert build_snapshot(config).services or build_proxy_snapshot(config).services


def test_two_nat_services_cannot_share_a_backend_address_and_port():
    text = config_text("nat").replace('port = 53\nprotocol = "udp"', 'port = 8080\nprotocol = "tcp"')
    text = text.replace("port = 5353", "port = 80")
    with pytest.raises(ConfigError, match=r"service\[1\].backend\[0\].port"):
        parse_config(text)


@pytest.mark.parametrize("text, value", [("10.0.0.1", 0x0A000001), ("0.0.0.0", 0), ("255.255.255.255", 0xFFFFFFFF),
                                         ("198.19.0.100", 0xC6130064)])
def test_ip_to_int_reads_dotted_quads(text, value):
    from pktlb.core.packet.addr import int_to_ip, ip_to_int

    assert ip_to_int(text) == value and int_to_ip(value) == text


@pytest.mark.parametrize("text", ["010.0.0.1", "10.0.0.01", "10.0.0", "10.0.0.1.5", "256.0.0.1", "10.0.0.-1",
                                  " 10.0.0.1", "10.0.0.1/32", "0x0a.0.0.1", "", "١٠.0.0.1"])
def test_ip_to_int_refuses_what_is_not_plainly_an_address(text):
    """"010.0.0.1" is 8.0.0.1 to inet_aton (octal) and 10.0.0.1 to a naive parser: it is neither here."""
    from pktlb.core.packet.addr import ip_to_int

    with pytest.raises(ValueError, match="not an IPv4 address"):
        ip_to_int(text)
