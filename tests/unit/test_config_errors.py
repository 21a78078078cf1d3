"""Config errors name the key, the value and what was expected, for every section; nothing else escapes.

Complements ``test_core_basics`` (service keys): the [lb] and [flows] sections, backends, SNAT
ports, health settings, the service list, addresses that play two roles, broken TOML, and a
property test that puts values of every TOML type under every key.
"""

from __future__ import annotations

import copy
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pktlb.core.config import Config, ConfigError, config_from_dict, parse_config
from tests.frames import config_text

BASE = config_text("fullnat")


def error_for(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    return err.value


def edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def in_lb(line: str) -> str:
    return edit("[lb]\n", f"[lb]\n{line}\n")


def in_flows(line: str) -> str:
    return edit("[lb]\n", f"[flows]\n{line}\n[lb]\n")


def in_web(line: str) -> str:
    return edit('name = "web"\n', f'name = "web"\n{line}\n')


def in_first_backend(line: str) -> str:
    return edit('name = "be1"\n', f'name = "be1"\n{line}\n')


CASES = [
    (edit('address = "198.18.0.2"', 'address = "1.2.3.4.5"'), "lb.address", "1.2.3.4.5", "an IPv4 address"),
    (in_lb("hash_seed = -1"), "lb.hash_seed", -1, "an integer from 0 to 4294967295"),
    (in_lb("hash_seed = true"), "lb.hash_seed", True, "an integer from 0"),
    (in_lb("interface = 5"), "lb.interface", 5, "a string"),
    (in_lb('mac = "zz:00:00:00:00:00"'), "lb.mac", "zz:00:00:00:00:00", "a MAC address"),
    (edit('gateway = "198.18.0.1"', 'gateway = "gw"'), "lb.gateway", "gw", "an IPv4 address"),
    # Leading zeros: octal to some readers (010 = 8), decimal to others; the ipaddress module refuses them.
    (edit('address = "198.18.0.2"', 'address = "198.018.0.2"'), "lb.address", "198.018.0.2", "an IPv4 address"),
    (edit('vip = "198.19.0.100"', 'vip = "198.19.0.0100"'), "service[0].vip", "198.19.0.0100", "an IPv4 address"),
    (edit('address = "198.18.0.11"', 'address = "010.0.0.1"'), "service[0].backend[0].address", "010.0.0.1",
     "an IPv4 address"),
    (in_lb("surprise = 1"), "lb.surprise", 1, "one of the known keys"),
    (in_flows("max_entries = 0"), "flows.max_entries", 0, "an integer from 1 to 50000000"),
    (in_flows("tcp_timeout = -5"), "flows.tcp_timeout", -5, "a positive number of seconds"),
    (in_flows('udp_timeout = "10"'), "flows.udp_timeout", "10", "a positive number of seconds"),
    (edit("[lb]\n", "flows = 3\n[lb]\n"), "flows", 3, "a table"),
    (in_first_backend("weight = 2000"), "service[0].backend[0].weight", 2000, "an integer from 0 to 1000"),
    (in_first_backend('weight = 1.5'), "service[0].backend[0].weight", 1.5, "an integer from 0 to 1000"),
    (in_first_backend('mac = "02:00"'), "service[0].backend[0].mac", "02:00", "a MAC address"),
    (edit('address = "198.18.0.11"\nport = 80', 'address = "198.18.0.11"\nport = 0'),
     "service[0].backend[0].port", 0, "an integer from 1 to 65535"),
    (edit('address = "198.18.0.11"\n', ""), "service[0].backend[0].address", None, "(required)"),
    (edit('name = "be2"', 'name = "be1"'), "service[0].backend[1].name", "be1", "not used by another backend"),
    (edit('protocol = "udp"', 'protocol = "icmp"'), "service[1].protocol", "icmp", "one of tcp, udp"),
    (edit("snat_ports = [20000, 20003]", "snat_ports = [30000, 20000]"), "service[0].snat_ports", [30000, 20000],
     "a list [first, last]"),
    (edit("snat_ports = [20000, 20003]", 'snat_ports = "20000-30000"'), "service[0].snat_ports", "20000-30000",
     "a list [first, last]"),
    (edit("snat_ports = [20000, 20003]", "snat_ports = [true, 20003]"), "service[0].snat_ports", [True, 20003],
     "ports from 1024 to 65535"),
    (in_web("mtu = 100"), "service[0].mtu", 100, "an integer from 576 to 65535"),
    (edit('scheduler = "hash"', 'scheduler = "random"'), "service[0].scheduler", "random", "one of bw, hash"),
    (edit('on_backend_down = "reschedule"', 'on_backend_down = "ignore"'), "service[0].on_backend_down", "ignore",
     "one of reschedule, drop"),
    (in_web('health = { checks = ["ping"] }'), "service[0].health.checks[0]", "ping", "one of icmp, tcp, http"),
    (in_web('health = { checks = "icmp" }'), "service[0].health.checks", "icmp", "a list"),
    (in_web("health = { interval = 0 }"), "service[0].health.interval", 0, "a positive number of seconds"),
    (in_web("health = { rise = 0 }"), "service[0].health.rise", 0, "an integer from 1 to 100"),
    (in_web("health = { http_status = 99 }"), "service[0].health.http_status", 99, "an integer from 100 to 599"),
    (in_web('health = { encapsulated_icmp = "yes" }'), "service[0].health.encapsulated_icmp", "yes", "true or false"),
    (in_web("health = 3"), "service[0].health", 3, "a table"),
    (BASE[:BASE.index("[[service]]")], "service", None, "one or more [[service]] tables"),
    ("service = []\n" + BASE[:BASE.index("[[service]]")], "service", [], "one or more [[service]] tables"),
    (edit('port = 53\nprotocol = "udp"', 'port = 80\nprotocol = "tcp"'), "service[1].vip", "198.19.0.100",
     "not already used by service[0]"),
    (in_web("maglev_table_size = 1000").replace('scheduler = "hash"', 'scheduler = "maglev"', 1),
     "service[0].maglev_table_size", 1000, "a prime number"),
    (BASE + "\n[[[broken", "(file)", "", "valid TOML"),
]


@pytest.mark.parametrize("text, key, value, expected", CASES, ids=[c[1] + ":" + repr(c[2])[:20] for c in CASES])
def test_errors_name_key_value_and_expectation(text, key, value, expected):
    err = error_for(text)
    assert (err.key, err.value) == (key, value)
    assert expected in err.expected
    assert f"config error at {key}: got {value!r}, expected " in str(err)


@pytest.mark.parametrize("old, new, key, role", [
    ('vip = "198.19.0.100"', 'vip = "198.18.0.2"', "service[0].vip", "the LB's address (lb.address)"),
    ('vip = "198.19.0.100"', 'vip = "198.18.0.11"', "service[0].backend[0].address", "a VIP (service[0].vip)"),
    ('snat_address = "198.18.0.3"', 'snat_address = "198.19.0.100"', "service[0].snat_address",
     "a VIP (service[0].vip)"),
    ('snat_address = "198.18.0.3"', 'snat_address = "198.18.0.2"', "service[0].snat_address",
     "the LB's address (lb.address)"),
    ('snat_address = "198.18.0.3"', 'snat_address = "198.18.0.12"', "service[0].backend[1].address",
     "a SNAT address (service[0].snat_address)"),
    ('address = "198.18.0.11"', 'address = "198.18.0.2"', "service[0].backend[0].address",
     "the LB's address (lb.address)"),
])
def test_an_address_plays_one_role(old, new, key, role):
    """A VIP that is also a backend (or the LB) would make the engine forward to itself or drop replies as
    spoofed; the config refuses it and says which two keys collide."""
    err = error_for(BASE.replace(old, new))
    assert err.key == key and err.expected == f"an address that is not also {role}"


def test_shared_roles_are_fine():
    """The same backends behind two services, and one VIP and SNAT address for both, are the normal case."""
    config = parse_config(BASE)
    assert {s.vip for s in config.services} == {"198.19.0.100"}
    assert {s.snat_address for s in config.services} == {"198.18.0.3"}


# -- every key, every kind of value ----------------------------------------------------------------
BASE_DICT = tomllib.loads(BASE)
KEY_PATHS = [("lb", k) for k in ("interface", "address", "mac", "gateway", "gateway_mac", "control_socket",
                                 "hash_seed", "capture_dir")]
KEY_PATHS += [("flows", k) for k in ("max_entries", "syn_timeout", "tcp_timeout", "fin_timeout", "udp_timeout")]
KEY_PATHS += [("service", 0, k) for k in ("name", "vip", "port", "protocol", "mode", "scheduler", "maglev_table_size",
                                          "mtu", "snat_address", "snat_ports", "on_backend_down", "health",
                                          "backend")]
KEY_PATHS += [("service", 0, "backend", 1, k) for k in ("name", "address", "port", "weight", "mac")]
KEY_PATHS += [("service", 1, "health", k) for k in ("checks", "interval", "timeout", "rise", "fall", "http_path",
                                                    "http_status", "http_body", "encapsulated_icmp")]
toml_values = st.recursive(
    st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=20), st.booleans(),
              st.sampled_from(["198.18.0.11", "198.19.0.100", "02:00:c6:12:00:0b", "tcp", "maglev", "icmp", ""])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KEY_PATHS), toml_values)
def test_any_value_under_any_key_gives_a_config_or_a_config_error(path, value):
    data = copy.deepcopy(BASE_DICT)
    data.setdefault("flows", {})
    data["service"][1].setdefault("health", {})
    target = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    try:
        config = config_from_dict(data)
    except ConfigError as err:
        assert err.key and "config error at " in str(err) and repr(err.value)[:40] in str(err)
        return
    assert isinstance(config, Config)
