"""Where `pktlb dashboard` may listen: loopback and lab addresses only, never all interfaces."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pktlb.cli import main
from pktlb.daemon.dashboard.listen import DEFAULT_PORT, ListenRefused, parse_listen, url_for


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:9180", ("127.0.0.1", 9180)),
    ("127.0.0.2:80", ("127.0.0.2", 80)),
    ("localhost:8080", ("127.0.0.1", 8080)),
    ("[::1]:9180", ("::1", 9180)),
    ("[::1]", ("::1", DEFAULT_PORT)),
    ("127.0.0.1", ("127.0.0.1", DEFAULT_PORT)),
    ("198.18.1.10:9180", ("198.18.1.10", 9180)),
    ("198.19.255.1:0", ("198.19.255.1", 0)),
    ("[2001:2::10]:9180", ("2001:2::10", 9180)),
])
def test_loopback_and_lab_addresses_are_accepted(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text, why", [
    ("0.0.0.0:9180", "every interface"),
    ("[::]:9180", "every interface"),
    (":9180", "all interfaces"),
    ("10.0.0.1:9180", "neither loopback nor a lab address"),
    ("192.168.1.5:9180", "neither loopback nor a lab address"),
    ("198.20.0.1:9180", "neither loopback nor a lab address"),  # just past 198.18.0.0/15
    ("8.8.8.8:80", "neither loopback nor a lab address"),
    ("[2001:3::1]:80", "neither loopback nor a lab address"),
    ("[fe80::1]:80", "neither loopback nor a lab address"),
    ("example.com:80", "not a host name"),
    ("127.0.0.1:70000", "outside 0-65535"),
    ("127.0.0.1:http", "not a number"),
    ("::1:9180", "brackets"),
])
def test_other_addresses_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(ListenRefused, match=why):
        parse_listen(text)


def test_urls_bracket_ipv6() -> None:
    assert url_for("::1", 9180) == "http://[::1]:9180/"
    assert url_for("198.18.1.10", 80) == "http://198.18.1.10:80/"


@pytest.mark.parametrize("listen", ["0.0.0.0:9180", "[::]:9180", "10.1.2.3:9180"])
def test_the_cli_refuses_before_listening(listen: str, tmp_path) -> None:
    result = CliRunner().invoke(main, ["dashboard", "-s", str(tmp_path / "none.sock"), "--listen", listen])
    assert result.exit_code != 0
    assert "--listen address" in result.output and "198.18.0.0/15" in result.output


def test_the_cli_names_a_bad_lab_prefix() -> None:
    result = CliRunner().invoke(main, ["dashboard", "--lab", "../etc", "--json"])
    assert result.exit_code != 0 and "--lab '../etc'" in result.output
